//! Each column's binlog type code, table-map metadata and value layout, and
//! the TABLE_MAP_EVENT body (`Table_map_log_event::write_data_body`).
//!
//! The type code and metadata are what `Field_*::binlog_type_info()` gives
//! on a 10.11 master (with `mysql56_temporal_format`, the default): ENUM,
//! SET, CHAR, BINARY, INET4/6 and UUID are all type 254 with their real type
//! in the metadata; every TEXT/BLOB, JSON and GEOMETRY carries the size of
//! its length prefix. The optional metadata TLVs are not written: a 10.11
//! master writes none with its default `binlog_row_metadata=NO_LOG`, and the
//! applier does not read them.

use replseed_stage::manifest::{Database, Table};
use replseed_stage::types::{ColumnKind, ColumnSpec};

use super::{RowsError, TableColumn};

/// Binlog column type codes (`enum_field_types`).
pub mod codes {
    /// TINYINT.
    pub const TINY: u8 = 1;
    /// SMALLINT.
    pub const SHORT: u8 = 2;
    /// INT.
    pub const LONG: u8 = 3;
    /// FLOAT.
    pub const FLOAT: u8 = 4;
    /// DOUBLE.
    pub const DOUBLE: u8 = 5;
    /// BIGINT.
    pub const LONGLONG: u8 = 8;
    /// MEDIUMINT.
    pub const INT24: u8 = 9;
    /// DATE (3-byte "newdate" values).
    pub const DATE: u8 = 10;
    /// YEAR.
    pub const YEAR: u8 = 13;
    /// VARCHAR and VARBINARY.
    pub const VARCHAR: u8 = 15;
    /// BIT.
    pub const BIT: u8 = 16;
    /// TIMESTAMP in the 5.6 format.
    pub const TIMESTAMP2: u8 = 17;
    /// DATETIME in the 5.6 format.
    pub const DATETIME2: u8 = 18;
    /// TIME in the 5.6 format.
    pub const TIME2: u8 = 19;
    /// DECIMAL.
    pub const NEWDECIMAL: u8 = 246;
    /// ENUM (real type, in the metadata of a type-254 column).
    pub const ENUM: u8 = 247;
    /// SET (real type, in the metadata of a type-254 column).
    pub const SET: u8 = 248;
    /// TEXT, BLOB, JSON.
    pub const BLOB: u8 = 252;
    /// CHAR, BINARY, ENUM, SET, INET4, INET6, UUID.
    pub const STRING: u8 = 254;
    /// GEOMETRY.
    pub const GEOMETRY: u8 = 255;
}

/// How one value is packed in a row image (`Field::pack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// Little-endian integer of this many bytes (1, 2, 3, 4, 8).
    Int(u8),
    /// DECIMAL(precision, scale) binary form.
    Decimal {
        /// Precision.
        precision: u8,
        /// Scale.
        scale: u8,
    },
    /// IEEE single, little-endian.
    Float,
    /// IEEE double, little-endian.
    Double,
    /// BIT(n): big-endian in (n+7)/8 bytes.
    Bit(u8),
    /// YEAR: one byte, year - 1900 (0 for 0000).
    Year,
    /// DATE: 3 bytes.
    Date,
    /// DATETIME2 with this many fractional digits.
    DateTime(u8),
    /// TIMESTAMP2 with this many fractional digits.
    Timestamp(u8),
    /// TIME2 with this many fractional digits.
    Time(u8),
    /// VARCHAR/VARBINARY: length prefix of 1 or 2 bytes, then the bytes.
    Var(u8),
    /// CHAR/BINARY: length prefix of 1 or 2 bytes, then the bytes without
    /// their trailing pad (`pad`, repeated units of its length).
    Fixed {
        /// Length prefix size.
        prefix: u8,
        /// The pad unit: a space in the charset (` `, `\0 ` in UCS-2...) or
        /// `\0` for BINARY.
        pad: &'static [u8],
    },
    /// TEXT/BLOB/JSON/GEOMETRY: length prefix of 1 to 4 bytes, then the bytes.
    Blob(u8),
    /// ENUM: member number in 1 or 2 bytes.
    Enum(u8),
    /// SET: member bits in 1, 2, 3, 4 or 8 bytes.
    Set(u8),
    /// INET4: its 4 bytes (network order) packed as BINARY(4).
    Inet4,
    /// INET6: its 16 bytes (network order) packed as BINARY(16).
    Inet6,
    /// UUID: its 16 bytes as written, packed as BINARY(16).
    Uuid,
}

