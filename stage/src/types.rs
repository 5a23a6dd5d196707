//! The MariaDB-to-Arrow type mapping, both ways.
//!
//! Every stored column has a [`ColumnKind`], decided from
//! `information_schema.COLUMNS`. The kind fixes the Arrow type of the
//! Parquet column, how a value read over the binary protocol becomes an
//! Arrow value ([`BatchBuilder`]), and how an Arrow value becomes the text
//! `LOAD DATA ... CHARACTER SET binary` reads back ([`TextEncoder`]).
//!
//! Natural Arrow types are used where they are lossless. Values a natural
//! type cannot hold (zero and part-zero dates such as `0000-00-00` or
//! `2024-00-15`) are stored as NULL in the natural column and verbatim in a
//! sidecar `Utf8` column named `<column>#raw`, whose field metadata
//! `replseed.raw_of` names the column it completes. A reader takes the raw
//! value whenever it is not NULL. `docs/FORMAT.md` has the full table.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, Date32Array, Date32Builder, Decimal128Array,
    Decimal128Builder, Decimal256Array, Decimal256Builder, DurationMicrosecondArray,
    DurationMicrosecondBuilder, Float32Array, Float32Builder, Float64Array, Float64Builder,
    Int16Array, Int16Builder, Int32Array, Int32Builder, Int64Array, Int64Builder, Int8Array,
    Int8Builder, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder, UInt16Array, UInt16Builder, UInt32Array, UInt32Builder,
    UInt64Array, UInt64Builder, UInt8Array, UInt8Builder,
};
use arrow::datatypes::{i256, DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use mysql_async::Value;
use serde::{Deserialize, Serialize};

/// Field-metadata key: the verbatim `COLUMN_TYPE` (e.g. `decimal(65,30) unsigned`).
pub const META_COLUMN_TYPE: &str = "mysql.column_type";
/// Field-metadata key: the character set of a text column.
pub const META_CHARSET: &str = "mysql.charset";
/// Field-metadata key: the collation of a text column.
pub const META_COLLATION: &str = "mysql.collation";
/// Field-metadata key: replseed's [`ColumnKind`] name.
pub const META_KIND: &str = "replseed.kind";
/// Field-metadata key on a sidecar column: the column it completes.
pub const META_RAW_OF: &str = "replseed.raw_of";

/// How a MariaDB column is stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnKind {
    /// TINYINT..BIGINT (MEDIUMINT is 24 bits, stored in 32).
    Int {
        /// 8, 16, 24, 32 or 64.
        bits: u8,
        /// UNSIGNED.
        unsigned: bool,
    },
    /// DECIMAL(p,s): Decimal128 up to 38 digits, Decimal256 above.
    Decimal {
        /// Precision.
        precision: u8,
        /// Scale.
        scale: u8,
    },
    /// FLOAT, bit-exact in Float32.
    Float,
    /// DOUBLE, bit-exact in Float64.
    Double,
    /// BIT(n), as UInt64.
    Bit {
        /// n.
        width: u8,
    },
    /// YEAR, as UInt16 (0 is the year 0000).
    Year,
    /// DATE, as Date32 (+ raw sidecar).
    Date,
    /// DATETIME(fsp), as Timestamp(µs) without zone (+ raw sidecar).
    DateTime,
    /// TIMESTAMP(fsp), as Timestamp(µs, "+00:00") (+ raw sidecar).
    Timestamp,
    /// TIME(fsp), as Duration(µs): negative and beyond 24 h fit.
    Time,
    /// CHAR/VARCHAR/TEXT in utf8mb3/utf8mb4/ascii: Utf8.
    Utf8Text,
    /// CHAR/VARCHAR/TEXT in any other character set: Binary, bytes in the
    /// column's own character set (named in the field metadata).
    OtherText,
    /// BINARY/VARBINARY/BLOB: Binary.
    Binary,
    /// JSON (MariaDB's LONGTEXT with `json_valid`): Utf8, text verbatim.
    Json,
    /// ENUM: the label, Utf8 (or Binary in a non-UTF-8 character set).
    Enum,
    /// SET: comma-separated labels, like ENUM.
    Set,
    /// GEOMETRY and its subtypes: Binary, MariaDB's internal format
    /// (4-byte little-endian SRID followed by WKB).
    Geometry,
    /// INET4: canonical text, Utf8.
    Inet4,
    /// INET6: canonical text, Utf8.
    Inet6,
    /// UUID: canonical text, Utf8.
    Uuid,
}

