//! WRITE_ROWS_EVENT_V1 (type 23, what a 10.11 master writes) and the
//! per-chunk encoder.
//!
//! Body (`Rows_log_event::write_data_header/body`): table_id (6 bytes),
//! flags (2), the column count (length-encoded), the present-columns
//! bitmap, then row images back to back. A master starts a new event when
//! the next row would take the event's data past `binlog_row_event_max_size`
//! (8192 by default; `THD::binlog_prepare_pending_rows_event`), so a row
//! larger than that travels alone; only the last event of a statement has
//! `STMT_END_F`, which also ends the table map's life on the replica.

use arrow::array::RecordBatch;

use super::image::{push_bitmap, BoundBatch};
use super::tablemap::{push_lenenc, table_map_body, ColumnFormat, TableShape};
use super::RowsError;
use crate::event::{self, RawEvent};

/// TABLE_MAP_EVENT.
pub const TABLE_MAP_EVENT: u8 = 19;
/// WRITE_ROWS_EVENT_V1.
pub const WRITE_ROWS_EVENT_V1: u8 = 23;
/// Rows flag: the last event of its statement.
pub const STMT_END_F: u16 = 0x0001;
/// Rows flag: the applier skips foreign key checks.
pub const NO_FOREIGN_KEY_CHECKS_F: u16 = 0x0002;
/// Rows flag: the applier relaxes unique checks.
pub const RELAXED_UNIQUE_CHECKS_F: u16 = 0x0004;
/// The master's default `binlog_row_event_max_size`: the bound on a rows
/// event's data (post-header and body).
pub const DEFAULT_MAX_EVENT_DATA: usize = 8192;
/// Length of the V1 rows post-header (table_id and flags).
const ROWS_HEADER_LEN_V1: usize = 8;

/// Encodes one table's rows: its table map, then Write_rows events.
#[derive(Debug, Clone)]
pub struct RowsEncoder {
    shape: TableShape,
    formats: Vec<ColumnFormat>,
    table_id: u64,
    max_data: usize,
    flags: u16,
}

impl RowsEncoder {
    /// An encoder for `shape` under `table_id` (48 bits, any number the
    /// stream does not use for another table at the same time).
    pub fn new(shape: TableShape, table_id: u64) -> Result<RowsEncoder, RowsError> {
        let formats = shape
            .columns
            .iter()
            .map(|c| ColumnFormat::of(&c.spec))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RowsError(format!("table `{}`.`{}`: {}", shape.db, shape.table, e.0)))?;
        if table_id >> 48 != 0 {
            return Err(RowsError(format!(
                "table id {table_id} does not fit 48 bits"
            )));
        }
        Ok(RowsEncoder {
            shape,
            formats,
            table_id,
            max_data: DEFAULT_MAX_EVENT_DATA,
            flags: 0,
        })
    }

    /// Bounds each Write_rows event's data (post-header and body) to
    /// `bytes`, as `binlog_row_event_max_size` does (a single larger row
    /// still makes one event).
    pub fn with_max_event_data(mut self, bytes: usize) -> RowsEncoder {
        self.max_data = bytes;
        self
    }

    /// Rows flags every event carries besides `STMT_END_F` (e.g.
    /// [`NO_FOREIGN_KEY_CHECKS_F`]).
    pub fn with_flags(mut self, flags: u16) -> RowsEncoder {
        self.flags = flags & !STMT_END_F;
        self
    }

    /// The table's shape.
    pub fn shape(&self) -> &TableShape {
        &self.shape
    }

    /// Each column's binlog format, in table order.
    pub fn formats(&self) -> &[ColumnFormat] {
        &self.formats
    }

    /// The TABLE_MAP_EVENT body.
    pub fn table_map_body(&self) -> Result<Vec<u8>, RowsError> {
        table_map_body(self.table_id, &self.shape, &self.formats)
    }

    /// The TABLE_MAP_EVENT, header and (with `checksummed`) CRC32 included.
    pub fn table_map_event(
        &self,
        server_id: u32,
        checksummed: bool,
    ) -> Result<RawEvent, RowsError> {
        Ok(event::build(
            TABLE_MAP_EVENT,
            server_id,
            0,
            &self.table_map_body()?,
            checksummed,
        ))
    }

    /// A writer of one statement's Write_rows bodies.
    pub fn writer(&self) -> RowsWriter<'_> {
        let present: Vec<bool> = self.shape.columns.iter().map(|c| c.stored).collect();
        let mut head = Vec::with_capacity(16 + present.len() / 8);
        head.extend_from_slice(&self.table_id.to_le_bytes()[..6]);
        head.extend_from_slice(&self.flags.to_le_bytes());
        push_lenenc(&mut head, present.len() as u64);
        push_bitmap(&mut head, &present);
        RowsWriter {
            enc: self,
            current: head.clone(),
            head,
            rows_in_current: 0,
            row: Vec::new(),
        }
    }

    /// One chunk's events: the table map, then its rows in Write_rows events
    /// of bounded size, the last one ending the statement (a chunk of no
    /// rows gives the table map alone).
    pub fn chunk_events<'b>(
        &self,
        batches: impl IntoIterator<Item = &'b RecordBatch>,
        server_id: u32,
        checksummed: bool,
    ) -> Result<Vec<RawEvent>, RowsError> {
        let mut out = vec![self.table_map_event(server_id, checksummed)?];
        let mut w = self.writer();
        let mut bodies = Vec::new();
        for b in batches {
            w.push_batch(b, &mut bodies)?;
        }
        bodies.extend(w.finish());
        out.extend(
            bodies
                .iter()
                .map(|body| event::build(WRITE_ROWS_EVENT_V1, server_id, 0, body, checksummed)),
        );
        Ok(out)
    }
}