/// A column's binlog type code, its table-map metadata and its value layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnFormat {
    /// Type code in the table map.
    pub code: u8,
    /// Metadata bytes in the table map (0 to 2).
    pub meta: Vec<u8>,
    /// How values are packed.
    pub packing: Packing,
}

/// Longest character of a character set, in bytes (`mbmaxlen`).
pub fn mbmaxlen(charset: &str) -> Option<u8> {
    Some(match charset {
        "utf8mb4" | "utf16" | "utf16le" | "utf32" => 4,
        "utf8mb3" | "utf8" | "ujis" | "eucjpms" => 3,
        "ucs2" | "sjis" | "cp932" | "big5" | "gbk" | "gb2312" | "euckr" => 2,
        "latin1" | "latin2" | "latin5" | "latin7" | "ascii" | "binary" | "cp1250" | "cp1251"
        | "cp1256" | "cp1257" | "cp850" | "cp852" | "cp866" | "dec8" | "greek" | "hebrew"
        | "hp8" | "keybcs2" | "koi8r" | "koi8u" | "macce" | "macroman" | "swe7" | "tis620"
        | "armscii8" | "geostd8" | "filename" => 1,
        _ => return None,
    })
}

/// The pad unit of CHAR in a character set (what `lengthsp` strips).
fn pad_unit(charset: &str) -> &'static [u8] {
    match charset {
        "binary" => b"\0",
        "ucs2" | "utf16" => b"\0 ",
        "utf16le" => b" \0",
        "utf32" => b"\0\0\0 ",
        _ => b" ",
    }
}

/// The number in `type(N...)` of a COLUMN_TYPE, e.g. 20 in `varchar(20)`.
fn type_arg(column_type: &str) -> Option<u32> {
    let open = column_type.find('(')?;
    let rest = &column_type[open + 1..];
    let end = rest.find([')', ','])?;
    rest[..end].trim().parse().ok()
}

/// How many members an `enum('a','b')` or `set(...)` COLUMN_TYPE lists.
fn member_count(column_type: &str) -> Result<usize, RowsError> {
    let bad = || RowsError(format!("cannot read the members of `{column_type}`"));
    let open = column_type.find('(').ok_or_else(bad)?;
    let b = column_type.as_bytes();
    let (mut i, mut n) = (open + 1, 0);
    loop {
        if b.get(i) != Some(&b'\'') {
            return Err(bad());
        }
        i += 1;
        // One quoted label: '' is a quote, backslash escapes are not used
        // in COLUMN_TYPE.
        loop {
            match b.get(i) {
                None => return Err(bad()),
                Some(b'\'') if b.get(i + 1) == Some(&b'\'') => i += 2,
                Some(b'\'') => break,
                _ => i += 1,
            }
        }
        n += 1;
        i += 1;
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b')') => return Ok(n),
            _ => return Err(bad()),
        }
    }
}

/// Fractional digits of a temporal COLUMN_TYPE (`datetime(3)` is 3).
fn fsp(column_type: &str) -> u8 {
    type_arg(column_type).unwrap_or(0) as u8
}

/// Length-prefix size of a TEXT/BLOB type by its DATA_TYPE.
fn blob_prefix(data_type: &str) -> Option<u8> {
    Some(match data_type {
        "tinytext" | "tinyblob" => 1,
        "text" | "blob" => 2,
        "mediumtext" | "mediumblob" => 3,
        "longtext" | "longblob" | "json" => 4,
        _ => return None,
    })
}