/// One stored column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnSpec {
    /// Column name (for implicit system-versioning columns, `ROW_START`/`ROW_END`).
    pub name: String,
    /// `COLUMN_TYPE`, verbatim.
    pub column_type: String,
    /// `DATA_TYPE`.
    pub data_type: String,
    /// Character set, for text types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<String>,
    /// Collation, for text types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<String>,
    /// NULL allowed.
    pub nullable: bool,
    /// INVISIBLE column (listed explicitly on read and load).
    #[serde(default)]
    pub invisible: bool,
    /// Storage kind.
    #[serde(flatten)]
    pub kind: ColumnKind,
    /// Name of the raw sidecar Parquet column, if this kind has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_column: Option<String>,
}

/// Why a column cannot be stored.
#[derive(Debug, thiserror::Error)]
#[error("unsupported column type `{column_type}` (DATA_TYPE {data_type})")]
pub struct UnsupportedType {
    /// COLUMN_TYPE.
    pub column_type: String,
    /// DATA_TYPE.
    pub data_type: String,
}

fn is_utf8_charset(cs: Option<&str>) -> bool {
    matches!(cs, Some("utf8mb4" | "utf8mb3" | "utf8" | "ascii"))
}

impl ColumnKind {
    /// Decides the kind from `information_schema.COLUMNS` fields.
    pub fn classify(
        data_type: &str,
        column_type: &str,
        charset: Option<&str>,
        numeric_precision: Option<u64>,
        numeric_scale: Option<u64>,
        is_json: bool,
    ) -> Result<ColumnKind, UnsupportedType> {
        let unsigned = column_type.contains("unsigned");
        let dt = data_type.to_ascii_lowercase();
        let kind = match dt.as_str() {
            "tinyint" => ColumnKind::Int { bits: 8, unsigned },
            "smallint" => ColumnKind::Int { bits: 16, unsigned },
            "mediumint" => ColumnKind::Int { bits: 24, unsigned },
            "int" | "integer" => ColumnKind::Int { bits: 32, unsigned },
            "bigint" => ColumnKind::Int { bits: 64, unsigned },
            "decimal" | "numeric" => ColumnKind::Decimal {
                precision: numeric_precision.unwrap_or(10) as u8,
                scale: numeric_scale.unwrap_or(0) as u8,
            },
            "float" => ColumnKind::Float,
            "double" | "real" | "double precision" => ColumnKind::Double,
            "bit" => ColumnKind::Bit {
                width: numeric_precision.unwrap_or(1) as u8,
            },
            "year" => ColumnKind::Year,
            "date" => ColumnKind::Date,
            "datetime" => ColumnKind::DateTime,
            "timestamp" => ColumnKind::Timestamp,
            "time" => ColumnKind::Time,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
                if is_json {
                    ColumnKind::Json
                } else if charset.is_none() || charset == Some("binary") {
                    ColumnKind::Binary
                } else if is_utf8_charset(charset) {
                    ColumnKind::Utf8Text
                } else {
                    ColumnKind::OtherText
                }
            }
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                ColumnKind::Binary
            }
            "json" => ColumnKind::Json,
            "enum" => ColumnKind::Enum,
            "set" => ColumnKind::Set,
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
            | "multipolygon" | "geometrycollection" => ColumnKind::Geometry,
            "inet4" => ColumnKind::Inet4,
            "inet6" => ColumnKind::Inet6,
            "uuid" => ColumnKind::Uuid,
            _ => {
                return Err(UnsupportedType {
                    column_type: column_type.to_string(),
                    data_type: data_type.to_string(),
                })
            }
        };
        Ok(kind)
    }

    /// Short name, stored in the field metadata.
    pub fn name(&self) -> &'static str {
        match self {
            ColumnKind::Int { .. } => "int",
            ColumnKind::Decimal { .. } => "decimal",
            ColumnKind::Float => "float",
            ColumnKind::Double => "double",
            ColumnKind::Bit { .. } => "bit",
            ColumnKind::Year => "year",
            ColumnKind::Date => "date",
            ColumnKind::DateTime => "datetime",
            ColumnKind::Timestamp => "timestamp",
            ColumnKind::Time => "time",
            ColumnKind::Utf8Text => "utf8_text",
            ColumnKind::OtherText => "other_text",
            ColumnKind::Binary => "binary",
            ColumnKind::Json => "json",
            ColumnKind::Enum => "enum",
            ColumnKind::Set => "set",
            ColumnKind::Geometry => "geometry",
            ColumnKind::Inet4 => "inet4",
            ColumnKind::Inet6 => "inet6",
            ColumnKind::Uuid => "uuid",
        }
    }

    /// Whether the loader must read this kind's text through a conversion:
    /// under `LOAD DATA ... CHARACTER SET binary`, INET4, INET6 and UUID take
    /// the field as their binary form, so the text is converted to a
    /// character string first (`SET col = CONVERT(@v USING utf8mb4)`).
    pub fn loads_through_text(&self) -> bool {
        matches!(
            self,
            ColumnKind::Inet4 | ColumnKind::Inet6 | ColumnKind::Uuid
        )
    }

    /// Whether values of this kind may need the raw sidecar column.
    pub fn has_raw_sidecar(&self) -> bool {
        matches!(
            self,
            ColumnKind::Date | ColumnKind::DateTime | ColumnKind::Timestamp
        )
    }
}

