//! Row images (`pack_row`, `sql/rpl_record.cc`): per row, a null bitmap
//! over the present columns (a set bit is NULL; the unused bits of its last
//! byte are set), then each non-NULL present column's packed value. Also
//! the plain column bitmaps of the table map and the Write_rows header,
//! whose unused bits are clear.
//!
//! The values come from an Arrow batch as a chunk holds it: the natural
//! column, completed by its raw sidecar (zero dates) and, for ENUM and SET,
//! replaced by its index sidecar (member numbers).

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Decimal256Type, DurationMicrosecondType, Float32Type,
    Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, TimeUnit, TimestampMicrosecondType,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};

use super::tablemap::{ColumnFormat, Packing, TableShape};
use super::temporal::{self, Civil};
use super::{decimal, values, RowsError};

/// Appends `bits` as a bitmap, least significant bit first, unused bits clear.
pub fn push_bitmap(out: &mut Vec<u8>, bits: &[bool]) {
    for chunk in bits.chunks(8) {
        out.push(
            chunk
                .iter()
                .enumerate()
                .fold(0u8, |b, (i, set)| b | (u8::from(*set) << i)),
        );
    }
}

/// One present column of a batch, with its sidecars.
struct Bound<'a> {
    name: &'a str,
    packing: Packing,
    natural: &'a ArrayRef,
    raw: Option<&'a StringArray>,
    index: Option<&'a ArrayRef>,
}

/// A batch bound to a table's present columns, ready to pack row by row.
pub struct BoundBatch<'a> {
    cols: Vec<Bound<'a>>,
    rows: usize,
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, RowsError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| RowsError(format!("the chunk has no column `{name}`")))
}

impl<'a> BoundBatch<'a> {
    /// Binds `batch` to the stored columns of `shape` (with their `formats`).
    pub fn bind(
        batch: &'a RecordBatch,
        shape: &'a TableShape,
        formats: &[ColumnFormat],
    ) -> Result<BoundBatch<'a>, RowsError> {
        let mut cols = Vec::new();
        for (c, f) in shape.columns.iter().zip(formats) {
            if !c.stored {
                continue;
            }
            let raw =
                match &c.spec.raw_column {
                    Some(r) => Some(column(batch, r)?.as_string_opt::<i32>().ok_or_else(|| {
                        RowsError(format!("the chunk's column `{r}` is not Utf8"))
                    })?),
                    None => None,
                };
            let index = match &c.spec.index_column {
                Some(i) => Some(column(batch, i)?),
                None => None,
            };
            cols.push(Bound {
                name: &c.spec.name,
                packing: f.packing,
                natural: column(batch, &c.spec.name)?,
                raw,
                index,
            });
        }
        Ok(BoundBatch {
            cols,
            rows: batch.num_rows(),
        })
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// How many columns each row image holds.
    pub fn width(&self) -> usize {
        self.cols.len()
    }

    /// Appends row `row`'s image.
    pub fn push_row(&self, row: usize, out: &mut Vec<u8>) -> Result<(), RowsError> {
        for chunk in self.cols.chunks(8) {
            let mut b = if chunk.len() == 8 {
                0
            } else {
                0xffu8 << chunk.len()
            };
            for (i, c) in chunk.iter().enumerate() {
                b |= u8::from(c.is_null(row)) << i;
            }
            out.push(b);
        }
        for c in &self.cols {
            if !c.is_null(row) {
                c.pack(row, out).map_err(|e| {
                    RowsError(format!("column `{}`, row {}: {}", c.name, row + 1, e.0))
                })?;
            }
        }
        Ok(())
    }
}

fn unexpected(a: &ArrayRef) -> RowsError {
    RowsError(format!("unexpected Arrow type {}", a.data_type()))
}

/// An integer column's value as 64 bits (signed values sign-extended).
fn int_value(a: &ArrayRef, i: usize) -> Result<u64, RowsError> {
    Ok(match a.data_type() {
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i) as i64 as u64,
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i) as i64 as u64,
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i) as i64 as u64,
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i) as u64,
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(i) as u64,
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(i) as u64,
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(i) as u64,
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i),
        _ => return Err(unexpected(a)),
    })
}

/// A text or binary column's bytes.
fn bytes_value(a: &ArrayRef, i: usize) -> Result<&[u8], RowsError> {
    match a.data_type() {
        DataType::Utf8 => Ok(a.as_string::<i32>().value(i).as_bytes()),
        DataType::LargeUtf8 => Ok(a.as_string::<i64>().value(i).as_bytes()),
        DataType::Binary => Ok(a.as_binary::<i32>().value(i)),
        DataType::LargeBinary => Ok(a.as_binary::<i64>().value(i)),
        _ => Err(unexpected(a)),
    }
}

fn text_value(a: &ArrayRef, i: usize) -> Result<&str, RowsError> {
    std::str::from_utf8(bytes_value(a, i)?).map_err(|_| RowsError("not UTF-8 text".into()))
}

