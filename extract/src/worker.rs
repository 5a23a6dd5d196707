//! Workers: each owns one connection holding the shared snapshot and pulls
//! jobs (a table, or one primary-key range of a large table) from a queue.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use replseed_db::throttle::{Guard, RateLimit};
use replseed_db::{qualified, quote_ident, DbError, Server};
use replseed_stage::layout::chunk_path;
use replseed_stage::manifest::Chunk;
use replseed_stage::types::ColumnKind;
use replseed_stage::{ChunkProps, ChunkWriter, Stage};
use tracing::debug;

use crate::decode::BatchBuilder;
use crate::keys::KeyColumns;
use crate::schema::TablePlan;
use crate::split::KeyRange;
use crate::{ExtractError, Progress};

/// Rows per Arrow batch handed to the Parquet writer.
const BATCH_ROWS: usize = 8192;
/// Bytes per Arrow batch (wide rows, BLOBs).
const BATCH_BYTES: usize = 8 << 20;

/// One unit of work.
#[derive(Debug, Clone)]
pub struct Job {
    /// Index into the table list.
    pub table: usize,
    /// Job number within the table (orders the chunk files).
    pub job: u32,
    /// The part of the table, for split tables.
    pub range: Option<JobRange>,
    /// Estimated rows, for ordering.
    pub est_rows: u64,
}

/// The part of a split table one job reads.
#[derive(Debug, Clone)]
pub enum JobRange {
    /// Inclusive range of a single integer primary key.
    Int(i128, i128),
    /// A range of the table's split key (`split.rs`).
    Key(KeyRange),
}

/// Shared context of the workers.
pub struct Ctx {
    pub server: Server,
    pub stage: Stage,
    pub snapshot: String,
    pub tables: Arc<Vec<TablePlan>>,
    pub props: ChunkProps,
    pub chunk_rows: u64,
    pub chunk_bytes: u64,
    pub progress: Arc<Progress>,
    pub events: Option<tokio::sync::mpsc::UnboundedSender<crate::Event>>,
    /// Per table: jobs not finished yet, chunks written so far.
    pub table_jobs: Arc<Mutex<Vec<(usize, usize)>>>,
    /// `--max-rate`, shared by the workers.
    pub rate: Option<Arc<RateLimit>>,
    /// Pauses the workers while the source is busy.
    pub guard: Option<Guard>,
}

fn as_i128(v: &Value) -> Option<i128> {
    mysql_async::from_value_opt::<i128>(v.clone()).ok()
}

/// Splits large tables into ranges of about `chunk_rows` rows: by
/// arithmetic on a single integer primary key, or along another index by
/// walking it (`split.rs`); a table with no usable index is one job.
/// Largest first.
pub async fn plan_jobs(
    conn: &mut Conn,
    server: &Server,
    tables: &[TablePlan],
    chunk_rows: u64,
) -> Result<Vec<Job>, DbError> {
    let mut jobs = Vec::new();
    for (ti, t) in tables.iter().enumerate() {
        let pk = &t.table.primary_key;
        let int_pk = pk.len() == 1
            && !t.table.system_versioned
            && t.table
                .columns
                .iter()
                .any(|c| c.name == pk[0] && matches!(c.kind, ColumnKind::Int { .. }));
        if int_pk && t.est_rows > chunk_rows + chunk_rows / 2 {
            let col = quote_ident(&pk[0]);
            let sql = format!(
                "SELECT MIN({col}), MAX({col}) FROM {}",
                qualified(&t.db, &t.table.name)
            );
            let r: Option<Row> = conn.query_first(&sql).await.map_err(|e| {
                server.err(
                    format!("reading the key range of {}.{}", t.db, t.table.name),
                    &e,
                )
            })?;
            let bounds = r.and_then(|r| {
                let v = r.unwrap();
                Some((as_i128(&v[0])?, as_i128(&v[1])?))
            });
            if let Some((lo, hi)) = bounds {
                let n = t.est_rows.div_ceil(chunk_rows).max(1) as i128;
                let width = ((hi - lo + 1) + n - 1) / n;
                let mut start = lo;
                let mut job = 0;
                while start <= hi {
                    let end = (start + width - 1).min(hi);
                    jobs.push(Job {
                        table: ti,
                        job,
                        range: Some(JobRange::Int(start, end)),
                        est_rows: t.est_rows / n as u64,
                    });
                    job += 1;
                    start = end + 1;
                }
                continue;
            }
        } else if let Some(key) = t
            .split
            .as_ref()
            .filter(|_| t.est_rows > chunk_rows + chunk_rows / 2)
        {
            let started = std::time::Instant::now();
            let ranges =
                crate::split::ranges(conn, server, &t.db, &t.table.name, key, chunk_rows).await?;
            debug!(table = %format!("{}.{}", t.db, t.table.name), index = %key.index, jobs = ranges.len(),
                   ms = started.elapsed().as_millis() as u64, "split along an index");
            let n = ranges.len() as u64;
            for (job, range) in ranges.into_iter().enumerate() {
                jobs.push(Job {
                    table: ti,
                    job: job as u32,
                    range: Some(JobRange::Key(range)),
                    est_rows: t.est_rows / n,
                });
            }
            continue;
        }
        jobs.push(Job {
            table: ti,
            job: 0,
            range: None,
            est_rows: t.est_rows,
        });
    }
    jobs.sort_by(|a, b| {
        b.est_rows
            .cmp(&a.est_rows)
            .then(a.table.cmp(&b.table))
            .then(a.job.cmp(&b.job))
    });
    Ok(jobs)
}