impl ColumnSpec {
    /// The Arrow type of the natural column.
    pub fn arrow_type(&self) -> DataType {
        let utf8_labels = is_utf8_charset(self.charset.as_deref());
        match self.kind {
            ColumnKind::Int { bits, unsigned } => match (bits, unsigned) {
                (8, false) => DataType::Int8,
                (16, false) => DataType::Int16,
                (24 | 32, false) => DataType::Int32,
                (_, false) => DataType::Int64,
                (8, true) => DataType::UInt8,
                (16, true) => DataType::UInt16,
                (24 | 32, true) => DataType::UInt32,
                (_, true) => DataType::UInt64,
            },
            ColumnKind::Decimal { precision, scale } => {
                if precision <= 38 {
                    DataType::Decimal128(precision, scale as i8)
                } else {
                    DataType::Decimal256(precision, scale as i8)
                }
            }
            ColumnKind::Float => DataType::Float32,
            ColumnKind::Double => DataType::Float64,
            ColumnKind::Bit { .. } => DataType::UInt64,
            ColumnKind::Year => DataType::UInt16,
            ColumnKind::Date => DataType::Date32,
            ColumnKind::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnKind::Timestamp => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
            }
            ColumnKind::Time => DataType::Duration(TimeUnit::Microsecond),
            ColumnKind::Utf8Text | ColumnKind::Json => DataType::Utf8,
            ColumnKind::Enum | ColumnKind::Set => {
                if utf8_labels {
                    DataType::Utf8
                } else {
                    DataType::Binary
                }
            }
            ColumnKind::Inet4 | ColumnKind::Inet6 | ColumnKind::Uuid => DataType::Utf8,
            ColumnKind::OtherText | ColumnKind::Binary | ColumnKind::Geometry => DataType::Binary,
        }
    }

    /// The Arrow field of the natural column, with the MariaDB type in its metadata.
    pub fn arrow_field(&self) -> Field {
        let mut md = HashMap::new();
        md.insert(META_COLUMN_TYPE.to_string(), self.column_type.clone());
        md.insert(META_KIND.to_string(), self.kind.name().to_string());
        if let Some(cs) = &self.charset {
            md.insert(META_CHARSET.to_string(), cs.clone());
        }
        if let Some(c) = &self.collation {
            md.insert(META_COLLATION.to_string(), c.clone());
        }
        // Natural columns are nullable even for NOT NULL columns: a zero date
        // is NULL here and lives in the sidecar.
        let nullable = self.nullable || self.raw_column.is_some();
        Field::new(&self.name, self.arrow_type(), nullable).with_metadata(md)
    }
}

/// Assigns sidecar names to the columns that need one (`<name>#raw`,
/// with extra `#` while the name collides with another column).
pub fn assign_raw_columns(columns: &mut [ColumnSpec]) {
    let mut taken: std::collections::HashSet<String> =
        columns.iter().map(|c| c.name.to_lowercase()).collect();
    for c in columns.iter_mut() {
        if c.kind.has_raw_sidecar() {
            let mut name = format!("{}#raw", c.name);
            while taken.contains(&name.to_lowercase()) {
                name.insert(0, '#');
            }
            taken.insert(name.to_lowercase());
            c.raw_column = Some(name);
        }
    }
}

/// The Arrow schema of a chunk: the natural columns in order, then the sidecars.
pub fn arrow_schema(columns: &[ColumnSpec]) -> SchemaRef {
    let mut fields: Vec<Field> = columns.iter().map(|c| c.arrow_field()).collect();
    for c in columns {
        if let Some(raw) = &c.raw_column {
            let md = HashMap::from([(META_RAW_OF.to_string(), c.name.clone())]);
            fields.push(Field::new(raw, DataType::Utf8, true).with_metadata(md));
        }
    }
    Arc::new(Schema::new(fields))
}

// ---------------------------------------------------------------------------
// Calendar helpers (proleptic Gregorian, as Arrow's Date32 and Timestamp).

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Civil date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 => {
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                29
            } else {
                28
            }
        }
        _ => 0,
    }
}

/// Whether a MariaDB date is a real calendar date (not zero, not part-zero).
pub fn is_calendar_date(y: u16, m: u8, d: u8) -> bool {
    (1..=12).contains(&m) && d >= 1 && d as u32 <= days_in_month(y as i64, m as u32)
}

