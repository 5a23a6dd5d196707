//! The scheduler: chunks go to a pool of load sessions, biggest tables
//! first; when the last chunk of a table is in, its indexes are built. A
//! load that follows an extract turns the extract's events into work as
//! they come. The first worker to fail stops the others, and its error is
//! the one reported.
//!
//! The chunks of an InnoDB table with an AUTO_INCREMENT column load one at a
//! time when the target runs `innodb_autoinc_lock_mode` 0 or 1 (1 is
//! MariaDB's default): there every `LOAD DATA` holds the table's AUTO-INC
//! lock to its end, so parallel chunks of such a table only queue on the
//! server (and fail with ERROR 1205 under a short
//! `innodb_lock_wait_timeout`). A worker that meets a chunk of a table busy
//! with another worker parks it for that worker and takes other work.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use replseed_stage::manifest::{Chunk, Manifest};
use replseed_stage::SnapshotEvent;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::objects::{finish_table, TableToLoad};
use crate::{chunks, session, LoadError, LoadPlan, Progress};

struct TableWork {
    table: TableToLoad,
    /// Chunks loaded (by this run or an earlier one).
    loaded: usize,
    /// Chunks the table has, once known.
    total: Option<usize>,
    /// Indexes built and state recorded (exactly once).
    finished: bool,
}

impl TableWork {
    /// Whether this call is the one that must finish the table.
    fn take_finish(&mut self) -> bool {
        if !self.finished && self.total == Some(self.loaded) {
            self.finished = true;
            true
        } else {
            false
        }
    }
}

/// Work for the load workers.
enum Item {
    /// Load a chunk of the table with this index.
    Chunk(usize, Chunk),
    /// Build the table's deferred indexes (all its chunks are in).
    Finish(usize),
}

type Queue = Arc<tokio::sync::Mutex<UnboundedReceiver<Item>>>;
type Work = Arc<Mutex<Vec<TableWork>>>;

/// Tables whose chunks load one at a time: for each, whether a worker is
/// loading one of its chunks, and the chunks parked for that worker.
#[derive(Default)]
struct OneAtATime {
    tables: HashMap<usize, (bool, std::collections::VecDeque<Chunk>)>,
}

impl OneAtATime {
    /// Whether the caller may load this chunk of table `ti` now; if not,
    /// the chunk is parked for the worker that holds the table.
    fn start(&mut self, ti: usize, chunk: &Chunk) -> bool {
        match self.tables.get_mut(&ti) {
            None => true,
            Some((busy, parked)) if *busy => {
                parked.push_back(chunk.clone());
                false
            }
            Some((busy, _)) => {
                *busy = true;
                true
            }
        }
    }

    /// After loading a chunk of table `ti`: its next parked chunk, which the
    /// caller loads next (the table stays held), or none (released).
    fn next(&mut self, ti: usize) -> Option<Chunk> {
        let (busy, parked) = self.tables.get_mut(&ti)?;
        let next = parked.pop_front();
        *busy = next.is_some();
        next
    }
}

/// Whether the target takes a table-wide AUTO-INC lock for `LOAD DATA`
/// (`innodb_autoinc_lock_mode` below 2).
async fn autoinc_table_lock(conn: &mut Conn) -> bool {
    let mode: Option<u64> = conn
        .query_first("SELECT @@innodb_autoinc_lock_mode")
        .await
        .ok()
        .flatten();
    mode.is_none_or(|m| m < 2)
}

/// What the scheduler did.
pub struct Scheduled {
    /// Chunks an earlier run had loaded (skipped).
    pub resumed: u64,
    /// The published manifest, when following an extract.
    pub published: Option<Arc<Manifest>>,
}