/// Builds one statement's Write_rows bodies from batches, row by row.
pub struct RowsWriter<'e> {
    enc: &'e RowsEncoder,
    /// Post-header and column bitmap: every body starts with it.
    head: Vec<u8>,
    current: Vec<u8>,
    rows_in_current: usize,
    row: Vec<u8>,
}

impl RowsWriter<'_> {
    /// Adds a batch's rows; bodies that are complete are appended to `done`
    /// (without `STMT_END_F`).
    pub fn push_batch(
        &mut self,
        batch: &RecordBatch,
        done: &mut Vec<Vec<u8>>,
    ) -> Result<(), RowsError> {
        let enc = self.enc;
        let bound = BoundBatch::bind(batch, &enc.shape, &enc.formats).map_err(|e| {
            RowsError(format!(
                "table `{}`.`{}`: {}",
                enc.shape.db, enc.shape.table, e.0
            ))
        })?;
        for r in 0..bound.rows() {
            self.row.clear();
            bound.push_row(r, &mut self.row).map_err(|e| {
                RowsError(format!(
                    "table `{}`.`{}`: {}",
                    enc.shape.db, enc.shape.table, e.0
                ))
            })?;
            // The head holds the post-header, so the current data size is
            // its length (`Rows_log_event::get_data_size`).
            if self.rows_in_current > 0 && self.current.len() + self.row.len() > enc.max_data {
                let full = std::mem::replace(&mut self.current, self.head.clone());
                done.push(full);
                self.rows_in_current = 0;
            }
            debug_assert!(ROWS_HEADER_LEN_V1 <= self.head.len());
            self.current.extend_from_slice(&self.row);
            self.rows_in_current += 1;
        }
        Ok(())
    }

    /// The last body, with `STMT_END_F`; `None` when no row came.
    pub fn finish(mut self) -> Option<Vec<u8>> {
        if self.rows_in_current == 0 {
            return None;
        }
        let flags = self.enc.flags | STMT_END_F;
        self.current[6..8].copy_from_slice(&flags.to_le_bytes());
        Some(self.current)
    }
}
