//! Extract: one consistent snapshot of a MariaDB master, written to a stage.
//!
//! The sequence (see `docs/FORMAT.md` and the README for the reasoning):
//!
//! 1. Preflight: the stage is reachable and the snapshot id is free; the
//!    source is MariaDB with the binary log on in ROW format.
//! 2. A control connection takes `BACKUP STAGE START` + `BACKUP STAGE
//!    BLOCK_DDL` and holds it for the whole extract: no DDL can change a
//!    table under us, and writes to non-transactional tables (Aria, MyISAM)
//!    wait, so those tables stay equal to the recorded position. Commits to
//!    InnoDB are not blocked.
//! 3. The schema is read under that lock.
//! 4. Every worker opens `START TRANSACTION WITH CONSISTENT SNAPSHOT`. They
//!    are opened together without any lock and accepted only if every
//!    worker reports the same `Binlog_snapshot_file/position`; after a few
//!    misses (a busy master), `FLUSH TABLES WITH READ LOCK` is held only
//!    while they open. Equal positions prove a single cut.
//! 5. The GTID is `BINLOG_GTID_POS(file, pos)` of that position (the
//!    reasoning is in `gtid.rs`).
//! 6. Workers stream tables (large ones split along an integer primary key)
//!    over the binary protocol into zstd Parquet chunks, bounded in memory
//!    (values become Arrow in `decode.rs`). The first worker to fail stops
//!    the others, and its error is the one reported.
//! 7. The manifest is published last with a create-only put.

#![warn(missing_docs)]

mod accounts;
mod decode;
mod gtid;
mod keys;
mod replica;
mod schema;
mod split;
mod worker;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use replseed_db::throttle::{GuardLimits, RateLimit};
use replseed_db::{first, text, DbError, Server};
use replseed_stage::manifest::{
    Consistency, Manifest, Position, Settings, SourceInfo, Totals, FORMAT_NAME, FORMAT_VERSION,
};
use replseed_stage::{ChunkProps, SnapshotState, Stage, StageError};
use tracing::{info, warn};

/// Everything that can stop an extract. Messages name the server, table or
/// object and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Talking to the source failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The stage failed.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// The source is not set up for replication.
    #[error("{server}: {detail}")]
    SourceConfig {
        /// Source name.
        server: String,
        /// What is wrong and what to do.
        detail: String,
    },
    /// A privilege is missing.
    #[error("{server}: {detail}; run {grant} TO the extract user")]
    Privilege {
        /// Source name.
        server: String,
        /// What failed.
        detail: String,
        /// The GRANT that fixes it.
        grant: String,
    },
    /// `--databases` names a database the source does not have.
    #[error("{server}: database `{database}` does not exist (or the user has no privilege on it); check --databases and the grants")]
    NoSuchDatabase {
        /// Source name.
        server: String,
        /// The name.
        database: String,
    },
    /// An object replseed cannot copy.
    #[error("cannot copy {table}: {detail}")]
    Unsupported {
        /// `db.table`.
        table: String,
        /// Why.
        detail: String,
    },
    /// Workers did not agree on one position.
    #[error("{server}: the workers' snapshots are not at one binlog position ({detail}); retry")]
    Inconsistent {
        /// Source name.
        server: String,
        /// Positions seen.
        detail: String,
    },
    /// A value could not be stored.
    #[error("{table}, chunk {chunk}: {detail}")]
    Value {
        /// `db.table`.
        table: String,
        /// Chunk path.
        chunk: String,
        /// What was wrong.
        detail: String,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The extract was interrupted.
    #[error("interrupted; nothing was published")]
    Interrupted,
}

impl ExtractError {
    /// Whether starting the extract again can cure it (a lost connection,
    /// the source restarting): see [`replseed_db::retry`].
    pub fn is_transient(&self) -> bool {
        matches!(self, ExtractError::Db(e) if e.transient)
    }
}

pub use replseed_stage::SnapshotEvent as Event;