/// Microseconds since the epoch of a Timestamp(µs) column.
fn micros_value(a: &ArrayRef, i: usize) -> Result<i64, RowsError> {
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Ok(a.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        _ => Err(unexpected(a)),
    }
}

impl Bound<'_> {
    fn is_null(&self, i: usize) -> bool {
        if let Some(index) = self.index {
            return index.is_null(i);
        }
        self.natural.is_null(i) && self.raw.is_none_or(|r| r.is_null(i))
    }

    /// The calendar value of a DATE/DATETIME/TIMESTAMP: the raw sidecar's
    /// text when it holds one, else the natural value.
    fn civil(
        &self,
        i: usize,
        natural: impl FnOnce() -> Result<Civil, RowsError>,
    ) -> Result<Civil, RowsError> {
        match self.raw {
            Some(r) if !r.is_null(i) => Civil::parse(r.value(i)),
            _ => natural(),
        }
    }

    fn pack(&self, i: usize, out: &mut Vec<u8>) -> Result<(), RowsError> {
        let a = self.natural;
        match self.packing {
            Packing::Int(n) => values::push_int(out, int_value(a, i)?, n),
            Packing::Decimal { precision, scale } => {
                let text = match a.data_type() {
                    DataType::Decimal128(..) => {
                        a.as_primitive::<Decimal128Type>().value(i).to_string()
                    }
                    DataType::Decimal256(..) => {
                        a.as_primitive::<Decimal256Type>().value(i).to_string()
                    }
                    _ => return Err(unexpected(a)),
                };
                decimal::push_decimal(out, &text, precision, scale)?
            }
            Packing::Float => match a.data_type() {
                DataType::Float32 => out.extend_from_slice(
                    &a.as_primitive::<Float32Type>()
                        .value(i)
                        .to_bits()
                        .to_le_bytes(),
                ),
                _ => return Err(unexpected(a)),
            },
            Packing::Double => match a.data_type() {
                DataType::Float64 => out.extend_from_slice(
                    &a.as_primitive::<Float64Type>()
                        .value(i)
                        .to_bits()
                        .to_le_bytes(),
                ),
                _ => return Err(unexpected(a)),
            },
            Packing::Bit(width) => values::push_bit(out, int_value(a, i)?, width),
            Packing::Year => temporal::push_year(out, int_value(a, i)? as u16),
            Packing::Date => {
                let c = self.civil(i, || match a.data_type() {
                    DataType::Date32 => Ok(Civil::from_days(
                        a.as_primitive::<Date32Type>().value(i) as i64,
                    )),
                    _ => Err(unexpected(a)),
                })?;
                temporal::push_date(out, &c)
            }
            Packing::DateTime(dec) => {
                let c = self.civil(i, || Ok(Civil::from_micros(micros_value(a, i)?)))?;
                temporal::push_datetime(out, &c, dec)
            }
            Packing::Timestamp(dec) => {
                let us = match self.raw {
                    Some(r) if !r.is_null(i) => {
                        // Only the zero timestamp cannot be a natural value.
                        if Civil::parse(r.value(i))? != Civil::default() {
                            return Err(RowsError(format!(
                                "`{}` is not a TIMESTAMP value",
                                r.value(i)
                            )));
                        }
                        0
                    }
                    _ => micros_value(a, i)?,
                };
                if !(0..=u32::MAX as i64 * 1_000_000 + 999_999).contains(&us) {
                    return Err(RowsError(format!("{us} µs is outside TIMESTAMP's range")));
                }
                temporal::push_timestamp(out, (us / 1_000_000) as u32, (us % 1_000_000) as u32, dec)
            }
            Packing::Time(dec) => match a.data_type() {
                DataType::Duration(TimeUnit::Microsecond) => temporal::push_time(
                    out,
                    a.as_primitive::<DurationMicrosecondType>().value(i),
                    dec,
                ),
                _ => return Err(unexpected(a)),
            },
            Packing::Var(prefix) | Packing::Blob(prefix) => {
                values::push_counted(out, bytes_value(a, i)?, prefix)?
            }
            Packing::Fixed { prefix, pad } => {
                values::push_fixed(out, bytes_value(a, i)?, prefix, pad)?
            }
            Packing::Enum(n) | Packing::Set(n) => {
                let index = self.index.ok_or_else(|| {
                    RowsError("the chunk has no member numbers for this column".into())
                })?;
                values::push_int(out, int_value(index, i)?, n)
            }
            Packing::Inet4 => {
                values::push_fixed(out, &values::inet4(text_value(a, i)?)?, 1, b"\0")?
            }
            Packing::Inet6 => {
                values::push_fixed(out, &values::inet6(text_value(a, i)?)?, 1, b"\0")?
            }
            Packing::Uuid => values::push_fixed(out, &values::uuid(text_value(a, i)?)?, 1, b"\0")?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps() {
        let mut out = Vec::new();
        push_bitmap(&mut out, &[false, true, true, true, true]);
        push_bitmap(&mut out, &[true; 9]);
        assert_eq!(out, [0x1e, 0xff, 0x01]);
    }
}
