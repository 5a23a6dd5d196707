//! Loading one chunk: Parquet rows streamed as `LOAD DATA LOCAL INFILE`
//! text, in one transaction with the chunk's progress row.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::record_batch::RecordBatchReader;
use bytes::Bytes;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use replseed_db::{qualified, quote_ident};
use replseed_stage::manifest::{Chunk, Table};
use replseed_stage::open_chunk;
use replseed_stage::types::ColumnKind;

use crate::bookkeeping::RECORD_CHUNK;
use crate::encode::TextEncoder;
use crate::{LoadError, LoadPlan, Progress};

/// Bytes handed to the server per LOAD DATA packet. The driver copies each
/// into a pooled buffer (kept at 1.25 MiB at most, see
/// `replseed_db::bound_driver_buffers`). Pieces of 128 KiB made one
/// `LOAD DATA` stream slower: one 4M-row table loaded one chunk at a time
/// took 61-71 s against 47-51 s with 1 MiB pieces, in alternating runs. A
/// piece's buffer ([`PIECE_BUF`]) stays under
/// [`replseed_stage::MMAP_THRESHOLD`], so that it is reused rather than
/// faulted in.
const PIECE: usize = 896 << 10;
/// A piece's buffer: PIECE and one encoded slice's overshoot.
const PIECE_BUF: usize = PIECE + (96 << 10);
const _: () = assert!(PIECE_BUF < replseed_stage::MMAP_THRESHOLD);

/// The producer's error when the statement stopped reading its rows: a
/// consequence of the statement's failure, never its cause.
const STOPPED: &str = "the server stopped reading the chunk";

/// The `LOAD DATA` statement for a table's stored columns.
pub fn load_statement(db: &str, t: &Table) -> String {
    let mut cols = Vec::with_capacity(t.columns.len());
    let mut sets = Vec::new();
    for (i, c) in t.columns.iter().enumerate() {
        let var = format!("@c{i}");
        match c.load_conversion(&var) {
            Some(expr) => {
                sets.push(format!("{} = {expr}", quote_ident(&c.name)));
                cols.push(var);
            }
            None => cols.push(quote_ident(&c.name)),
        }
    }
    let mut sql = format!(
        "LOAD DATA LOCAL INFILE 'replseed-chunk' INTO TABLE {} CHARACTER SET binary \
         FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({})",
        qualified(db, &t.name),
        cols.join(", ")
    );
    if !sets.is_empty() {
        sql.push_str(" SET ");
        sql.push_str(&sets.join(", "));
    }
    sql
}

/// What the producer read from a chunk file.
struct Produced {
    rows: u64,
    /// ENUM cells holding the invalid value: each gives one expected warning.
    invalid_enums: u64,
}

/// The rows of one chunk sent to the target so far: counted in
/// [`Progress::rows_sending`] while the chunk is loaded, taken out of it
/// when the chunk ends (committed, its rows are in [`Progress::rows`]).
struct Sending {
    progress: Arc<Progress>,
    rows: AtomicU64,
}

impl Sending {
    fn add(&self, n: u64) {
        self.rows.fetch_add(n, Ordering::Relaxed);
        self.progress.rows_sending.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        let n = self.rows.load(Ordering::Relaxed);
        self.progress.rows_sending.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Reads a Parquet file and sends its rows as LOAD DATA text, in pieces.
fn produce(
    path: PathBuf,
    table: Table,
    key: String,
    tx: tokio::sync::mpsc::Sender<std::io::Result<(Bytes, u64)>>,
) -> Result<Produced, String> {
    let file =
        std::fs::File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let (reader, width) = open_chunk(file, 4096).map_err(|e| e.to_string())?;
    // Encoded slices sized by bytes too, for wide rows (blobs).
    let slice = (PIECE as u64 / width.row_bytes).clamp(1, 256) as usize;
    let encoder =
        TextEncoder::new(&table.columns, reader.schema().as_ref()).map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(PIECE_BUF);
    let mut rows = 0u64;
    // Rows encoded into `buf`, not yet sent.
    let mut in_buf = 0u64;
    let mut invalid_enums = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| format!("decoding {key}: {e}"))?;
        let n = batch.num_rows();
        invalid_enums += encoder.invalid_enum_cells(&batch, 0, n);
        let mut from = 0;
        while from < n {
            // Encode in slices so that one piece stays near PIECE bytes.
            let to = (from + slice).min(n);
            encoder.encode_rows(&batch, from, to, &mut buf);
            in_buf += (to - from) as u64;
            from = to;
            if buf.len() >= PIECE {
                let piece = Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(PIECE_BUF)));
                if tx
                    .blocking_send(Ok((piece, std::mem::take(&mut in_buf))))
                    .is_err()
                {
                    return Err(STOPPED.into());
                }
            }
        }
        rows += n as u64;
    }
    if !buf.is_empty() && tx.blocking_send(Ok((Bytes::from(buf), in_buf))).is_err() {
        return Err(STOPPED.into());
    }
    Ok(Produced {
        rows,
        invalid_enums,
    })
}