/// A validated extract request.
#[derive(Debug, Clone)]
pub struct ExtractPlan {
    /// The master.
    pub source: Server,
    /// Where to write.
    pub stage: Stage,
    /// Snapshot id.
    pub snapshot: String,
    /// Databases to copy (`None`: all but the system ones).
    pub databases: Option<Vec<String>>,
    /// Worker connections.
    pub threads: usize,
    /// Maximum rows per chunk file.
    pub chunk_rows: u64,
    /// Maximum bytes per chunk file.
    pub chunk_bytes: u64,
    /// Parquet settings.
    pub props: ChunkProps,
    /// How many lock-free snapshot attempts before FTWRL.
    pub lock_free_attempts: u32,
    /// Stage the master's accounts, roles and grants.
    pub accounts: bool,
    /// Where to report progress events for a loader that follows (optional).
    pub events: Option<tokio::sync::mpsc::UnboundedSender<Event>>,
    /// MiB per second read from the source, over all workers (`--max-rate`).
    pub max_rate: Option<f64>,
    /// When to pause the workers (`--max-threads-running`, `--max-replica-lag`).
    pub guard: GuardLimits,
}

impl ExtractPlan {
    /// The manifest of this plan's snapshot before any chunk: what a
    /// loader that follows the extract (or checks a target first) needs.
    fn skeleton(
        &self,
        source: SourceInfo,
        position: Position,
        consistency: Consistency,
        databases: Vec<replseed_stage::manifest::Database>,
    ) -> Manifest {
        Manifest {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            snapshot: self.snapshot.clone(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            started_at: String::new(),
            finished_at: String::new(),
            source,
            position,
            consistency,
            settings: Settings {
                chunk_rows: self.chunk_rows,
                chunk_bytes: self.chunk_bytes,
                compression: self.props.compression_name(),
                threads: self.threads as u32,
            },
            databases,
            subset: self.databases.clone(),
            accounts: None,
            totals: Totals::default(),
            signature: None,
        }
    }
}

/// Live counters, for progress bars and logs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Rows written.
    pub rows: AtomicU64,
    /// Estimated rows in total.
    pub rows_total: AtomicU64,
    /// Chunk files finished.
    pub chunks: AtomicU64,
    /// Bytes of finished chunk files.
    pub bytes: AtomicU64,
    /// Current phase.
    pub phase: Mutex<String>,
}

impl Progress {
    fn set_phase(&self, p: &str) {
        *self.phase.lock().expect("phase") = p.to_string();
    }
}

/// What an extract produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// The published manifest.
    pub manifest: Manifest,
    /// Wall time.
    pub elapsed: Duration,
}

const WORKER_SETUP: &[&str] = &[
    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "SET SESSION time_zone='+00:00'",
    "SET SESSION character_set_results=NULL",
    "SET SESSION net_write_timeout=3600",
    "SET SESSION net_read_timeout=3600",
    "SET SESSION max_statement_time=0",
];

/// Checks that the source can be a master for replseed and describes it.
pub async fn preflight(conn: &mut Conn, server: &Server) -> Result<SourceInfo, ExtractError> {
    let replica = replica::detect(conn, server).await?;
    source_info(conn, server, replica.as_ref()).await
}

