//! Load: a staged snapshot into a target server, resumably.
//!
//! 1. **Preflight** (changes nothing): the target is MariaDB, not older
//!    than the source, not the source itself (`server_id`), accepts
//!    `LOAD DATA LOCAL`, and the user may turn the binary log off for its
//!    session. Every object of the snapshot that already exists on the
//!    target is a conflict: without `--force` the load stops and lists them
//!    all; with `--force` exactly those objects are dropped and replaced.
//! 2. **Tables** are created with their secondary indexes taken out (where
//!    that is safe, see [`ddl::can_defer`]).
//! 3. **Chunks** load in parallel, each in one transaction together with its
//!    row in `replseed.load_chunks`, so a killed load resumes exactly: a
//!    chunk is either loaded and recorded, or neither. Every chunk's SHA-256
//!    is checked before its rows are read.
//! 4. When a table's chunks are in, its indexes are added in one `ALTER`.
//! 5. Then sequences (their state), views, routines, triggers and events,
//!    and last the accounts, roles and grants (`accounts.rs`).
//!
//! All sessions run with `sql_log_bin=0`: the load writes no GTIDs of the
//! target's own, so the replica can take the master's position afterwards.
//! Progress lives on the target in the `replseed` schema, so one read-only
//! snapshot loads into many targets and a new machine can resume a load.
//!
//! # Where things are
//! * `preflight.rs`: the checks and the conflict list.
//! * `bookkeeping.rs`: the progress rows on the target.
//! * `objects.rs`: creating tables, indexes and every other object.
//! * `scheduler.rs`: the worker pool and the order of work.
//! * `chunks.rs`: loading one chunk; `encode.rs`: Arrow to LOAD DATA text.
//! * `ddl.rs`: deferring secondary indexes; `session.rs`: session settings.

#![warn(missing_docs)]

mod accounts;
mod bookkeeping;
pub mod chunks;
mod conflict;
pub mod ddl;
pub mod encode;
mod objects;
mod preflight;
mod scheduler;
mod session;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use replseed_db::{DbError, Server};
use replseed_stage::manifest::Manifest;
use replseed_stage::{SnapshotEvent, Stage, StageError};
use tracing::{info, warn};

pub use conflict::Conflict;
pub use preflight::preflight;
pub use session::session;

/// Everything that can stop a load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Talking to the target failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Reading the stage failed (a corrupt chunk is named here).
    #[error(transparent)]
    Stage(#[from] StageError),
    /// The target is not fit to load into.
    #[error("{server}: {detail}")]
    Preflight {
        /// Target name.
        server: String,
        /// What is wrong and what to do.
        detail: String,
    },
    /// Objects of the snapshot already exist on the target.
    #[error("{server}: {} object(s) of snapshot {snapshot} already exist and nothing was changed:\n  {}\nuse --force to drop and replace exactly these objects, or load into an empty server", conflicts.len(), conflicts.join("\n  "))]
    Conflicts {
        /// Target name.
        server: String,
        /// Snapshot id.
        snapshot: String,
        /// One line per object.
        conflicts: Vec<String>,
    },
    /// A chunk could not be loaded.
    #[error("chunk `{chunk}`: {detail}; the target is left resumable: fix the cause and run the same load again")]
    Chunk {
        /// Chunk path.
        chunk: String,
        /// What went wrong.
        detail: String,
    },
    /// A schema object could not be created.
    #[error("{object}: {detail}")]
    Object {
        /// `kind db.name`.
        object: String,
        /// What went wrong.
        detail: String,
    },
    /// The load was interrupted.
    #[error("interrupted; run the same load again to resume")]
    Interrupted,
}

impl LoadError {
    /// Whether trying again can cure it (a lost connection, a server
    /// restarting, a deadlock): see [`replseed_db::retry`].
    pub fn is_transient(&self) -> bool {
        matches!(self, LoadError::Db(e) if e.transient)
    }
}

/// A validated load request.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Target server.
    pub target: Server,
    /// Stage holding the snapshot.
    pub stage: Stage,
    /// The snapshot.
    pub manifest: Arc<Manifest>,
    /// Parallel connections.
    pub threads: usize,
    /// Drop and replace conflicting objects.
    pub force: bool,
    /// Directory for downloaded chunks.
    pub spool: PathBuf,
    /// Create the snapshot's accounts, roles and grants (`--no-accounts`: no).
    pub accounts: bool,
    /// The accounts to check instead of the staged ones (`provision`'s
    /// check of a target before the extract stages them).
    pub preview_accounts: Option<replseed_db::accounts::AccountSet>,
    /// Bytes per second of rows sent to the target, over all its sessions
    /// (`--max-load-rate`).
    pub rate: Option<Arc<replseed_db::throttle::RateLimit>>,
}