/// Reads a sequence's row.
pub async fn read_sequence(
    conn: &mut Conn,
    server: &Server,
    db: &str,
    name: &str,
) -> Result<Vec<String>, DbError> {
    let sql = format!(
        "SELECT next_not_cached_value, minimum_value, maximum_value, start_value, increment, cache_size, cycle_option, cycle_count FROM {}",
        qualified(db, name)
    );
    let r: Option<Row> = conn
        .query_first(&sql)
        .await
        .map_err(|e| server.err(format!("reading sequence {db}.{name}"), &e))?;
    Ok(
        r.map(|r| r.unwrap().iter().map(replseed_db::text).collect())
            .unwrap_or_default(),
    )
}

/// Runs jobs until the queue is empty. Returns (table index, chunk) pairs.
pub async fn run_worker(
    ctx: Ctx,
    mut conn: Conn,
    queue: Arc<Mutex<VecDeque<Job>>>,
) -> Result<Vec<(usize, Chunk)>, ExtractError> {
    let mut out = Vec::new();
    loop {
        let job = queue.lock().expect("queue").pop_front();
        let Some(job) = job else { break };
        let chunks = run_job(&ctx, &mut conn, &job).await?;
        let done = {
            let mut tj = ctx.table_jobs.lock().expect("table jobs");
            let e = &mut tj[job.table];
            e.0 -= 1;
            e.1 += chunks.len();
            (e.0 == 0).then_some(e.1)
        };
        if let (Some(n), Some(ev)) = (done, &ctx.events) {
            let tp = &ctx.tables[job.table];
            let _ = ev.send(crate::Event::TableDone {
                database: tp.db.clone(),
                table: tp.table.name.clone(),
                chunks: n,
            });
        }
        out.extend(chunks.into_iter().map(|c| (job.table, c)));
    }
    let _ = conn.query_drop("COMMIT").await;
    let _ = conn.disconnect().await;
    Ok(out)
}

struct Open {
    writer: ChunkWriter,
    /// Key of the first and of the last row written so far.
    first: Option<Vec<Option<String>>>,
    last: Vec<Option<String>>,
}

/// Writes a batch to the open chunk and notes its key range, read back from
/// the batch itself (no per-row copies of the key).
async fn write_batch(
    ctx: &Ctx,
    o: &mut Open,
    keys: Option<&KeyColumns>,
    builder: &mut BatchBuilder,
) -> Result<(), ExtractError> {
    // Between batches: wait out a busy source, and keep to the rate.
    if let Some(g) = &ctx.guard {
        g.wait().await;
    }
    if let Some(r) = &ctx.rate {
        r.take(builder.byte_size() as u64).await;
    }
    let batch = builder.finish();
    let n = batch.num_rows();
    if n == 0 {
        return Ok(());
    }
    if let Some(k) = keys {
        if o.first.is_none() {
            o.first = Some(k.render(&batch, 0));
        }
        o.last = k.render(&batch, n - 1);
    }
    o.writer.write(&batch).await?;
    ctx.progress.rows.fetch_add(n as u64, Ordering::Relaxed);
    Ok(())
}