/// Describes the source; a master must have the binary log on in ROW
/// format (a replica's own binary log is not used).
async fn source_info(
    conn: &mut Conn,
    server: &Server,
    replica: Option<&replica::ReplicaSource>,
) -> Result<SourceInfo, ExtractError> {
    let r = first(
        conn,
        server,
        "SELECT VERSION(), @@server_id, @@hostname, @@port, @@log_bin, @@binlog_format, @@gtid_domain_id, \
         @@lower_case_table_names, @@global.sql_mode, @@character_set_server, @@collation_server",
        (),
    )
    .await?;
    let version = text(&r[0]);
    if !version.contains("MariaDB") {
        return Err(ExtractError::SourceConfig {
            server: server.name(),
            detail: format!("server version {version} is not MariaDB; replseed provisions MariaDB replicas from MariaDB masters"),
        });
    }
    if replica.is_none() && text(&r[4]) != "1" {
        return Err(ExtractError::SourceConfig {
            server: server.name(),
            detail: "the binary log is off; start mariadbd with log_bin (and binlog_format=ROW) so that a replica can replicate from the snapshot's position".into(),
        });
    }
    let format = text(&r[5]);
    if replica.is_none() && format != "ROW" {
        return Err(ExtractError::SourceConfig {
            server: server.name(),
            detail: format!("binlog_format is {format}; set binlog_format=ROW (SET GLOBAL binlog_format='ROW' and in the config file) so that replication from a snapshot is exact"),
        });
    }
    let num = |v: &Value| text(v).parse::<u64>().unwrap_or(0);
    Ok(SourceInfo {
        version,
        server_id: num(&r[1]) as u32,
        hostname: text(&r[2]),
        port: num(&r[3]) as u16,
        gtid_domain_id: num(&r[6]) as u32,
        lower_case_table_names: num(&r[7]) as u32,
        sql_mode: text(&r[8]),
        charset: text(&r[9]),
        collation: text(&r[10]),
        replica_of: replica.map(|r| r.masters.clone()),
    })
}