/// Live counters.
#[derive(Debug, Default)]
pub struct Progress {
    /// Rows loaded (this run).
    pub rows: AtomicU64,
    /// Rows to load in all (this run).
    pub rows_total: AtomicU64,
    /// Rows of the chunks being loaded sent to the target, not yet
    /// committed (in `rows` once they are).
    pub rows_sending: AtomicU64,
    /// Chunks loaded (this run).
    pub chunks: AtomicU64,
    /// Current phase.
    pub phase: Mutex<String>,
}

impl Progress {
    fn set_phase(&self, p: &str) {
        *self.phase.lock().expect("phase") = p.to_string();
    }
}

/// What a load did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// Snapshot id.
    pub snapshot: String,
    /// `host:port` of the target.
    pub target: String,
    /// Tables in the snapshot.
    pub tables: u64,
    /// Rows in the snapshot.
    pub rows: u64,
    /// Chunks loaded by this run.
    pub chunks_loaded: u64,
    /// Chunks already loaded by an earlier, interrupted run.
    pub chunks_resumed: u64,
    /// Objects dropped by --force.
    pub replaced: Vec<String>,
    /// Whether the snapshot was already completely loaded.
    pub already_loaded: bool,
    /// Seconds.
    pub elapsed_s: f64,
}

/// Runs a load. `cancel` resolves when the user asks to stop.
pub async fn run(
    plan: LoadPlan,
    progress: Arc<Progress>,
    cancel: impl std::future::Future<Output = ()> + Send,
) -> Result<LoadReport, LoadError> {
    // A load is resumable by construction, so a transient fault (the
    // target restarting, every connection cut) that outlasts the retries of
    // the piece of work it hit resumes the whole load, after a wait.
    let resuming = async {
        let mut waits = replseed_db::retry::backoff();
        loop {
            match run_inner(&plan, progress.clone(), None).await {
                Err(e) if e.is_transient() => {
                    let Some(wait) = waits.next() else {
                        return Err(e);
                    };
                    warn!(target = %plan.target.addr(), "{e}; the load resumes in {:.1} s", wait.as_secs_f64());
                    tokio::time::sleep(wait).await;
                }
                r => return r,
            }
        }
    };
    // While it loads, the snapshot is leased: `snapshots delete` and
    // `prune` leave it alone.
    let lease = take_lease(&plan).await?;
    // Deleted between reading its manifest and the lease: nothing to load.
    if plan.stage.state(&plan.manifest.snapshot).await? != replseed_stage::SnapshotState::Published
    {
        lease.release().await;
        return Err(StageError::SnapshotNotFound {
            id: plan.manifest.snapshot.clone(),
            url: plan.stage.url().to_string(),
        }
        .into());
    }
    let r = tokio::select! {
        r = resuming => r,
        _ = cancel => Err(LoadError::Interrupted),
    };
    lease.release().await;
    r
}

async fn take_lease(plan: &LoadPlan) -> Result<replseed_stage::lease::Lease, LoadError> {
    let id = &plan.manifest.snapshot;
    let lease = plan
        .stage
        .take_lease(id, &format!("load into {}", plan.target.addr()))
        .await?;
    Ok(lease)
}

/// Runs a load that follows an extract while it writes the snapshot:
/// `plan.manifest` is the manifest of [`SnapshotEvent::Started`], and chunks
/// are loaded as `events` announce them. The load completes when the
/// snapshot is published; if the extract fails, so does the load (the
/// target then holds a partial load of an unpublished snapshot, which a
/// later load with `--force` replaces).
pub async fn run_following(
    plan: LoadPlan,
    events: tokio::sync::mpsc::UnboundedReceiver<SnapshotEvent>,
    progress: Arc<Progress>,
    cancel: impl std::future::Future<Output = ()> + Send,
) -> Result<LoadReport, LoadError> {
    let lease = take_lease(&plan).await?;
    let r = tokio::select! {
        r = run_inner(&plan, progress, Some(events)) => r,
        _ = cancel => Err(LoadError::Interrupted),
    };
    lease.release().await;
    r
}