fn push_2(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

fn push_date(out: &mut Vec<u8>, y: u32, m: u32, d: u32) {
    push_2(out, y / 100);
    push_2(out, y % 100);
    out.push(b'-');
    push_2(out, m);
    out.push(b'-');
    push_2(out, d);
}

fn push_hms_us(out: &mut Vec<u8>, h: u32, mi: u32, s: u32, us: u32) {
    push_2(out, h);
    out.push(b':');
    push_2(out, mi);
    out.push(b':');
    push_2(out, s);
    out.push(b'.');
    let mut buf = [b'0'; 6];
    let mut v = us;
    for i in (0..6).rev() {
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf);
}

/// Text of a MariaDB DATE/DATETIME value from its fields, as MariaDB reads it back.
pub fn datetime_text(v: &Value, with_time: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(26);
    if let Value::Date(y, m, d, h, mi, s, us) = *v {
        push_date(&mut out, y as u32, m as u32, d as u32);
        if with_time {
            out.push(b' ');
            push_hms_us(&mut out, h as u32, mi as u32, s as u32, us);
        }
    }
    out
}

fn micros_to_datetime(out: &mut Vec<u8>, micros: i64) {
    let days = micros.div_euclid(86_400_000_000);
    let rem = micros.rem_euclid(86_400_000_000);
    let (y, m, d) = civil_from_days(days);
    push_date(out, y as u32, m, d);
    out.push(b' ');
    let secs = (rem / 1_000_000) as u32;
    push_hms_us(
        out,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        (rem % 1_000_000) as u32,
    );
}

// ---------------------------------------------------------------------------
// Value -> Arrow

/// Why a value could not be converted.
#[derive(Debug, thiserror::Error)]
#[error("column `{column}`: {message}")]
pub struct ValueError {
    /// Column name.
    pub column: String,
    /// What was wrong.
    pub message: String,
}

enum Builder {
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    D128(Decimal128Builder),
    D256(Decimal256Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Dur(DurationMicrosecondBuilder),
    Str(StringBuilder),
    Bin(BinaryBuilder),
}

/// Accumulates rows read from MariaDB into an Arrow [`RecordBatch`].
pub struct BatchBuilder {
    columns: Vec<ColumnSpec>,
    schema: SchemaRef,
    builders: Vec<Builder>,
    raws: Vec<Option<StringBuilder>>,
    rows: usize,
    bytes: usize,
}

impl std::fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("columns", &self.columns.len())
            .field("rows", &self.rows)
            .finish()
    }
}

fn int_of(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(*i as i128),
        Value::UInt(u) => Some(*u as i128),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse::<i128>().ok(),
        _ => None,
    }
}

/// Parses MariaDB's decimal text (`-123.4500`) into an unscaled integer string
/// with exactly `scale` fraction digits.
fn decimal_digits(text: &[u8], scale: u8) -> Option<String> {
    let s = std::str::from_utf8(text).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.len() > scale as usize {
        return None;
    }
    let mut digits = String::with_capacity(int.len() + scale as usize + 1);
    if neg {
        digits.push('-');
    }
    digits.push_str(if int.is_empty() { "0" } else { int });
    digits.push_str(frac);
    for _ in frac.len()..scale as usize {
        digits.push('0');
    }
    Some(digits)
}

impl BatchBuilder {
    /// A builder for the given stored columns.
    pub fn new(columns: &[ColumnSpec]) -> BatchBuilder {
        let schema = arrow_schema(columns);
        let builders = columns
            .iter()
            .map(|c| match c.arrow_type() {
                DataType::Int8 => Builder::I8(Int8Builder::new()),
                DataType::Int16 => Builder::I16(Int16Builder::new()),
                DataType::Int32 => Builder::I32(Int32Builder::new()),
                DataType::Int64 => Builder::I64(Int64Builder::new()),
                DataType::UInt8 => Builder::U8(UInt8Builder::new()),
                DataType::UInt16 => Builder::U16(UInt16Builder::new()),
                DataType::UInt32 => Builder::U32(UInt32Builder::new()),
                DataType::UInt64 => Builder::U64(UInt64Builder::new()),
                DataType::Decimal128(p, s) => Builder::D128(
                    Decimal128Builder::new()
                        .with_precision_and_scale(p, s)
                        .expect("valid decimal128"),
                ),
                DataType::Decimal256(p, s) => Builder::D256(
                    Decimal256Builder::new()
                        .with_precision_and_scale(p, s)
                        .expect("valid decimal256"),
                ),
                DataType::Float32 => Builder::F32(Float32Builder::new()),
                DataType::Float64 => Builder::F64(Float64Builder::new()),
                DataType::Date32 => Builder::Date(Date32Builder::new()),
                DataType::Timestamp(_, tz) => {
                    Builder::Ts(TimestampMicrosecondBuilder::new().with_timezone_opt(tz))
                }
                DataType::Duration(_) => Builder::Dur(DurationMicrosecondBuilder::new()),
                DataType::Utf8 => Builder::Str(StringBuilder::new()),
                _ => Builder::Bin(BinaryBuilder::new()),
            })
            .collect();
        let raws = columns
            .iter()
            .map(|c| c.raw_column.as_ref().map(|_| StringBuilder::new()))
            .collect();
        BatchBuilder {
            columns: columns.to_vec(),
            schema,
            builders,
            raws,
            rows: 0,
            bytes: 0,
        }
    }