/// Loads every chunk of `tables` not in `done`, with `plan.threads`
/// sessions. With `follow`, chunks are taken from the extract's events
/// until it publishes the snapshot.
pub async fn run(
    plan: &LoadPlan,
    tables: Vec<TableToLoad>,
    done: &HashSet<String>,
    follow: Option<UnboundedReceiver<SnapshotEvent>>,
    progress: &Arc<Progress>,
) -> Result<Scheduled, LoadError> {
    let mut work: Vec<TableWork> = tables
        .into_iter()
        .map(|table| TableWork {
            table,
            loaded: 0,
            total: None,
            finished: false,
        })
        .collect();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Item>();
    let mut resumed = 0u64;
    if follow.is_none() {
        resumed = queue_snapshot(&mut work, done, &tx, progress);
        if resumed > 0 {
            info!(snapshot = %plan.manifest.snapshot, target = %plan.target.addr(), resumed, "resuming: chunks already loaded are skipped");
        }
    }

    progress.set_phase("loading chunks");
    let mut conns = Vec::new();
    for _ in 0..plan.threads.max(1) {
        conns.push(session::session_retrying(&plan.target).await?);
    }
    let mut serial = OneAtATime::default();
    if conns.len() > 1 && autoinc_table_lock(&mut conns[0]).await {
        for (ti, w) in work.iter().enumerate() {
            let t = &w.table.table;
            if t.transactional && t.columns.iter().any(|c| c.auto_increment) {
                serial.tables.insert(ti, Default::default());
            }
        }
    }
    let serial = Arc::new(Mutex::new(serial));
    let work: Work = Arc::new(Mutex::new(work));
    let queue: Queue = Arc::new(tokio::sync::Mutex::new(rx));
    let mut workers = JoinSet::new();
    for conn in conns {
        workers.spawn(load_worker(
            conn,
            plan.clone(),
            work.clone(),
            queue.clone(),
            serial.clone(),
            progress.clone(),
        ));
    }
    let mut published = None;
    if let Some(events) = follow {
        let fed = feed(plan, events, &work, done, &tx, progress, &mut workers).await;
        match fed {
            Ok((n, manifest)) => {
                resumed += n;
                published = Some(manifest);
            }
            Err(e) => {
                workers.abort_all();
                while workers.join_next().await.is_some() {}
                return Err(e);
            }
        }
    }
    drop(tx); // no more work: workers stop when the queue is empty
    while let Some(joined) = workers.join_next().await {
        if let Some(e) = worker_error(joined) {
            workers.abort_all();
            while workers.join_next().await.is_some() {}
            return Err(e);
        }
    }
    Ok(Scheduled { resumed, published })
}

/// A finished worker's error, if it failed.
fn worker_error(
    joined: Result<Result<(), LoadError>, tokio::task::JoinError>,
) -> Option<LoadError> {
    match joined {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(j) if j.is_cancelled() => None,
        Err(j) => panic!("load worker panicked: {j}"),
    }
}

/// Queues every chunk of a published snapshot that is not loaded yet, big
/// tables first. Returns how many chunks were already loaded.
fn queue_snapshot(
    work: &mut [TableWork],
    done: &HashSet<String>,
    tx: &UnboundedSender<Item>,
    progress: &Progress,
) -> u64 {
    let mut resumed = 0;
    let mut queue = Vec::new();
    for (ti, w) in work.iter_mut().enumerate() {
        w.total = Some(w.table.table.chunks.len());
        for c in &w.table.table.chunks {
            if done.contains(&c.path) {
                resumed += 1;
                w.loaded += 1;
            } else {
                queue.push((ti, c.clone()));
            }
        }
    }
    // Big tables first, their chunks interleaved with others'.
    queue.sort_by(|a, b| {
        let (ta, tb) = (&work[a.0].table.table, &work[b.0].table.table);
        tb.rows.cmp(&ta.rows).then(a.1.path.cmp(&b.1.path))
    });
    progress
        .rows_total
        .store(queue.iter().map(|(_, c)| c.rows).sum(), Ordering::Relaxed);
    // Tables with nothing left to load go first: only their indexes may be missing.
    for (ti, w) in work.iter_mut().enumerate() {
        if w.take_finish() {
            let _ = tx.send(Item::Finish(ti));
        }
    }
    for (ti, c) in queue {
        let _ = tx.send(Item::Chunk(ti, c));
    }
    resumed
}