impl ColumnFormat {
    /// The format of a column, from the manifest's description.
    pub fn of(spec: &ColumnSpec) -> Result<ColumnFormat, RowsError> {
        use codes::*;
        let ct = spec.column_type.to_ascii_lowercase();
        let dt = spec.data_type.to_ascii_lowercase();
        let unsupported = || {
            RowsError(format!(
                "column `{}`: type `{ct}` has no row-event form here",
                spec.name
            ))
        };
        let f = |code, meta: &[u8], packing| ColumnFormat {
            code,
            meta: meta.to_vec(),
            packing,
        };
        Ok(match spec.kind {
            ColumnKind::Int { bits, .. } => match bits {
                8 => f(TINY, &[], Packing::Int(1)),
                16 => f(SHORT, &[], Packing::Int(2)),
                24 => f(INT24, &[], Packing::Int(3)),
                32 => f(LONG, &[], Packing::Int(4)),
                _ => f(LONGLONG, &[], Packing::Int(8)),
            },
            ColumnKind::Decimal { precision, scale } => f(
                NEWDECIMAL,
                &[precision, scale],
                Packing::Decimal { precision, scale },
            ),
            ColumnKind::Float => f(FLOAT, &[4], Packing::Float),
            ColumnKind::Double => f(DOUBLE, &[8], Packing::Double),
            ColumnKind::Bit { width } => f(BIT, &[width % 8, width / 8], Packing::Bit(width)),
            ColumnKind::Year => f(YEAR, &[], Packing::Year),
            ColumnKind::Date => f(DATE, &[], Packing::Date),
            ColumnKind::DateTime => {
                let d = fsp(&ct);
                f(DATETIME2, &[d], Packing::DateTime(d))
            }
            ColumnKind::Timestamp => {
                let d = fsp(&ct);
                f(TIMESTAMP2, &[d], Packing::Timestamp(d))
            }
            ColumnKind::Time => {
                let d = fsp(&ct);
                f(TIME2, &[d], Packing::Time(d))
            }
            ColumnKind::Utf8Text
            | ColumnKind::OtherText
            | ColumnKind::Binary
            | ColumnKind::Json => {
                if let Some(p) = blob_prefix(&dt) {
                    return Ok(f(BLOB, &[p], Packing::Blob(p)));
                }
                let charset = spec.charset.as_deref().unwrap_or("binary");
                let mb = mbmaxlen(charset).ok_or_else(|| {
                    RowsError(format!(
                        "column `{}`: character set {charset} is not known to the row encoder",
                        spec.name
                    ))
                })? as u32;
                let octets = type_arg(&ct).ok_or_else(unsupported)? * mb;
                match dt.as_str() {
                    "varchar" | "varbinary" => f(
                        VARCHAR,
                        &(octets as u16).to_le_bytes(),
                        Packing::Var(if octets > 255 { 2 } else { 1 }),
                    ),
                    "char" | "binary" => f(
                        STRING,
                        &[
                            STRING ^ ((octets & 0x300) >> 4) as u8,
                            (octets & 0xff) as u8,
                        ],
                        Packing::Fixed {
                            prefix: if octets > 255 { 2 } else { 1 },
                            pad: pad_unit(charset),
                        },
                    ),
                    _ => return Err(unsupported()),
                }
            }
            ColumnKind::Enum => {
                let n = if member_count(&ct)? < 256 { 1 } else { 2 };
                f(STRING, &[ENUM, n], Packing::Enum(n))
            }
            ColumnKind::Set => {
                let n = member_count(&ct)?.div_ceil(8) as u8;
                let n = if n > 4 { 8 } else { n };
                f(STRING, &[SET, n], Packing::Set(n))
            }
            ColumnKind::Geometry => f(GEOMETRY, &[4], Packing::Blob(4)),
            ColumnKind::Inet4 => f(STRING, &[STRING, 4], Packing::Inet4),
            ColumnKind::Inet6 => f(STRING, &[STRING, 16], Packing::Inet6),
            ColumnKind::Uuid => f(STRING, &[STRING, 16], Packing::Uuid),
        })
    }
}

/// A table as its row events describe it: database, name, and every column
/// in table order (generated ones included).
#[derive(Debug, Clone)]
pub struct TableShape {
    /// Database name.
    pub db: String,
    /// Table name.
    pub table: String,
    /// Columns in table order.
    pub columns: Vec<TableColumn>,
}