/// The value a LOAD DATA warning is about (`... for column 'c' at row N`),
/// read back from the chunk file, as `; column `c`, row N: value 'v'`.
fn warned_value(path: &std::path::Path, table: &Table, message: &str) -> Option<String> {
    let col = message.split("column '").nth(1)?.split('\'').next()?;
    let row: usize = message
        .split("at row ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let index = table.columns.iter().position(|c| c.name == col)?;
    let file = std::fs::File::open(path).ok()?;
    let (reader, _) = open_chunk(file, 1024).ok()?;
    let encoder = TextEncoder::new(&table.columns, reader.schema().as_ref()).ok()?;
    let mut skip = row.checked_sub(1)?;
    for batch in reader {
        let batch = batch.ok()?;
        if skip < batch.num_rows() {
            let v = encoder.value_text(&batch, index, skip);
            let v = v.map(|v| format!("'{}'", v.chars().take(200).collect::<String>()));
            return Some(format!(
                "; column `{col}`, row {row}: value {}",
                v.unwrap_or_else(|| "NULL".into())
            ));
        }
        skip -= batch.num_rows();
    }
    None
}

/// Loads a chunk file into its table and records it, in one transaction
/// (for a transactional table). Returns the rows loaded, or `None` when an
/// earlier try of this chunk had committed it.
/// The target, the snapshot and `--max-load-rate` come from `plan`.
pub async fn load_chunk(
    conn: &mut Conn,
    plan: &LoadPlan,
    db: &str,
    table: &Table,
    chunk: &Chunk,
    file: PathBuf,
    progress: &Arc<Progress>,
) -> Result<Option<u64>, LoadError> {
    let server = &plan.target;
    let snapshot = plan.manifest.snapshot.as_str();
    let rate = plan.rate.clone();
    let transactional = table.transactional;
    let what = |s: &str| format!("{s} chunk `{}` into {db}.{}", chunk.path, table.name);
    let record = (
        snapshot,
        &chunk.path,
        &chunk.path,
        db,
        &table.name,
        chunk.rows,
    );
    if transactional {
        conn.query_drop("START TRANSACTION")
            .await
            .map_err(|e| server.err(what("starting the transaction for"), &e))?;
        // The chunk's progress row first: a second try of a chunk whose
        // first try is still open on the server (its connection cut) waits
        // here for it, and finds the row (1062) if that try committed. So a
        // retried chunk is loaded exactly once.
        if let Err(e) = conn.exec_drop(RECORD_CHUNK, record).await {
            let _ = conn.query_drop("ROLLBACK").await;
            return match &e {
                mysql_async::Error::Server(s) if s.code == 1062 => Ok(None),
                _ => Err(server.err(what("recording"), &e).into()),
            };
        }
    }
    let path = file.clone();
    // Each piece travels with its row count, counted as sent when the
    // target reads it (not when it is queued: a small chunk's pieces all
    // fit in the queue at once).
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<(Bytes, u64)>>(4);
    let t2 = table.clone();
    let key = chunk.path.clone();
    // Held until the chunk ends: its rows stay counted until then.
    let sending = Arc::new(Sending {
        progress: progress.clone(),
        rows: AtomicU64::new(0),
    });
    let sent = sending.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let txe = tx.clone();
        let r = produce(file, t2, key, tx);
        if let Err(e) = &r {
            let _ = txe.blocking_send(Err(std::io::Error::other(e.clone())));
        }
        r
    });
    conn.set_infile_handler(async move {
        let stream = futures::stream::unfold((rx, rate, sent), |(mut rx, rate, sent)| async move {
            let piece = rx.recv().await?;
            if let (Some(r), Ok((b, _))) = (&rate, &piece) {
                r.take(b.len() as u64).await;
            }
            let piece = piece.map(|(b, rows)| {
                sent.add(rows);
                b
            });
            Some((piece, (rx, rate, sent)))
        });
        Ok(stream.boxed())
    });
    let loaded = conn.query_drop(load_statement(db, table)).await;
    let affected = conn.affected_rows();
    let warnings = conn.get_warnings();
    // A statement that failed before it read the file (its connection lost)
    // leaves the handler, and with it the producer's channel, in the
    // session: replace it, so that the producer stops.
    conn.set_infile_handler(async { Ok(futures::stream::empty().boxed()) });
    let produced = producer.await.expect("producer task");
    if let Err(e) = loaded {
        if transactional {
            let _ = conn.query_drop("ROLLBACK").await;
        }
        // A Parquet file that could not be read ends the statement: then the
        // producer's error is the cause. Otherwise the statement's is (a
        // lost connection stops the producer too).
        match produced {
            Err(p) if p != STOPPED => {
                return Err(LoadError::Chunk {
                    chunk: chunk.path.clone(),
                    detail: format!("reading the Parquet file failed: {p}"),
                })
            }
            _ => return Err(server.err(what("loading"), &e).into()),
        }
    }
    let produced = produced.map_err(|p| LoadError::Chunk {
        chunk: chunk.path.clone(),
        detail: p,
    })?;
    let Produced {
        rows: produced,
        invalid_enums,
    } = produced;
    let shown: Vec<(String, u32, String)> = if warnings > 0 {
        conn.query("SHOW WARNINGS").await.unwrap_or_default()
    } else {
        Vec::new()
    };
    // Each ENUM cell holding the invalid value is stored with one warning
    // 1265 on that column; any other warning means a changed value.
    let enum_cols: Vec<&str> = table
        .columns
        .iter()
        .filter(|c| c.kind == ColumnKind::Enum && c.index_column.is_some())
        .map(|c| c.name.as_str())
        .collect();
    let expected = |(_, code, msg): &(String, u32, String)| {
        *code == 1265
            && enum_cols
                .iter()
                .any(|c| msg.contains(&format!("column '{c}'")))
    };
    let only_expected =
        u64::from(warnings) == invalid_enums.min(u64::from(u16::MAX)) && shown.iter().all(expected);
    if warnings > 0 && !only_expected {
        // The server changed a value (truncated, converted, clipped): the
        // copy would not be exact. Nothing of the chunk stays.
        if transactional {
            let _ = conn.query_drop("ROLLBACK").await;
        }
        let first = shown
            .iter()
            .find(|w| !expected(w))
            .or(shown.first())
            .map(|(_, code, msg)| {
                let value = warned_value(&path, table, msg).unwrap_or_default();
                format!("warning {code}: {msg}{value}")
            });
        return Err(LoadError::Chunk {
            chunk: chunk.path.clone(),
            detail: format!(
                "the target changed a value while loading ({}; {warnings} warning(s) in all): the target's schema or settings differ from the master's",
                first.unwrap_or_else(|| "no detail".into())
            ),
        });
    }
    if affected != chunk.rows || produced != chunk.rows {
        let warnings: Vec<(String, u32, String)> = conn
            .query("SHOW WARNINGS LIMIT 5")
            .await
            .unwrap_or_default();
        if transactional {
            let _ = conn.query_drop("ROLLBACK").await;
        }
        return Err(LoadError::Chunk {
            chunk: chunk.path.clone(),
            detail: format!(
                "the server loaded {affected} rows of {} read (manifest: {}); warnings: {warnings:?}",
                produced, chunk.rows
            ),
        });
    }
    if transactional {
        conn.query_drop("COMMIT")
            .await
            .map_err(|e| server.err(what("committing"), &e))?;
    } else {
        conn.exec_drop(RECORD_CHUNK, record)
            .await
            .map_err(|e| server.err(what("recording"), &e))?;
    }
    Ok(Some(affected))
}
