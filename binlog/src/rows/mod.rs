//! Rows as row events: the snapshot's Parquet rows in MariaDB's binary row
//! format, so that a replica's own applier can load them.
//!
//! No crate builds these events (mysql_common only parses them). Layouts are
//! MariaDB 10.11's (`sql/log_event_server.cc`, `sql/rpl_record.cc`,
//! `sql/field.cc`), checked byte for byte against what a real master writes
//! (`tests/row_encoder.rs`).
//!
//! * [`tablemap`]: each column's binlog type, metadata and value layout
//!   (decided once, from the manifest's [`ColumnSpec`]), and the
//!   TABLE_MAP_EVENT body.
//! * [`image`]: one row's image (null bitmap, then the packed values of the
//!   present columns) from an Arrow batch, and the column bitmaps.
//! * [`values`]: integers, floats, BIT, strings, ENUM/SET, INET4/INET6/UUID.
//! * [`decimal`]: DECIMAL's binary form.
//! * [`temporal`]: YEAR, DATE, TIME2, DATETIME2, TIMESTAMP2.
//! * [`write_rows`]: WRITE_ROWS_EVENT_V1 bodies of bounded size, and the
//!   per-chunk encoder ([`RowsEncoder`]): one table map, then Write_rows
//!   events, the last one ending the statement.
//!
//! Generated columns are in the table map (the replica matches columns by
//! position) but not in the row image: the snapshot does not store them, and
//! the replica's applier computes them when it writes the row. (A master
//! with `binlog_row_image=FULL` writes them, VIRTUAL ones too: this is the
//! one place where our events differ from its.) `docs/design/binlog-server.md`
//! section 6 has what was checked against a master.

pub mod decimal;
pub mod image;
pub mod tablemap;
pub mod temporal;
pub mod values;
pub mod write_rows;

use replseed_stage::types::ColumnSpec;

pub use tablemap::{ColumnFormat, TableShape};
pub use write_rows::{RowsEncoder, RowsWriter, DEFAULT_MAX_EVENT_DATA};

/// A value or a table the encoder cannot put in a row event.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RowsError(pub String);

/// One column of a table as the encoder sees it: its stored description and
/// whether the chunks hold its values (generated columns are not stored).
#[derive(Debug, Clone)]
pub struct TableColumn {
    /// The column's type, charset and sidecars.
    pub spec: ColumnSpec,
    /// Whether the chunks hold it (false for generated columns).
    pub stored: bool,
}