impl TableShape {
    /// The shape of a snapshot table. Its manifest describes only stored
    /// columns, so a table with generated columns needs their descriptions
    /// from elsewhere ([`TableShape::with_generated`]).
    pub fn from_manifest(db: &Database, t: &Table) -> Result<TableShape, RowsError> {
        Self::with_generated(db, t, &[])
    }

    /// The shape of a snapshot table whose generated columns are described
    /// by `generated` (by name; the manifest lists them in `all_columns`).
    pub fn with_generated(
        db: &Database,
        t: &Table,
        generated: &[ColumnSpec],
    ) -> Result<TableShape, RowsError> {
        let mut columns = Vec::with_capacity(t.all_columns.len());
        for name in &t.all_columns {
            let stored = t.columns.iter().find(|c| &c.name == name);
            let col = match stored {
                Some(spec) => TableColumn {
                    spec: spec.clone(),
                    stored: true,
                },
                None => match generated.iter().find(|c| &c.name == name) {
                    Some(spec) => TableColumn {
                        spec: spec.clone(),
                        stored: false,
                    },
                    None => {
                        return Err(RowsError(format!(
                            "table `{}`.`{}`: column `{name}` is generated and the snapshot does not describe its type; its row events cannot be built",
                            db.name, t.name
                        )))
                    }
                },
            };
            columns.push(col);
        }
        // Stored columns missing from all_columns (the implicit period
        // columns of a system-versioned table come last in the table).
        for spec in &t.columns {
            if !columns.iter().any(|c| c.spec.name == spec.name) {
                columns.push(TableColumn {
                    spec: spec.clone(),
                    stored: true,
                });
            }
        }
        Ok(TableShape {
            db: db.name.clone(),
            table: t.name.clone(),
            columns,
        })
    }
}

/// Appends a length-encoded integer (`net_store_length`).
pub fn push_lenenc(out: &mut Vec<u8>, v: u64) {
    if v < 251 {
        out.push(v as u8);
    } else if v < 1 << 16 {
        out.push(0xfc);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v < 1 << 24 {
        out.push(0xfd);
        out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
    } else {
        out.push(0xfe);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Table-map flag: the null bitmap length is exact.
pub const TM_BIT_LEN_EXACT_F: u16 = 1;

/// The TABLE_MAP_EVENT body of `shape` under `table_id` (48 bits).
pub fn table_map_body(
    table_id: u64,
    shape: &TableShape,
    formats: &[ColumnFormat],
) -> Result<Vec<u8>, RowsError> {
    let name_field = |out: &mut Vec<u8>, what: &str, name: &str| {
        let n = name.len();
        if n > 255 {
            return Err(RowsError(format!(
                "{what} name `{name}` is longer than 255 bytes"
            )));
        }
        out.push(n as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        Ok(())
    };
    let mut out = Vec::with_capacity(32 + shape.db.len() + shape.table.len() + 4 * formats.len());
    out.extend_from_slice(&table_id.to_le_bytes()[..6]);
    out.extend_from_slice(&TM_BIT_LEN_EXACT_F.to_le_bytes());
    name_field(&mut out, "database", &shape.db)?;
    name_field(&mut out, "table", &shape.table)?;
    push_lenenc(&mut out, formats.len() as u64);
    out.extend(formats.iter().map(|f| f.code));
    let meta: Vec<u8> = formats
        .iter()
        .flat_map(|f| f.meta.iter().copied())
        .collect();
    push_lenenc(&mut out, meta.len() as u64);
    out.extend_from_slice(&meta);
    let nullable: Vec<bool> = shape.columns.iter().map(|c| c.spec.nullable).collect();
    super::image::push_bitmap(&mut out, &nullable);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_type_parts() {
        assert_eq!(type_arg("varchar(20)"), Some(20));
        assert_eq!(type_arg("decimal(65,30) unsigned"), Some(65));
        assert_eq!(member_count("enum('a','b','c d','é')").unwrap(), 4);
        assert_eq!(member_count("set('it''s','x,y')").unwrap(), 2);
        assert!(member_count("enum('a'").is_err());
        assert_eq!(fsp("datetime"), 0);
        assert_eq!(fsp("time(6)"), 6);
    }
}