/// Turns an extract's events into work until it publishes the snapshot.
/// Stops at the first worker failure. Returns the chunks already loaded and
/// the published manifest.
async fn feed(
    plan: &LoadPlan,
    mut events: UnboundedReceiver<SnapshotEvent>,
    work: &Work,
    done: &HashSet<String>,
    tx: &UnboundedSender<Item>,
    progress: &Progress,
    workers: &mut JoinSet<Result<(), LoadError>>,
) -> Result<(u64, Arc<Manifest>), LoadError> {
    let index: HashMap<(String, String), usize> = work
        .lock()
        .expect("work")
        .iter()
        .enumerate()
        .map(|(i, w)| ((w.table.db.clone(), w.table.table.name.clone()), i))
        .collect();
    let find = |d: &str, t: &str| index.get(&(d.to_string(), t.to_string())).copied();
    let mut resumed = 0;
    loop {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            Some(joined) = workers.join_next() => {
                match worker_error(joined) {
                    Some(e) => return Err(e),
                    None => continue,
                }
            }
        };
        match ev {
            Some(SnapshotEvent::Chunk {
                database,
                table,
                chunk,
            }) => {
                let Some(ti) = find(&database, &table) else {
                    continue;
                };
                progress.rows_total.fetch_add(chunk.rows, Ordering::Relaxed);
                if done.contains(&chunk.path) {
                    resumed += 1;
                    work.lock().expect("work")[ti].loaded += 1;
                } else {
                    let _ = tx.send(Item::Chunk(ti, chunk));
                }
            }
            Some(SnapshotEvent::TableDone {
                database,
                table,
                chunks,
            }) => {
                let Some(ti) = find(&database, &table) else {
                    continue;
                };
                let finish = {
                    let mut w = work.lock().expect("work");
                    w[ti].total = Some(chunks);
                    w[ti].take_finish()
                };
                if finish {
                    let _ = tx.send(Item::Finish(ti));
                }
            }
            Some(SnapshotEvent::Published(manifest)) => return Ok((resumed, manifest)),
            Some(SnapshotEvent::Started(_)) => {}
            None => {
                return Err(LoadError::Object {
                    object: format!("snapshot {}", plan.manifest.snapshot),
                    detail: "the extract stopped before publishing it, so the load stops too; the target now holds part of this unpublished snapshot: load a published snapshot with --force to replace it".into(),
                })
            }
        }
    }
}

/// A load session and when it was opened (to tell, after losing it,
/// whether the server has restarted since).
struct Session {
    conn: Conn,
    opened: Instant,
}

impl Session {
    /// After a transient error: waits, and opens a new session if the old
    /// one is lost (waiting out a restarting server), ending what is left
    /// of the old one on the server so that its open transaction rolls back
    /// now rather than when the server notices. `Err(e)` when the waits are
    /// used up.
    async fn recover(
        &mut self,
        server: &replseed_db::Server,
        e: LoadError,
        what: &str,
        waits: &mut impl Iterator<Item = Duration>,
    ) -> Result<(), LoadError> {
        let Some(wait) = waits.next() else {
            return Err(e);
        };
        warn!("{e}; trying {what} again in {:.1} s", wait.as_secs_f64());
        tokio::time::sleep(wait).await;
        let lost = matches!(&e, LoadError::Db(d) if replseed_db::retry::is_connection_lost(d.code));
        if !lost {
            return Ok(());
        }
        let old = self.conn.id();
        let mut conn = session::session_retrying(server).await?;
        // The old session's id means the same session only if the server
        // has not restarted since it was opened.
        let uptime: Option<u64> = conn
            .query_first("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='UPTIME'")
            .await
            .ok()
            .flatten();
        if uptime.is_some_and(|u| u > self.opened.elapsed().as_secs() + 1) {
            let _ = conn.query_drop(format!("KILL CONNECTION {old}")).await;
        }
        *self = Session {
            conn,
            opened: Instant::now(),
        };
        Ok(())
    }
}