    /// Rows accumulated since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no rows are accumulated.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Approximate bytes of accumulated values.
    pub fn byte_size(&self) -> usize {
        self.bytes
    }

    /// The schema of the batches.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Appends one row; `values` are in stored-column order.
    pub fn push_row(&mut self, values: Vec<Value>) -> Result<(), ValueError> {
        for (i, v) in values.into_iter().enumerate() {
            self.push_value(i, v)?;
        }
        self.rows += 1;
        Ok(())
    }

    fn err(&self, i: usize, v: &Value, what: &str) -> ValueError {
        ValueError {
            column: self.columns[i].name.clone(),
            message: format!("{what}: got {v:?}"),
        }
    }

    fn push_value(&mut self, i: usize, v: Value) -> Result<(), ValueError> {
        let kind = self.columns[i].kind;
        if let Value::NULL = v {
            self.append_null(i);
            if let Some(r) = self.raws[i].as_mut() {
                r.append_null();
            }
            return Ok(());
        }
        self.bytes += 8;
        let mut raw: Option<Vec<u8>> = None;
        match (&mut self.builders[i], kind) {
            (Builder::I8(b), _) => match int_of(&v).and_then(|x| i8::try_from(x).ok()) {
                Some(x) => b.append_value(x),
                None => return Err(self.err(i, &v, "not a TINYINT")),
            },
            (Builder::I16(b), _) => match int_of(&v).and_then(|x| i16::try_from(x).ok()) {
                Some(x) => b.append_value(x),
                None => return Err(self.err(i, &v, "not a SMALLINT")),
            },
            (Builder::I32(b), _) => match int_of(&v).and_then(|x| i32::try_from(x).ok()) {
                Some(x) => b.append_value(x),
                None => return Err(self.err(i, &v, "not an INT")),
            },
            (Builder::I64(b), _) => match int_of(&v).and_then(|x| i64::try_from(x).ok()) {
                Some(x) => b.append_value(x),
                None => return Err(self.err(i, &v, "not a BIGINT")),
            },
            (Builder::U8(b), _) => match int_of(&v).and_then(|x| u8::try_from(x).ok()) {
                Some(x) => b.append_value(x),
                None => return Err(self.err(i, &v, "not a TINYINT UNSIGNED")),
            },
            (Builder::U16(b), ColumnKind::Year) => {
                match int_of(&v).and_then(|x| u16::try_from(x).ok()) {
                    Some(x) => b.append_value(x),
                    None => return Err(self.err(i, &v, "not a YEAR")),
                }
            }
            (Builder::U16(b), _) => match int_of(&v).and_then(|x| u16::try_from(x).ok()) {
                Some(x) => b.append_value(x),
                None => return Err(self.err(i, &v, "not a SMALLINT UNSIGNED")),
            },
            (Builder::U32(b), _) => match int_of(&v).and_then(|x| u32::try_from(x).ok()) {
                Some(x) => b.append_value(x),
                None => return Err(self.err(i, &v, "not an INT UNSIGNED")),
            },
            (Builder::U64(b), ColumnKind::Bit { .. }) => match &v {
                Value::Bytes(bytes) if bytes.len() <= 8 => {
                    let x = bytes.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
                    b.append_value(x)
                }
                Value::Int(x) => b.append_value(*x as u64),
                Value::UInt(x) => b.append_value(*x),
                _ => return Err(self.err(i, &v, "not a BIT value")),
            },
            (Builder::U64(b), _) => match int_of(&v).and_then(|x| u64::try_from(x).ok()) {
                Some(x) => b.append_value(x),
                None => return Err(self.err(i, &v, "not a BIGINT UNSIGNED")),
            },
            (Builder::D128(b), ColumnKind::Decimal { scale, .. }) => {
                let parsed = match &v {
                    Value::Bytes(t) => {
                        decimal_digits(t, scale).and_then(|d| d.parse::<i128>().ok())
                    }
                    _ => None,
                };
                match parsed {
                    Some(x) => b.append_value(x),
                    None => return Err(self.err(i, &v, "not a DECIMAL")),
                }
            }
            (Builder::D256(b), ColumnKind::Decimal { scale, .. }) => {
                let parsed = match &v {
                    Value::Bytes(t) => decimal_digits(t, scale).and_then(|d| i256::from_string(&d)),
                    _ => None,
                };
                match parsed {
                    Some(x) => b.append_value(x),
                    None => return Err(self.err(i, &v, "not a DECIMAL")),
                }
            }
            (Builder::F32(b), _) => match v {
                Value::Float(x) => b.append_value(x),
                Value::Double(x) => b.append_value(x as f32),
                _ => return Err(self.err(i, &v, "not a FLOAT")),
            },
            (Builder::F64(b), _) => match v {
                Value::Double(x) => b.append_value(x),
                Value::Float(x) => b.append_value(x as f64),
                _ => return Err(self.err(i, &v, "not a DOUBLE")),
            },
            (Builder::Date(b), _) => match v {
                Value::Date(y, m, d, ..) if is_calendar_date(y, m, d) => {
                    b.append_value(days_from_civil(y as i64, m as u32, d as u32) as i32)
                }
                Value::Date(..) => {
                    b.append_null();
                    raw = Some(datetime_text(&v, false));
                }
                _ => return Err(self.err(i, &v, "not a DATE")),
            },
            (Builder::Ts(b), _) => match v {
                Value::Date(y, m, d, h, mi, s, us) if is_calendar_date(y, m, d) => {
                    let days = days_from_civil(y as i64, m as u32, d as u32);
                    let secs = days * 86_400 + h as i64 * 3600 + mi as i64 * 60 + s as i64;
                    b.append_value(secs * 1_000_000 + us as i64)
                }
                Value::Date(..) => {
                    b.append_null();
                    raw = Some(datetime_text(&v, true));
                }
                _ => return Err(self.err(i, &v, "not a DATETIME/TIMESTAMP")),
            },
            (Builder::Dur(b), _) => match v {
                Value::Time(neg, days, h, mi, s, us) => {
                    let secs = (days as i64 * 24 + h as i64) * 3600 + mi as i64 * 60 + s as i64;
                    let micros = secs * 1_000_000 + us as i64;
                    b.append_value(if neg { -micros } else { micros })
                }
                _ => return Err(self.err(i, &v, "not a TIME")),
            },
            (Builder::Str(b), _) => match v {
                Value::Bytes(bytes) => {
                    self.bytes += bytes.len();
                    match String::from_utf8(bytes) {
                        Ok(s) => b.append_value(s),
                        Err(e) => {
                            let v = Value::Bytes(e.into_bytes());
                            return Err(self.err(i, &v, "text is not valid UTF-8"));
                        }
                    }
                }
                _ => return Err(self.err(i, &v, "not text")),
            },
            (Builder::Bin(b), _) => match v {
                Value::Bytes(bytes) => {
                    self.bytes += bytes.len();
                    b.append_value(bytes)
                }
                _ => return Err(self.err(i, &v, "not bytes")),
            },
            (_, _) => return Err(self.err(i, &v, "internal: builder/kind mismatch")),
        }
        if let Some(r) = self.raws[i].as_mut() {
            match raw {
                Some(text) => {
                    r.append_value(String::from_utf8(text).expect("ascii"));
                }
                None => r.append_null(),
            }
        }
        Ok(())
    }

