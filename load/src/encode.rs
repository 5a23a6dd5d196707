//! LOAD DATA encoding: Arrow batches of a chunk become the tab-separated
//! text that `LOAD DATA LOCAL INFILE ... CHARACTER SET binary` reads back
//! into the same values, following the type mapping of
//! `replseed_stage::types`.

use arrow::array::{
    Array, ArrayRef, BinaryArray, Date32Array, Decimal128Array, Decimal256Array,
    DurationMicrosecondArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
    Int8Array, StringArray, TimestampMicrosecondArray, UInt16Array, UInt32Array, UInt64Array,
    UInt8Array,
};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use chrono::{Datelike, NaiveDate};
use replseed_stage::types::{push_date, push_time_of_day, ColumnKind, ColumnSpec};

/// Days from 0001-01-01 (chrono's day 1 of the common era) to 1970-01-01.
const UNIX_EPOCH_FROM_CE: i64 = 719_163;

fn push_epoch_date(out: &mut Vec<u8>, days: i64) {
    let date = i32::try_from(days + UNIX_EPOCH_FROM_CE)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .expect("a date MariaDB can hold");
    push_date(out, date.year() as u32, date.month(), date.day());
}

fn micros_to_datetime(out: &mut Vec<u8>, micros: i64) {
    push_epoch_date(out, micros.div_euclid(86_400_000_000));
    out.push(b' ');
    let rem = micros.rem_euclid(86_400_000_000);
    let secs = (rem / 1_000_000) as u32;
    push_time_of_day(
        out,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        (rem % 1_000_000) as u32,
    );
}

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

macro_rules! downcast {
    ($arr:expr, $t:ty) => {
        $arr.as_any().downcast_ref::<$t>().expect(stringify!($t))
    };
}

/// Encodes Arrow batches as the tab-separated text that
/// `LOAD DATA LOCAL INFILE ... CHARACTER SET binary FIELDS TERMINATED BY '\t'
/// ESCAPED BY '\\' LINES TERMINATED BY '\n'` reads back into the same values.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    plans: Vec<ColumnPlan>,
    /// Batch columns of the ENUM index sidecars.
    enum_indexes: Vec<usize>,
}

/// Appends `bytes` with LOAD DATA escaping (`\0 \t \n \\`).
pub fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    // Most values need no escaping: check, then copy in one go.
    if !needs_escape(bytes) {
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

fn is_special(b: u8) -> bool {
    (b == 0) | (b == b'\t') | (b == b'\n') | (b == b'\\')
}

/// Whether `bytes` hold a byte LOAD DATA needs escaped. Checked 16 bytes at a
/// time without a branch inside a block, which the compiler turns into vector
/// compares: a fold over the whole slice stayed a scalar loop, and took a
/// quarter of the load's CPU on sysbench rows (4.5x slower in isolation).
fn needs_escape(bytes: &[u8]) -> bool {
    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        let mut any = false;
        for &b in block {
            any |= is_special(b);
        }
        if any {
            return true;
        }
    }
    blocks.remainder().iter().any(|&b| is_special(b))
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
        let mut enum_indexes = Vec::new();
        for c in columns {
            let mut index = schema
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
            // An ENUM or SET is loaded by member number, from its index sidecar.
            if let Some(ix) = &c.index_column {
                index = schema
                    .index_of(ix)
                    .map_err(|_| SchemaMismatch(format!("sidecar `{ix}` missing")))?;
                if schema.field(index).data_type() != &c.index_type() {
                    return Err(SchemaMismatch(format!(
                        "sidecar `{ix}` is {}, expected {}",
                        schema.field(index).data_type(),
                        c.index_type()
                    )));
                }
                if c.kind == ColumnKind::Enum {
                    enum_indexes.push(index);
                }
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
        Ok(TextEncoder {
            plans,
            enum_indexes,
        })
    }

    /// How many ENUM cells of rows `[from, to)` hold the invalid value
    /// (member number 0): MariaDB stores it only with a warning
    /// (1265 "Data truncated"), one per cell, which the loader expects.
    pub fn invalid_enum_cells(&self, batch: &RecordBatch, from: usize, to: usize) -> u64 {
        self.enum_indexes
            .iter()
            .map(|&i| {
                let a = downcast!(batch.column(i), UInt16Array);
                (from..to)
                    .filter(|&r| !a.is_null(r) && a.value(r) == 0)
                    .count() as u64
            })
            .sum()
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
        DataType::Date32 => push_epoch_date(out, downcast!(arr, Date32Array).value(row) as i64),
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
            push_time_of_day(
                out,
                (secs / 3600) as u32,
                (secs / 60 % 60) as u32,
                (secs % 60) as u32,
                (a % 1_000_000) as u32,
            );
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
    fn dates_print_as_mariadb_reads_them() {
        let mut out = Vec::new();
        for days in [-719_528i64, -1, 0, 19_782, 2_932_896] {
            push_epoch_date(&mut out, days);
            out.push(b' ');
        }
        micros_to_datetime(&mut out, -1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0000-01-01 1969-12-31 1970-01-01 2024-02-29 9999-12-31 1969-12-31 23:59:59.999999"
        );
    }

    #[test]
    fn escaping_covers_the_special_bytes() {
        let mut out = Vec::new();
        escape_into(&mut out, b"a\0b\tc\nd\\e\\N");
        assert_eq!(out, b"a\\0b\\tc\\nd\\\\e\\\\N");
    }

    #[test]
    fn escaping_finds_a_special_byte_at_any_position() {
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 120, 1000] {
            let plain = vec![b'x'; len];
            let mut out = Vec::new();
            escape_into(&mut out, &plain);
            assert_eq!(out, plain);
            for pos in 0..len {
                for (special, escaped) in
                    [(0u8, b'0'), (b'\t', b't'), (b'\n', b'n'), (b'\\', b'\\')]
                {
                    let mut v = plain.clone();
                    v[pos] = special;
                    let mut want = plain[..pos].to_vec();
                    want.extend_from_slice(&[b'\\', escaped]);
                    want.extend_from_slice(&plain[pos + 1..]);
                    let mut out = Vec::new();
                    escape_into(&mut out, &v);
                    assert_eq!(out, want, "length {len}, byte {special} at {pos}");
                }
            }
        }
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