async fn load_worker(
    conn: Conn,
    plan: LoadPlan,
    work: Work,
    queue: Queue,
    serial: Arc<Mutex<OneAtATime>>,
    progress: Arc<Progress>,
) -> Result<(), LoadError> {
    let server = &plan.target;
    let mut s = Session {
        conn,
        opened: Instant::now(),
    };
    // A parked chunk of the table this worker holds goes before the queue.
    let mut held: Option<(usize, Chunk)> = None;
    loop {
        let next = match held.take() {
            Some((ti, chunk)) => Some(Item::Chunk(ti, chunk)),
            None => {
                let next = queue.lock().await.recv().await;
                match next {
                    Some(Item::Chunk(ti, chunk))
                        if !serial.lock().expect("serial").start(ti, &chunk) =>
                    {
                        continue
                    }
                    next => next,
                }
            }
        };
        let ti = match next {
            None => break,
            Some(Item::Finish(ti)) => ti,
            Some(Item::Chunk(ti, chunk)) => {
                let (db, table) = {
                    let w = work.lock().expect("work");
                    (w[ti].table.db.clone(), w[ti].table.table.clone())
                };
                let local = plan.stage.fetch_chunk(&chunk, &plan.spool).await?;
                let t0 = Instant::now();
                let mut waits = replseed_db::retry::backoff();
                let n = loop {
                    let r = chunks::load_chunk(
                        &mut s.conn,
                        &plan,
                        &db,
                        &table,
                        &chunk,
                        local.path.clone(),
                        &progress,
                    )
                    .await;
                    match r {
                        // A lost connection, a deadlock or a lock wait timeout
                        // rolled the chunk's transaction back (its progress row
                        // with it): load it again. A non-transactional table
                        // keeps what was written before the fault, so its
                        // table is reloaded whole when the load resumes.
                        Err(e) if e.is_transient() && table.transactional => {
                            let what = format!("chunk `{}`", chunk.path);
                            s.recover(server, e, &what, &mut waits).await?;
                        }
                        r => break r?,
                    }
                };
                drop(local);
                let n = match n {
                    Some(n) => n,
                    None => {
                        info!(chunk = %chunk.path, "the chunk had been committed by the try that lost its connection");
                        chunk.rows
                    }
                };
                debug!(chunk = %chunk.path, rows = n, secs = t0.elapsed().as_secs_f64(), "chunk loaded");
                progress.rows.fetch_add(n, Ordering::Relaxed);
                progress.chunks.fetch_add(1, Ordering::Relaxed);
                held = serial.lock().expect("serial").next(ti).map(|c| (ti, c));
                let finish = {
                    let mut w = work.lock().expect("work");
                    w[ti].loaded += 1;
                    w[ti].take_finish()
                };
                if !finish {
                    continue;
                }
                ti
            }
        };
        let table = work.lock().expect("work")[ti].table.clone();
        // Building the indexes is idempotent (only the missing ones are
        // added; the ALTER is atomic): after a transient fault, again.
        let mut waits = replseed_db::retry::backoff();
        loop {
            match finish_table(&mut s.conn, server, &plan.manifest.snapshot, &table).await {
                Err(e) if e.is_transient() => {
                    let what = format!("the indexes of {}.{}", table.db, table.table.name);
                    s.recover(server, e, &what, &mut waits).await?;
                }
                r => break r?,
            }
        }
    }
    let _ = s.conn.disconnect().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(p: &str) -> Chunk {
        Chunk {
            path: p.into(),
            rows: 1,
            bytes: 1,
            sha256: String::new(),
            key_range: None,
        }
    }

    #[test]
    fn a_held_table_parks_its_chunks_for_its_holder() {
        let mut s = OneAtATime::default();
        s.tables.insert(0, Default::default());
        assert!(s.start(1, &chunk("other")), "other tables are not held");
        assert!(s.start(0, &chunk("a")));
        assert!(!s.start(0, &chunk("b")), "b is parked");
        assert!(!s.start(0, &chunk("c")), "c is parked");
        assert_eq!(s.next(0).map(|c| c.path), Some("b".into()));
        assert_eq!(s.next(0).map(|c| c.path), Some("c".into()));
        assert!(s.next(0).is_none(), "released");
        assert!(s.start(0, &chunk("d")), "free again");
    }
}