    fn append_null(&mut self, i: usize) {
        match &mut self.builders[i] {
            Builder::I8(b) => b.append_null(),
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::U8(b) => b.append_null(),
            Builder::U16(b) => b.append_null(),
            Builder::U32(b) => b.append_null(),
            Builder::U64(b) => b.append_null(),
            Builder::D128(b) => b.append_null(),
            Builder::D256(b) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Ts(b) => b.append_null(),
            Builder::Dur(b) => b.append_null(),
            Builder::Str(b) => b.append_null(),
            Builder::Bin(b) => b.append_null(),
        }
    }

    /// Takes the accumulated rows as a batch and starts over.
    pub fn finish(&mut self) -> RecordBatch {
        let mut arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::I8(b) => Arc::new(b.finish()),
                    Builder::I16(b) => Arc::new(b.finish()),
                    Builder::I32(b) => Arc::new(b.finish()),
                    Builder::I64(b) => Arc::new(b.finish()),
                    Builder::U8(b) => Arc::new(b.finish()),
                    Builder::U16(b) => Arc::new(b.finish()),
                    Builder::U32(b) => Arc::new(b.finish()),
                    Builder::U64(b) => Arc::new(b.finish()),
                    Builder::D128(b) => Arc::new(b.finish()),
                    Builder::D256(b) => Arc::new(b.finish()),
                    Builder::F32(b) => Arc::new(b.finish()),
                    Builder::F64(b) => Arc::new(b.finish()),
                    Builder::Date(b) => Arc::new(b.finish()),
                    Builder::Ts(b) => Arc::new(b.finish()),
                    Builder::Dur(b) => Arc::new(b.finish()),
                    Builder::Str(b) => Arc::new(b.finish()),
                    Builder::Bin(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        for r in self.raws.iter_mut().flatten() {
            arrays.push(Arc::new(r.finish()));
        }
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), arrays).expect("arrays match the schema")
    }
}