/// Checks a target without changing it (what [`run`] checks first): the
/// target is fit, and without `--force` nothing of the snapshot exists
/// there. `plan.manifest` may be an extract's preview.
pub async fn check(plan: &LoadPlan) -> Result<(), LoadError> {
    let mut conn = session(&plan.target).await?;
    let checked = preflight(&mut conn, plan).await;
    let _ = conn.disconnect().await;
    let conflicts = checked?.conflicts;
    if !conflicts.is_empty() && !plan.force {
        return Err(LoadError::Conflicts {
            server: plan.target.name(),
            snapshot: plan.manifest.snapshot.clone(),
            conflicts: conflicts.iter().map(Conflict::describe).collect(),
        });
    }
    Ok(())
}

async fn run_inner(
    plan: &LoadPlan,
    progress: Arc<Progress>,
    follow: Option<tokio::sync::mpsc::UnboundedReceiver<SnapshotEvent>>,
) -> Result<LoadReport, LoadError> {
    let started = Instant::now();
    let server = &plan.target;
    let m = plan.manifest.clone();
    let report =
        |m: &Manifest, chunks_loaded, chunks_resumed, replaced, already_loaded| LoadReport {
            snapshot: m.snapshot.clone(),
            target: server.addr(),
            tables: m.totals.tables,
            rows: m.totals.rows,
            chunks_loaded,
            chunks_resumed,
            replaced,
            already_loaded,
            elapsed_s: started.elapsed().as_secs_f64(),
        };

    progress.set_phase("preflight");
    let mut conn = session(server).await?;
    let preflight::Checked {
        conflicts,
        accounts: snapshot_accounts,
    } = preflight(&mut conn, plan).await?;
    if !conflicts.is_empty() && !plan.force {
        return Err(LoadError::Conflicts {
            server: server.name(),
            snapshot: m.snapshot.clone(),
            conflicts: conflicts.iter().map(Conflict::describe).collect(),
        });
    }
    bookkeeping::ensure_schema(&mut conn, server).await?;
    // `done`: loaded; `archive`: loaded and replicating from the binlog
    // archive; `replicating`: loaded and handed over to replication.
    // Either way there is nothing to do, and the run record must stay as it
    // is (catch-up relies on it never to rewind a running replica).
    let status = bookkeeping::run_status(&mut conn, server, &m.snapshot).await?;
    if matches!(
        status.as_deref(),
        Some("done") | Some("archive") | Some("replicating")
    ) {
        info!(snapshot = %m.snapshot, target = %server.addr(), "snapshot already loaded on this target");
        let _ = conn.disconnect().await;
        return Ok(report(&m, 0, m.totals.chunks, Vec::new(), true));
    }
    bookkeeping::start_run(&mut conn, server, &m, plan.stage.url()).await?;

    let mut replaced = Vec::new();
    if !conflicts.is_empty() {
        progress.set_phase("replacing conflicting objects");
        replaced = objects::replace_conflicts(&mut conn, server, &m, &conflicts).await?;
    }

    progress.set_phase("creating tables");
    let tables = objects::create_tables(&mut conn, server, &m).await?;
    let done = bookkeeping::loaded_chunks(&mut conn, server, &m.snapshot).await?;
    let scheduled = scheduler::run(plan, tables, &done, follow, &progress).await?;
    // The rest uses the published manifest when following an extract.
    let m = scheduled.published.unwrap_or(m);
    // The control session sat idle while the chunks loaded: a fault may
    // have cut it. Go on in a new one.
    drop(conn);
    let mut conn = session::session_retrying(server).await?;

    progress.set_phase("creating views, routines, triggers, events");
    objects::create_the_rest(&mut conn, server, &m).await?;
    if let Some(set) = &snapshot_accounts {
        progress.set_phase("creating accounts");
        let mut ours = bookkeeping::states(&mut conn, server, &m.snapshot).await?;
        accounts::create(&mut conn, server, &m.snapshot, set, &mut ours).await?;
    }
    bookkeeping::finish_run(&mut conn, server, &m.snapshot).await?;
    let _ = conn.disconnect().await;
    progress.set_phase("done");
    Ok(report(
        &m,
        progress.chunks.load(Ordering::Relaxed),
        scheduled.resumed,
        replaced,
        false,
    ))
}
