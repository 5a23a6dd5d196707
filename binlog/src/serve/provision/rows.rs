//! One chunk's rows as one transaction's events: the chunk is fetched
//! (size and SHA-256 checked against the manifest), read in batches and
//! encoded by the row encoder (`crate::rows`) into a table map and
//! Write_rows events, foreign key checks off as `load` has them.

use std::path::Path;

use replseed_stage::manifest::Chunk;
use replseed_stage::{open_chunk, Stage};

use crate::event::RawEvent;
use crate::rows::write_rows::NO_FOREIGN_KEY_CHECKS_F;
use crate::rows::{RowsEncoder, TableShape};

/// Rows per batch read from a chunk.
const BATCH_ROWS: usize = 4096;

/// The table map and Write_rows events of `chunk`, under `server_id`;
/// `Err` names the chunk's object key and what is wrong.
pub async fn chunk_events(
    stage: &Stage,
    spool: &Path,
    shape: &TableShape,
    table_id: u64,
    chunk: &Chunk,
    server_id: u32,
    checksummed: bool,
) -> Result<Vec<RawEvent>, String> {
    let key = chunk.path.clone();
    let local = stage
        .fetch_chunk(chunk, spool)
        .await
        .map_err(|e| format!("replseed serve: chunk `{key}`: {e}"))?;
    let shape = shape.clone();
    tokio::task::spawn_blocking(move || {
        let bad = |e: String| format!("replseed serve: chunk `{key}`: {e}");
        let enc = RowsEncoder::new(shape, table_id)
            .map_err(|e| bad(e.0))?
            .with_flags(NO_FOREIGN_KEY_CHECKS_F);
        let f = std::fs::File::open(&local.path).map_err(|e| bad(e.to_string()))?;
        let (reader, _) = open_chunk(f, BATCH_ROWS).map_err(|e| bad(e.to_string()))?;
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        enc.chunk_events(&batches, server_id, checksummed)
            .map_err(|e| bad(e.0))
    })
    .await
    .map_err(|e| format!("replseed serve: encoding a chunk failed: {e}"))?
}