// ---------------------------------------------------------------------------
// Arrow -> LOAD DATA text

/// How one natural column is read back from a batch.
#[derive(Debug, Clone)]
struct ColumnPlan {
    kind: ColumnKind,
    index: usize,
    raw_index: Option<usize>,
}

/// Error reading a chunk that does not match its manifest.
#[derive(Debug, thiserror::Error)]
#[error("chunk schema does not match the manifest: {0}")]
pub struct SchemaMismatch(pub String);

/// Encodes Arrow batches as the tab-separated text that
/// `LOAD DATA LOCAL INFILE ... CHARACTER SET binary FIELDS TERMINATED BY '\t'
/// ESCAPED BY '\\' LINES TERMINATED BY '\n'` reads back into the same values.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    plans: Vec<ColumnPlan>,
}

/// Appends `bytes` with LOAD DATA escaping (`\0 \t \n \\`).
pub fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    // Most values need no escaping: check without branching per byte (the
    // compiler vectorizes this), then copy in one go.
    let special = bytes.iter().fold(false, |acc, &b| {
        acc | (b == 0) | (b == b'\t') | (b == b'\n') | (b == b'\\')
    });
    if !special {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = match b {
            0 => b'0',
            b'\t' => b't',
            b'\n' => b'n',
            b'\\' => b'\\',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.push(b'\\');
        out.push(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

fn push_int<T: itoa::Integer>(out: &mut Vec<u8>, v: T) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(v).as_bytes());
}

/// Exact text for a double: shortest round-trip digits, in exponent form.
pub fn push_f64(out: &mut Vec<u8>, v: f64) {
    use std::io::Write;
    let _ = write!(out, "{v:e}");
}

impl TextEncoder {
    /// Plans the encoding of `columns` from batches with `schema`.
    pub fn new(columns: &[ColumnSpec], schema: &Schema) -> Result<TextEncoder, SchemaMismatch> {
        let mut plans = Vec::with_capacity(columns.len());
        for c in columns {
            let index = schema
                .index_of(&c.name)
                .map_err(|_| SchemaMismatch(format!("column `{}` missing", c.name)))?;
            let field = schema.field(index);
            if field.data_type() != &c.arrow_type() {
                return Err(SchemaMismatch(format!(
                    "column `{}` is {} in the chunk, expected {}",
                    c.name,
                    field.data_type(),
                    c.arrow_type()
                )));
            }
            let raw_index = match &c.raw_column {
                Some(r) => Some(
                    schema
                        .index_of(r)
                        .map_err(|_| SchemaMismatch(format!("sidecar `{r}` missing")))?,
                ),
                None => None,
            };
            plans.push(ColumnPlan {
                kind: c.kind,
                index,
                raw_index,
            });
        }
        Ok(TextEncoder { plans })
    }

    /// Number of columns encoded.
    pub fn len(&self) -> usize {
        self.plans.len()
    }

    /// Whether no column is encoded.
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    /// Appends rows `[from, to)` of `batch` to `out`, one line per row.
    pub fn encode_rows(&self, batch: &RecordBatch, from: usize, to: usize, out: &mut Vec<u8>) {
        let cols: Vec<&ArrayRef> = self.plans.iter().map(|p| batch.column(p.index)).collect();
        let raws: Vec<Option<&StringArray>> = self
            .plans
            .iter()
            .map(|p| {
                p.raw_index.map(|r| {
                    batch
                        .column(r)
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .expect("utf8")
                })
            })
            .collect();
        for row in from..to {
            for (ci, plan) in self.plans.iter().enumerate() {
                if ci > 0 {
                    out.push(b'\t');
                }
                let arr = cols[ci];
                if arr.is_null(row) {
                    match raws[ci] {
                        Some(r) if !r.is_null(row) => {
                            out.extend_from_slice(r.value(row).as_bytes())
                        }
                        _ => out.extend_from_slice(b"\\N"),
                    }
                    continue;
                }
                encode_value(plan.kind, arr.as_ref(), row, out);
            }
            out.push(b'\n');
        }
    }

    /// Text of one value (for key ranges and diagnostics), `None` for NULL.
    pub fn value_text(&self, batch: &RecordBatch, col: usize, row: usize) -> Option<String> {
        let plan = &self.plans[col];
        let arr = batch.column(plan.index);
        if arr.is_null(row) {
            if let Some(r) = plan.raw_index {
                let r = batch.column(r).as_any().downcast_ref::<StringArray>()?;
                if !r.is_null(row) {
                    return Some(r.value(row).to_string());
                }
            }
            return None;
        }
        let mut out = Vec::new();
        encode_value(plan.kind, arr.as_ref(), row, &mut out);
        Some(String::from_utf8_lossy(&out).into_owned())
    }
}

macro_rules! downcast {
    ($arr:expr, $t:ty) => {
        $arr.as_any().downcast_ref::<$t>().expect(stringify!($t))
    };
}

fn encode_value(kind: ColumnKind, arr: &dyn Array, row: usize, out: &mut Vec<u8>) {
    match arr.data_type() {
        DataType::Int8 => push_int(out, downcast!(arr, Int8Array).value(row)),
        DataType::Int16 => push_int(out, downcast!(arr, Int16Array).value(row)),
        DataType::Int32 => push_int(out, downcast!(arr, Int32Array).value(row)),
        DataType::Int64 => push_int(out, downcast!(arr, Int64Array).value(row)),
        DataType::UInt8 => push_int(out, downcast!(arr, UInt8Array).value(row)),
        DataType::UInt16 => {
            let v = downcast!(arr, UInt16Array).value(row);
            if kind == ColumnKind::Year {
                // '0000' is the year zero; a bare 0 would be read as 2000.
                use std::io::Write;
                let _ = write!(out, "{v:04}");
            } else {
                push_int(out, v)
            }
        }
        DataType::UInt32 => push_int(out, downcast!(arr, UInt32Array).value(row)),
        DataType::UInt64 => {
            let v = downcast!(arr, UInt64Array).value(row);
            if let ColumnKind::Bit { width } = kind {
                // BIT takes its value from the bytes, big-endian.
                let n = (width as usize).div_ceil(8).max(1);
                escape_into(out, &v.to_be_bytes()[8 - n..]);
            } else {
                push_int(out, v)
            }
        }
        DataType::Decimal128(..) => out.extend_from_slice(
            downcast!(arr, Decimal128Array)
                .value_as_string(row)
                .as_bytes(),
        ),
        DataType::Decimal256(..) => out.extend_from_slice(
            downcast!(arr, Decimal256Array)
                .value_as_string(row)
                .as_bytes(),
        ),
        DataType::Float32 => push_f64(out, downcast!(arr, Float32Array).value(row) as f64),
        DataType::Float64 => push_f64(out, downcast!(arr, Float64Array).value(row)),
        DataType::Date32 => {
            let (y, m, d) = civil_from_days(downcast!(arr, Date32Array).value(row) as i64);
            push_date(out, y as u32, m, d);
        }
        DataType::Timestamp(..) => {
            micros_to_datetime(out, downcast!(arr, TimestampMicrosecondArray).value(row))
        }
        DataType::Duration(_) => {
            let v = downcast!(arr, DurationMicrosecondArray).value(row);
            if v < 0 {
                out.push(b'-');
            }
            let a = v.unsigned_abs();
            let secs = a / 1_000_000;
            let h = secs / 3600;
            use std::io::Write;
            let _ = write!(out, "{h:02}");
            out.push(b':');
            push_2(out, (secs / 60 % 60) as u32);
            out.push(b':');
            push_2(out, (secs % 60) as u32);
            out.push(b'.');
            let _ = write!(out, "{:06}", a % 1_000_000);
        }
        DataType::Utf8 => escape_into(out, downcast!(arr, StringArray).value(row).as_bytes()),
        DataType::Binary => escape_into(out, downcast!(arr, BinaryArray).value(row)),
        other => unreachable!("no stored column has Arrow type {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        for days in [-719_528i64, -1, 0, 1, 10_957, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(-719_528), (0, 1, 1));
        assert!(!is_calendar_date(2024, 0, 15));
        assert!(!is_calendar_date(0, 0, 0));
        assert!(is_calendar_date(2024, 2, 29));
        assert!(!is_calendar_date(2023, 2, 29));
    }

    #[test]
    fn decimal_text_parses_exactly() {
        assert_eq!(decimal_digits(b"-0.50", 2).as_deref(), Some("-050"));
        assert_eq!(decimal_digits(b"12", 3).as_deref(), Some("12000"));
        assert_eq!(decimal_digits(b"1.2345", 2), None);
        assert_eq!(decimal_digits(b"abc", 0), None);
    }

    #[test]
    fn escaping_covers_the_special_bytes() {
        let mut out = Vec::new();
        escape_into(&mut out, b"a\0b\tc\nd\\e\\N");
        assert_eq!(out, b"a\\0b\\tc\\nd\\\\e\\\\N");
    }

    #[test]
    fn floats_print_shortest_exact() {
        let mut out = Vec::new();
        push_f64(&mut out, 16777216f32 as f64);
        out.push(b' ');
        push_f64(&mut out, -0.0);
        out.push(b' ');
        push_f64(&mut out, f32::MAX as f64);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1.6777216e7 -0e0 3.4028234663852886e38"
        );
    }
}
