//! The MariaDB-to-Arrow type mapping: every rule of it, in one place.
//!
//! Every stored column has a [`ColumnKind`], decided from
//! `information_schema.COLUMNS` ([`ColumnKind::classify`], with the JSON
//! rule of [`json_check_column`]). The kind fixes the Arrow type and field
//! metadata of the Parquet column ([`ColumnSpec::arrow_field`]), which
//! columns are stored (generated columns are not; the hidden period columns
//! of a system-versioned table are, see [`implicit_period_columns`]), and
//! how the loader assigns a value ([`ColumnKind::load_conversion`]).
//!
//! The value codecs that follow these rules live with the stage that runs
//! them: the decoder from MySQL values to Arrow in `replseed-extract`
//! (`decode.rs`), the encoder from Arrow to `LOAD DATA` text in
//! `replseed-load` (`encode.rs`). Both write temporal values in the text
//! forms of [`push_date`] and [`push_time_of_day`].
//!
//! Natural Arrow types are used where they are lossless. Values a natural
//! type cannot hold (zero and part-zero dates such as `0000-00-00` or
//! `2024-00-15`) are stored as NULL in the natural column and verbatim in a
//! sidecar `Utf8` column named `<column>#raw`, whose field metadata
//! `replseed.raw_of` names the column it completes. A reader takes the raw
//! value whenever it is not NULL. `docs/FORMAT.md` has the full table.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
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
/// Field-metadata key on an index sidecar column: the ENUM or SET column
/// whose member numbers it holds.
pub const META_INDEX_OF: &str = "replseed.index_of";

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
    /// JSON (MariaDB's LONGTEXT with `json_valid`) in a UTF-8 character set:
    /// Utf8, text verbatim. JSON in another character set is `OtherText`.
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
    /// AUTO_INCREMENT column (it must lead an index at CREATE time).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_increment: bool,
    /// Storage kind.
    #[serde(flatten)]
    pub kind: ColumnKind,
    /// Name of the index sidecar Parquet column of an ENUM or SET: the
    /// member number (ENUM, UInt16: 0 is the invalid value that a label
    /// cannot tell from a `''` member) or bit set (SET, UInt64). The loader
    /// loads these numbers, so labels, collations and numeric-looking
    /// labels never matter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_column: Option<String>,
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
                // JSON is text with a json_valid check; its bytes follow the
                // column's character set like any other text.
                if is_json && is_utf8_charset(charset) {
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

    /// Whether values of this kind are stored with an index sidecar.
    pub fn has_index_sidecar(&self) -> bool {
        matches!(self, ColumnKind::Enum | ColumnKind::Set)
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

impl ColumnSpec {
    /// How `LOAD DATA ... CHARACTER SET binary` must assign this column's
    /// field, read into the user variable `var` (`@c3`): `None` when the
    /// field goes straight into the column. INET4, INET6 and UUID take a
    /// binary field as their binary form, so their text is made a character
    /// string first. An ENUM or SET with an index sidecar is loaded by
    /// number (see [`ColumnSpec::index_column`]).
    pub fn load_conversion(&self, var: &str) -> Option<String> {
        match self.kind {
            ColumnKind::Inet4 | ColumnKind::Inet6 | ColumnKind::Uuid => {
                Some(format!("CONVERT({var} USING utf8mb4)"))
            }
            ColumnKind::Enum | ColumnKind::Set if self.index_column.is_some() => {
                Some(format!("CAST({var} AS UNSIGNED)"))
            }
            _ => None,
        }
    }

    /// The Arrow type of the index sidecar.
    pub fn index_type(&self) -> DataType {
        match self.kind {
            ColumnKind::Set => DataType::UInt64,
            _ => DataType::UInt16,
        }
    }
}

/// Assigns sidecar names to the columns that need them (`<name>#raw`,
/// `<name>#index`, with extra `#` while a name collides with another column).
pub fn assign_sidecars(columns: &mut [ColumnSpec]) {
    let mut taken: std::collections::HashSet<String> =
        columns.iter().map(|c| c.name.to_lowercase()).collect();
    let mut name_for = |base: &str, suffix: &str| {
        let mut name = format!("{base}#{suffix}");
        while taken.contains(&name.to_lowercase()) {
            name.insert(0, '#');
        }
        taken.insert(name.to_lowercase());
        name
    };
    for c in columns.iter_mut() {
        if c.kind.has_raw_sidecar() {
            c.raw_column = Some(name_for(&c.name, "raw"));
        }
        if c.kind.has_index_sidecar() {
            c.index_column = Some(name_for(&c.name, "index"));
        }
    }
}

/// The Arrow schema of a chunk: the natural columns in order, then the raw
/// sidecars, then the index sidecars.
pub fn arrow_schema(columns: &[ColumnSpec]) -> SchemaRef {
    let mut fields: Vec<Field> = columns.iter().map(|c| c.arrow_field()).collect();
    for c in columns {
        if let Some(raw) = &c.raw_column {
            let md = HashMap::from([(META_RAW_OF.to_string(), c.name.clone())]);
            fields.push(Field::new(raw, DataType::Utf8, true).with_metadata(md));
        }
    }
    for c in columns {
        if let Some(index) = &c.index_column {
            let md = HashMap::from([(META_INDEX_OF.to_string(), c.name.clone())]);
            fields.push(Field::new(index, c.index_type(), true).with_metadata(md));
        }
    }
    Arc::new(Schema::new(fields))
}

/// The column a `CHECK` constraint of `information_schema.CHECK_CONSTRAINTS`
/// marks as JSON: MariaDB's JSON type is LONGTEXT with the column-level check
/// `json_valid(`col`)`.
pub fn json_check_column(check_clause: &str) -> Option<String> {
    check_clause
        .strip_prefix("json_valid(`")
        .and_then(|c| c.strip_suffix("`)"))
        .map(|c| c.replace("``", "`"))
}

/// Whether a declared `ROW START`/`ROW END` column of this `DATA_TYPE` can
/// be copied: timestamp periods can; transaction-precise periods (BIGINT)
/// cannot, their history refers to the master's transaction ids.
pub fn period_is_copyable(data_type: &str) -> bool {
    data_type.eq_ignore_ascii_case("timestamp")
}

/// The hidden period columns of a table declared `WITH SYSTEM VERSIONING`
/// without its own period columns: MariaDB names them `ROW_START` and
/// `ROW_END`; they are stored (invisible) so that the history survives.
pub fn implicit_period_columns() -> Vec<ColumnSpec> {
    ["ROW_START", "ROW_END"]
        .into_iter()
        .map(|name| ColumnSpec {
            name: name.into(),
            column_type: "timestamp(6)".into(),
            data_type: "timestamp".into(),
            charset: None,
            collation: None,
            nullable: false,
            invisible: true,
            auto_increment: false,
            kind: ColumnKind::Timestamp,
            index_column: None,
            raw_column: None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Text forms of temporal values: how the raw sidecar stores a date the
// natural column cannot hold, and how the loader writes every date.

fn push_2(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

/// Appends `YYYY-MM-DD` (fields as MariaDB has them, zeros included).
pub fn push_date(out: &mut Vec<u8>, y: u32, m: u32, d: u32) {
    push_2(out, y / 100);
    push_2(out, y % 100);
    out.push(b'-');
    push_2(out, m);
    out.push(b'-');
    push_2(out, d);
}

/// Appends `HH:MM:SS.ffffff`; hours above 99 get more digits (TIME).
pub fn push_time_of_day(out: &mut Vec<u8>, h: u32, mi: u32, s: u32, us: u32) {
    if h > 99 {
        out.extend_from_slice(h.to_string().as_bytes());
    } else {
        push_2(out, h);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporal_text_forms() {
        let mut out = Vec::new();
        push_date(&mut out, 0, 0, 0);
        out.push(b' ');
        push_time_of_day(&mut out, 7, 5, 9, 42);
        out.push(b' ');
        push_time_of_day(&mut out, 838, 59, 59, 0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0000-00-00 07:05:09.000042 838:59:59.000000"
        );
    }

    #[test]
    fn json_and_period_rules() {
        assert_eq!(
            json_check_column("json_valid(`a``b`)").as_deref(),
            Some("a`b")
        );
        assert_eq!(json_check_column("`a` > 0"), None);
        assert!(period_is_copyable("timestamp"));
        assert!(!period_is_copyable("bigint"));
        assert_eq!(implicit_period_columns()[1].name, "ROW_END");
    }
}
