//! Chunk key ranges: the primary key of a chunk's first and last rows, for
//! the manifest (informative: readers and operators see which keys a chunk
//! holds; the loader does not need them).

use arrow::array::{Array, StringArray};
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use replseed_stage::manifest::Table;

/// Where a table's key columns are in its chunk batches.
#[derive(Debug, Clone)]
pub struct KeyColumns {
    /// Per key column: the natural column and its raw sidecar, if any.
    columns: Vec<(usize, Option<usize>)>,
}

impl KeyColumns {
    /// The key columns of `table` in batches of `schema`; `None` for a
    /// table without a primary key.
    pub fn new(table: &Table, schema: &Schema) -> Option<KeyColumns> {
        let columns: Vec<_> = table
            .primary_key
            .iter()
            .filter_map(|k| table.columns.iter().find(|c| &c.name == k))
            .map(|c| {
                let natural = schema.index_of(&c.name).expect("key column in the schema");
                let raw = c
                    .raw_column
                    .as_ref()
                    .map(|r| schema.index_of(r).expect("sidecar in the schema"));
                (natural, raw)
            })
            .collect();
        (!columns.is_empty()).then_some(KeyColumns { columns })
    }

    /// The key of one row as text (Arrow's display form; the raw sidecar's
    /// text for a date the natural column cannot hold); `None` for NULL.
    pub fn render(&self, batch: &RecordBatch, row: usize) -> Vec<Option<String>> {
        let options = FormatOptions::default();
        self.columns
            .iter()
            .map(|&(natural, raw)| {
                let arr = batch.column(natural);
                if arr.is_null(row) {
                    let raw = raw?;
                    let r = batch.column(raw).as_any().downcast_ref::<StringArray>()?;
                    return (!r.is_null(row)).then(|| r.value(row).to_string());
                }
                let f = ArrayFormatter::try_new(arr.as_ref(), &options).ok()?;
                Some(f.value(row).to_string())
            })
            .collect()
    }
}