async fn run_job(ctx: &Ctx, conn: &mut Conn, job: &Job) -> Result<Vec<Chunk>, ExtractError> {
    let tp = &ctx.tables[job.table];
    let t = &tp.table;
    let full = format!("{}.{}", tp.db, t.name);
    // The stored columns, then the member numbers of ENUM and SET columns.
    let mut cols: Vec<String> = t.columns.iter().map(|c| quote_ident(&c.name)).collect();
    cols.extend(
        t.columns
            .iter()
            .filter(|c| c.index_column.is_some())
            .map(|c| format!("CAST({} AS UNSIGNED)", quote_ident(&c.name))),
    );
    let mut sql = format!(
        "SELECT {} FROM {}",
        cols.join(", "),
        qualified(&tp.db, &t.name)
    );
    if t.system_versioned {
        sql.push_str(" FOR SYSTEM_TIME ALL");
    }
    let mut params = Vec::new();
    match &job.range {
        None => {}
        Some(JobRange::Int(lo, hi)) => {
            sql.push_str(&format!(
                " WHERE {} BETWEEN ? AND ?",
                quote_ident(&t.primary_key[0])
            ));
            for v in [*lo, *hi] {
                params.push(if v < 0 {
                    Value::Int(v as i64)
                } else {
                    Value::UInt(v as u64)
                });
            }
        }
        Some(JobRange::Key(range)) => {
            let key = tp.split.as_ref().expect("a split table has a split key");
            let (cond, p) = key.condition(range);
            sql.push_str(&format!(" {} WHERE {cond}", key.hint()));
            params = p;
        }
    }
    if !t.primary_key.is_empty() {
        let order: Vec<String> = t.primary_key.iter().map(|c| quote_ident(c)).collect();
        sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    }
    debug!(table = %full, job = job.job, %sql, "job start");

    let server = &ctx.server;
    let mut result = conn
        .exec_iter(sql.as_str(), params)
        .await
        .map_err(|e| server.err(format!("reading {full}"), &e))?;
    let mut builder = BatchBuilder::new(&t.columns);
    let schema = builder.schema();
    let keys = KeyColumns::new(t, &schema);
    let mut chunks = Vec::new();
    let mut open: Option<Open> = None;
    let mut part = 0u32;

    loop {
        let row = result
            .next()
            .await
            .map_err(|e| server.err(format!("reading {full}"), &e))?;
        let Some(row) = row else { break };
        let values = row.unwrap();
        if open.is_none() {
            let rel = chunk_path(&ctx.snapshot, &tp.db, &t.name, job.job, part);
            let writer = ctx.stage.chunk_writer(&rel, schema.clone(), &ctx.props)?;
            open = Some(Open {
                writer,
                first: None,
                last: Vec::new(),
            });
        }
        builder.push_row(values).map_err(|e| ExtractError::Value {
            table: full.clone(),
            chunk: chunk_path(&ctx.snapshot, &tp.db, &t.name, job.job, part),
            detail: e.to_string(),
        })?;
        if builder.len() >= BATCH_ROWS || builder.byte_size() >= BATCH_BYTES {
            let o = open.as_mut().expect("open chunk");
            write_batch(ctx, o, keys.as_ref(), &mut builder).await?;
            if o.writer.rows() >= ctx.chunk_rows || o.writer.bytes() >= ctx.chunk_bytes {
                let o = open.take().expect("open chunk");
                chunks.push(close(ctx, tp, o).await?);
                part += 1;
            }
        }
    }
    drop(result);
    if let Some(mut o) = open.take() {
        write_batch(ctx, &mut o, keys.as_ref(), &mut builder).await?;
        chunks.push(close(ctx, tp, o).await?);
    }
    Ok(chunks)
}

async fn close(ctx: &Ctx, tp: &TablePlan, o: Open) -> Result<Chunk, ExtractError> {
    let mut chunk = o.writer.finish().await?;
    if let Some(first) = o.first {
        chunk.key_range = Some(replseed_stage::manifest::KeyRange {
            first,
            last: o.last,
        });
    }
    if let Some(ev) = &ctx.events {
        let _ = ev.send(crate::Event::Chunk {
            database: tp.db.clone(),
            table: tp.table.name.clone(),
            chunk: chunk.clone(),
        });
    }
    ctx.progress.chunks.fetch_add(1, Ordering::Relaxed);
    ctx.progress.bytes.fetch_add(chunk.bytes, Ordering::Relaxed);
    Ok(chunk)
}