async fn open_snapshot(conn: &mut Conn) -> Result<(String, u64), mysql_async::Error> {
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await?;
    let rows: Vec<(String, String)> = conn
        .query("SHOW SESSION STATUS LIKE 'binlog_snapshot_%'")
        .await?;
    let mut file = String::new();
    let mut pos = 0;
    for (k, v) in rows {
        match k.to_ascii_lowercase().as_str() {
            "binlog_snapshot_file" => file = v,
            "binlog_snapshot_position" => pos = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    Ok((file, pos))
}

/// Opens one snapshot on every worker at a single binlog position.
/// Returns (method, attempts, commit-blocked ms, positions).
async fn synchronize(
    workers: &mut [Conn],
    plan: &ExtractPlan,
) -> Result<(String, u32, u64, Vec<(String, u64)>), ExtractError> {
    let server = &plan.source;
    let mut attempts = 0;
    for _ in 0..plan.lock_free_attempts {
        attempts += 1;
        let results = join_all(workers.iter_mut().map(open_snapshot)).await;
        let mut positions = Vec::new();
        for r in results {
            positions.push(r.map_err(|e| server.err("opening a consistent snapshot", &e))?);
        }
        if positions.windows(2).all(|w| w[0] == w[1]) {
            return Ok(("lock-free".into(), attempts, 0, positions));
        }
        info!(
            attempt = attempts,
            ?positions,
            "worker snapshots differ (commits in between); retrying"
        );
        for w in workers.iter_mut() {
            w.query_drop("ROLLBACK")
                .await
                .map_err(|e| server.err("rolling back a snapshot", &e))?;
        }
    }
    // Busy master: hold commits only while the snapshots open.
    if attempts > 0 {
        warn!("lock-free snapshot did not agree after {attempts} attempts; using FLUSH TABLES WITH READ LOCK briefly");
    }
    let mut lock = server
        .connect(&["SET SESSION lock_wait_timeout=60"])
        .await?;
    let start = Instant::now();
    lock.query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .map_err(|e| {
            if matches!(&e, mysql_async::Error::Server(s) if s.code == 1227) {
                ExtractError::Privilege {
                    server: server.name(),
                    detail: "FLUSH TABLES WITH READ LOCK was denied".into(),
                    grant: "GRANT RELOAD ON *.*".into(),
                }
            } else {
                ExtractError::Db(server.err("taking FLUSH TABLES WITH READ LOCK", &e))
            }
        })?;
    let results = join_all(workers.iter_mut().map(open_snapshot)).await;
    let unlock = lock.query_drop("UNLOCK TABLES").await;
    let blocked = start.elapsed().as_millis() as u64;
    let _ = lock.disconnect().await;
    unlock.map_err(|e| server.err("UNLOCK TABLES", &e))?;
    let mut positions = Vec::new();
    for r in results {
        positions.push(r.map_err(|e| server.err("opening a consistent snapshot", &e))?);
    }
    if !positions.windows(2).all(|w| w[0] == w[1]) {
        return Err(ExtractError::Inconsistent {
            server: server.name(),
            detail: format!("{positions:?}"),
        });
    }
    Ok(("ftwrl".into(), attempts + 1, blocked, positions))
}

/// Runs an extract. `cancel` resolves when the user asks to stop.
pub async fn run(
    plan: ExtractPlan,
    progress: Arc<Progress>,
    cancel: impl std::future::Future<Output = ()> + Send,
) -> Result<Report, ExtractError> {
    // Set once the snapshot id was found free: only then are leftovers ours to remove.
    let claimed = std::sync::atomic::AtomicBool::new(false);
    // SQL threads of a replica source stopped for the cut (restarted on every path).
    let paused = Arc::new(Mutex::new(Vec::new()));
    // A transient fault (a connection cut, the source restarting) loses the
    // consistent snapshot: nothing of it is published, its chunks are
    // removed, and the whole cut is taken again after a wait. Not when a
    // loader follows the chunks as they come (`provision`): it has seen
    // this cut already, so the fault is reported.
    let attempts = async {
        let mut waits = replseed_db::retry::backoff();
        loop {
            let r = run_inner(&plan, progress.clone(), &claimed, &paused).await;
            replica::resume_after_failure(&plan.source, &paused).await;
            if r.is_err() && claimed.swap(false, Ordering::SeqCst) {
                cleanup(&plan).await;
            }
            match r {
                Err(e) if e.is_transient() && plan.events.is_none() => {
                    let Some(wait) = waits.next() else {
                        return Err(e);
                    };
                    warn!(source = %plan.source.addr(), "{e}; nothing was published, the extract starts again in {:.1} s", wait.as_secs_f64());
                    progress.rows.store(0, Ordering::Relaxed);
                    progress.chunks.store(0, Ordering::Relaxed);
                    progress.bytes.store(0, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                }
                r => return r,
            }
        }
    };
    // While it writes, the snapshot is leased: `snapshots delete` and
    // `prune` leave it alone.
    plan.stage.check_access().await?;
    let lease = plan
        .stage
        .take_lease(
            &plan.snapshot,
            &format!("extract from {}", plan.source.addr()),
        )
        .await?;
    let r = tokio::select! {
        r = attempts => r,
        _ = cancel => Err(ExtractError::Interrupted),
    };
    replica::resume_after_failure(&plan.source, &paused).await;
    if r.is_err() && claimed.load(Ordering::SeqCst) {
        cleanup(&plan).await;
    }
    lease.release().await;
    r
}

async fn cleanup(plan: &ExtractPlan) {
    plan.stage.settle_uploads().await;
    if let Ok(SnapshotState::Incomplete) = plan.stage.state(&plan.snapshot).await {
        match plan.stage.discard(&plan.snapshot).await {
            Ok(n) => {
                info!(snapshot = %plan.snapshot, objects = n, "removed the unpublished chunks")
            }
            Err(e) => {
                warn!(snapshot = %plan.snapshot, error = %e, "could not remove unpublished chunks; `replseed snapshots delete` removes them")
            }
        }
    }
}

async fn run_inner(
    plan: &ExtractPlan,
    progress: Arc<Progress>,
    claimed: &std::sync::atomic::AtomicBool,
    paused: &Arc<Mutex<Vec<String>>>,
) -> Result<Report, ExtractError> {
    let started = Instant::now();
    let started_at = replseed_stage::now_rfc3339();
    let server = &plan.source;
    if plan.threads == 0 {
        return Err(ExtractError::Usage("--threads must be at least 1".into()));
    }

    // Preflight: the stage was checked first (`run`), so nothing touches
    // the master if it cannot be written.
    progress.set_phase("preflight");
    match plan.stage.state(&plan.snapshot).await? {
        SnapshotState::Absent => {}
        SnapshotState::Published => {
            return Err(StageError::SnapshotExists {
                id: plan.snapshot.clone(),
                url: plan.stage.url().to_string(),
            }
            .into())
        }
        SnapshotState::Incomplete => {
            return Err(StageError::SnapshotIncomplete {
                id: plan.snapshot.clone(),
                url: plan.stage.url().to_string(),
            }
            .into())
        }
    }
    claimed.store(true, Ordering::SeqCst);
    let mut control = server
        .connect(&[
            "SET SESSION lock_wait_timeout=60",
            "SET SESSION character_set_results=utf8mb4",
            "SET SESSION sql_quote_show_create=1",
        ])
        .await?;
    let replica = replica::detect(&mut control, server).await?;
    let source_info = source_info(&mut control, server, replica.as_ref()).await?;

    // DDL guard for the whole extract.
    progress.set_phase("locking DDL");
    for stmt in ["BACKUP STAGE START", "BACKUP STAGE BLOCK_DDL"] {
        control.query_drop(stmt).await.map_err(|e| match &e {
            mysql_async::Error::Server(s) if s.code == 1227 || s.code == 1044 => ExtractError::Privilege {
                server: server.name(),
                detail: format!("{stmt} was denied"),
                grant: "GRANT RELOAD ON *.*".into(),
            },
            mysql_async::Error::Server(s) if s.code == 1205 => ExtractError::Db(server.fail(
                stmt,
                "lock wait timeout: a running DDL statement, a long write to a non-transactional table, or another backup (mariadb-backup) holds the backup lock; retry when it is done",
            )),
            _ => ExtractError::Db(server.err(stmt, &e)),
        })?;
    }
    let ddl_locked_at = Instant::now();

    // Schema under the DDL lock.
    progress.set_phase("reading schema");
    let (mut databases, tables) =
        schema::read_all(&mut control, server, plan.databases.as_deref()).await?;
    let non_transactional: Vec<String> = tables
        .iter()
        .filter(|t| !t.table.transactional)
        .map(|t| format!("{}.{} ({})", t.db, t.table.name, t.table.engine))
        .collect();
    progress
        .rows_total
        .store(tables.iter().map(|t| t.est_rows).sum(), Ordering::Relaxed);

    // One cut for every worker.
    progress.set_phase("opening snapshots");
    let mut workers = Vec::with_capacity(plan.threads);
    for _ in 0..plan.threads {
        workers.push(server.connect(WORKER_SETUP).await?);
    }
    // On a replica, its SQL threads stand still while the cut is taken.
    let replica_gtid = match &replica {
        Some(r) => Some(replica::pause(&mut control, server, r, paused).await?),
        None => None,
    };
    let (method, attempts, commit_blocked_ms, positions) = synchronize(&mut workers, plan).await?;
    let (binlog_file, binlog_pos) = positions[0].clone();
    let (gtid, binlog_state, gtid_source) = match replica_gtid {
        Some(g) => (g, String::new(), replica::GTID_SOURCE.to_string()),
        None => {
            if binlog_file.is_empty() {
                return Err(ExtractError::SourceConfig {
                    server: server.name(),
                    detail: "Binlog_snapshot_file is empty: the binary log is not active".into(),
                });
            }
            let g = gtid::snapshot_gtid(&mut control, server, &binlog_file, binlog_pos).await?;
            (g.gtid, g.binlog_state, gtid::GTID_SOURCE.to_string())
        }
    };
    info!(%binlog_file, binlog_pos, %gtid, method = %method, "snapshot opened");

    // Accounts, exactly as at the cut, in their own object.
    let staged_accounts = if plan.accounts {
        progress.set_phase("reading accounts");
        let set = if replica.is_some() {
            // Nothing replicates while the SQL threads are stopped.
            accounts::read(&mut control, server).await?
        } else {
            accounts::read_at_cut(&mut control, server, &binlog_file, binlog_pos).await?
        };
        let body = serde_json::to_vec_pretty(&set).expect("accounts serialize");
        let rel = replseed_stage::layout::accounts_path(&plan.snapshot);
        Some(
            plan.stage
                .put_file(&rel, body, set.accounts.len() as u64)
                .await?,
        )
    } else {
        None
    };
    replica::resume(&mut control, server, paused).await?;

    // Sequences: their row, read inside a snapshot.
    for d in databases.iter_mut() {
        for s in d.sequences.iter_mut() {
            s.row = worker::read_sequence(&mut workers[0], server, &d.name, &s.name).await?;
        }
    }

    // The manifest as it will be published, without chunks: a loader that
    // follows can create everything now.
    let mut skeleton = plan.skeleton(
        source_info,
        Position {
            binlog_file: binlog_file.clone(),
            binlog_pos,
            gtid,
            gtid_source,
            gtid_binlog_state: binlog_state,
        },
        Consistency {
            method,
            attempts,
            workers: plan.threads as u32,
            worker_positions: positions.iter().map(|(f, p)| format!("{f}:{p}")).collect(),
            commit_blocked_ms,
            ddl_blocked_ms: 0,
            non_transactional_tables: non_transactional,
        },
        databases,
    );
    skeleton.started_at = started_at;
    skeleton.accounts = staged_accounts;
    add_tables(&mut skeleton.databases, &tables);
    if let Some(ev) = &plan.events {
        let _ = ev.send(Event::Started(Arc::new(skeleton.clone())));
    }

    // Plan the jobs and run them.
    progress.set_phase("copying rows");
    let jobs = worker::plan_jobs(&mut workers[0], server, &tables, plan.chunk_rows).await?;
    let mut jobs_per_table = vec![(0usize, 0usize); tables.len()];
    for j in &jobs {
        jobs_per_table[j.table].0 += 1;
    }
    let queue = Arc::new(Mutex::new(jobs.into_iter().collect::<VecDeque<_>>()));
    // Protecting the source: a rate shared by the workers, and a guard
    // that pauses them while the source is busy or its replicas lag.
    let rate = RateLimit::new(plan.max_rate);
    let guard = replseed_db::throttle::guard(
        server,
        GuardLimits {
            own_sessions: plan.threads as u64 + 1,
            ..plan.guard.clone()
        },
    );
    let tables = Arc::new(tables);
    let table_jobs = Arc::new(Mutex::new(jobs_per_table));
    let mut running = tokio::task::JoinSet::new();
    for conn in workers {
        let ctx = worker::Ctx {
            server: server.clone(),
            stage: plan.stage.clone(),
            snapshot: plan.snapshot.clone(),
            tables: tables.clone(),
            props: plan.props.clone(),
            chunk_rows: plan.chunk_rows,
            chunk_bytes: plan.chunk_bytes,
            progress: progress.clone(),
            events: plan.events.clone(),
            table_jobs: table_jobs.clone(),
            rate: rate.clone(),
            guard: guard.clone(),
        };
        running.spawn(worker::run_worker(ctx, conn, queue.clone()));
    }
    // The first failure stops every other worker at once (their queries are
    // dropped with their connections), and is the error reported.
    let results = join_first_error(running).await?;

    // The DDL guard must still be there: check the control connection.
    control.query_drop("DO 1").await.map_err(|e| {
        server.err(
            "checking the DDL lock connection (lost during the extract; DDL may have run: retry)",
            &e,
        )
    })?;
    control
        .query_drop("BACKUP STAGE END")
        .await
        .map_err(|e| server.err("BACKUP STAGE END", &e))?;
    let ddl_blocked_ms = ddl_locked_at.elapsed().as_millis() as u64;
    let _ = control.disconnect().await;

    // Assemble the manifest.
    progress.set_phase("publishing");
    let mut manifest = skeleton;
    manifest.consistency.ddl_blocked_ms = ddl_blocked_ms;
    manifest.finished_at = replseed_stage::now_rfc3339();
    let mut by_table: std::collections::HashMap<usize, Vec<replseed_stage::manifest::Chunk>> =
        std::collections::HashMap::new();
    for (ti, chunk) in results {
        by_table.entry(ti).or_default().push(chunk);
    }
    let mut totals = Totals::default();
    for (ti, tp) in tables.iter().enumerate() {
        let mut chunks = by_table.remove(&ti).unwrap_or_default();
        chunks.sort_by(|a, b| a.path.cmp(&b.path));
        let t = manifest
            .databases
            .iter_mut()
            .find(|d| d.name == tp.db)
            .and_then(|d| d.tables.iter_mut().find(|t| t.name == tp.table.name))
            .expect("table in the manifest");
        t.rows = chunks.iter().map(|c| c.rows).sum();
        t.bytes = chunks.iter().map(|c| c.bytes).sum();
        t.chunks = chunks;
        totals.tables += 1;
        totals.rows += t.rows;
        totals.bytes += t.bytes;
        totals.chunks += t.chunks.len() as u64;
    }
    manifest.totals = totals;
    plan.stage.publish(&manifest).await?;
    if let Some(ev) = &plan.events {
        let _ = ev.send(Event::Published(Arc::new(manifest.clone())));
    }
    progress.set_phase("done");
    Ok(Report {
        manifest,
        elapsed: started.elapsed(),
    })
}

/// Puts each table into its database's entry.
fn add_tables(databases: &mut [replseed_stage::manifest::Database], tables: &[schema::TablePlan]) {
    for tp in tables {
        let d = databases
            .iter_mut()
            .find(|d| d.name == tp.db)
            .expect("database of table");
        d.tables.push(tp.table.clone());
    }
}

/// What an extract with `plan` would copy, read without any lock and
/// without a snapshot: the manifest without position, chunks or totals, and
/// the accounts (when the plan copies them). `provision` checks every target
/// against it before the master pays for an extract.
pub async fn preview(
    plan: &ExtractPlan,
) -> Result<(Manifest, Option<replseed_db::accounts::AccountSet>), ExtractError> {
    let server = &plan.source;
    let mut conn = server
        .connect(&[
            "SET SESSION character_set_results=utf8mb4",
            "SET SESSION sql_quote_show_create=1",
        ])
        .await?;
    let source = preflight(&mut conn, server).await?;
    let (mut databases, tables) =
        schema::read_all(&mut conn, server, plan.databases.as_deref()).await?;
    let accounts = if plan.accounts {
        Some(accounts::read(&mut conn, server).await?)
    } else {
        None
    };
    let _ = conn.disconnect().await;
    add_tables(&mut databases, &tables);
    let manifest = plan.skeleton(
        source,
        Position {
            binlog_file: String::new(),
            binlog_pos: 0,
            gtid: String::new(),
            gtid_source: String::new(),
            gtid_binlog_state: String::new(),
        },
        Consistency {
            method: "preview".into(),
            attempts: 0,
            workers: 0,
            worker_positions: Vec::new(),
            commit_blocked_ms: 0,
            ddl_blocked_ms: 0,
            non_transactional_tables: Vec::new(),
        },
        databases,
    );
    Ok((manifest, accounts))
}

/// Waits for every task of `set`; on the first error, aborts the others and
/// returns that error. Results come in completion order.
async fn join_first_error<T: 'static>(
    mut set: tokio::task::JoinSet<Result<Vec<T>, ExtractError>>,
) -> Result<Vec<T>, ExtractError> {
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined.expect("worker task panicked") {
            Ok(r) => out.extend(r),
            Err(e) => {
                set.abort_all();
                while set.join_next().await.is_some() {}
                return Err(e);
            }
        }
    }
    Ok(out)
}
