//! Value decoding: rows read from MariaDB over the binary protocol become
//! Arrow batches, following the type mapping of `replseed_stage::types`.
//!
//! Dates a natural Arrow type cannot hold (zero and part-zero dates) are
//! NULL in the natural column and kept verbatim in the raw sidecar column.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Date32Builder, Decimal128Builder, Decimal256Builder,
    DurationMicrosecondBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, Int8Builder, StringBuilder, TimestampMicrosecondBuilder, UInt16Builder,
    UInt32Builder, UInt64Builder, UInt8Builder,
};
use arrow::compute::kernels::cast_utils::parse_decimal;
use arrow::datatypes::{DataType, Decimal128Type, Decimal256Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use mysql_async::{from_value_opt, Value};
use replseed_stage::types::{arrow_schema, push_date, push_time_of_day, ColumnKind, ColumnSpec};

/// Days from 0001-01-01 (chrono's day 1 of the common era) to 1970-01-01.
const UNIX_EPOCH_FROM_CE: i32 = 719_163;

/// Days since 1970-01-01 of a real calendar date; `None` for zero and
/// part-zero dates (`0000-00-00`, `2024-00-15`, `2023-02-29`).
fn epoch_days(y: u16, m: u8, d: u8) -> Option<i32> {
    let date = NaiveDate::from_ymd_opt(y as i32, m as u32, d as u32)?;
    Some(chrono::Datelike::num_days_from_ce(&date) - UNIX_EPOCH_FROM_CE)
}

/// Text of a MariaDB DATE/DATETIME value from its fields, as MariaDB reads
/// it back (the raw sidecar form).
fn datetime_text(v: &Value, with_time: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(26);
    if let Value::Date(y, m, d, h, mi, s, us) = *v {
        push_date(&mut out, y as u32, m as u32, d as u32);
        if with_time {
            out.push(b' ');
            push_time_of_day(&mut out, h as u32, mi as u32, s as u32, us);
        }
    }
    out
}

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
    /// Index sidecars of ENUM (UInt16) and SET (UInt64) columns, in column order.
    indexes: Vec<(usize, IndexBuilder)>,
    rows: usize,
    bytes: usize,
}

enum IndexBuilder {
    Enum(UInt16Builder),
    Set(UInt64Builder),
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
        // The binary protocol's own integers: no conversion needed.
        Value::Int(i) => Some(*i as i128),
        Value::UInt(u) => Some(*u as i128),
        other => from_value_opt::<i128>(other.clone()).ok(),
    }
}

/// MariaDB's decimal text (`-123.4500`) as the unscaled value of a
/// decimal with `scale` fraction digits.
fn decimal_text(v: &Value) -> Option<&str> {
    match v {
        Value::Bytes(t) => std::str::from_utf8(t).ok().map(str::trim),
        _ => None,
    }
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
        let indexes = columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.index_column.is_some())
            .map(|(i, c)| {
                let b = match c.index_type() {
                    DataType::UInt64 => IndexBuilder::Set(UInt64Builder::new()),
                    _ => IndexBuilder::Enum(UInt16Builder::new()),
                };
                (i, b)
            })
            .collect();
        BatchBuilder {
            columns: columns.to_vec(),
            schema,
            builders,
            raws,
            indexes,
            rows: 0,
            bytes: 0,
        }
    }

    /// Rows accumulated since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Approximate bytes of accumulated values.
    pub fn byte_size(&self) -> usize {
        self.bytes
    }

    /// The schema of the batches.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Appends one row: `values` are the stored columns in order, then the
    /// member numbers (`CAST(col AS UNSIGNED)`) of the columns with an index sidecar.
    pub fn push_row(&mut self, values: Vec<Value>) -> Result<(), ValueError> {
        let n = self.columns.len();
        let mut values = values.into_iter();
        for (i, v) in values.by_ref().take(n).enumerate() {
            self.push_value(i, v)?;
        }
        for (k, v) in values.enumerate() {
            let (i, b) = &mut self.indexes[k];
            let number = match &v {
                Value::NULL => None,
                v => Some(
                    int_of(v)
                        .and_then(|x| u64::try_from(x).ok())
                        .ok_or_else(|| ValueError {
                            column: self.columns[*i].name.clone(),
                            message: format!("not a member number: got {v:?}"),
                        })?,
                ),
            };
            match (b, number) {
                (IndexBuilder::Enum(b), Some(x)) => b.append_value(x as u16),
                (IndexBuilder::Set(b), Some(x)) => b.append_value(x),
                (IndexBuilder::Enum(b), None) => b.append_null(),
                (IndexBuilder::Set(b), None) => b.append_null(),
            }
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
            (Builder::D128(b), ColumnKind::Decimal { precision, scale }) => {
                let parsed = decimal_text(&v)
                    .and_then(|t| parse_decimal::<Decimal128Type>(t, precision, scale as i8).ok());
                match parsed {
                    Some(x) => b.append_value(x),
                    None => return Err(self.err(i, &v, "not a DECIMAL")),
                }
            }
            (Builder::D256(b), ColumnKind::Decimal { precision, scale }) => {
                let parsed = decimal_text(&v)
                    .and_then(|t| parse_decimal::<Decimal256Type>(t, precision, scale as i8).ok());
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
                Value::Date(y, m, d, ..) if epoch_days(y, m, d).is_some() => {
                    b.append_value(epoch_days(y, m, d).expect("checked"))
                }
                Value::Date(..) => {
                    b.append_null();
                    raw = Some(datetime_text(&v, false));
                }
                _ => return Err(self.err(i, &v, "not a DATE")),
            },
            (Builder::Ts(b), _) => match v {
                Value::Date(y, m, d, h, mi, s, us) if epoch_days(y, m, d).is_some() => {
                    let days = epoch_days(y, m, d).expect("checked") as i64;
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
        for (_, b) in self.indexes.iter_mut() {
            arrays.push(match b {
                IndexBuilder::Enum(b) => Arc::new(b.finish()),
                IndexBuilder::Set(b) => Arc::new(b.finish()),
            });
        }
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), arrays).expect("arrays match the schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DecimalType;

    #[test]
    fn calendar_dates_and_zero_dates() {
        assert_eq!(epoch_days(1970, 1, 1), Some(0));
        assert_eq!(epoch_days(0, 1, 1), Some(-719_528));
        assert_eq!(epoch_days(9999, 12, 31), Some(2_932_896));
        assert_eq!(epoch_days(2024, 2, 29), Some(19_782));
        for (y, m, d) in [(2024, 0, 15), (0, 0, 0), (2023, 2, 29), (2024, 4, 31)] {
            assert_eq!(epoch_days(y, m, d), None, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn decimal_text_parses_exactly() {
        let p = |t: &str, s: i8| parse_decimal::<Decimal128Type>(t, 10, s).ok();
        assert_eq!(p("-0.50", 2), Some(-50));
        assert_eq!(p("12", 3), Some(12000));
        assert_eq!(p("abc", 0), None);
        let big = "-99999999999999999999999999999999999.999999999999999999999999999999";
        let v = parse_decimal::<Decimal256Type>(big, 65, 30).expect("65 digits");
        assert_eq!(Decimal256Type::format_decimal(v, 65, 30), big);
    }
}
