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
//! 5. Then sequences (their state), views, routines, triggers and events.
//!
//! All sessions run with `sql_log_bin=0`: the load writes no GTIDs of the
//! target's own, so the replica can take the master's position afterwards.
//! Progress lives on the target in the `replseed` schema, so one read-only
//! snapshot loads into many targets and a new machine can resume a load.

#![warn(missing_docs)]

mod chunks;
pub mod ddl;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use replseed_stage::manifest::{Chunk, Database, Manifest, Object, Table};
use replseed_stage::sql::{exec, qualified, quote_ident, quote_str, rows, text, DbError, Server};
use replseed_stage::{SnapshotEvent, Stage, StageError};
use tracing::{debug, info, warn};

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
}

/// Live counters.
#[derive(Debug, Default)]
pub struct Progress {
    /// Rows loaded (this run).
    pub rows: AtomicU64,
    /// Rows to load in all (this run).
    pub rows_total: AtomicU64,
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

const SESSION: &[&str] = &[
    "SET SESSION sql_log_bin=0",
    "SET SESSION foreign_key_checks=0",
    "SET SESSION unique_checks=0",
    "SET SESSION check_constraint_checks=0",
    "SET SESSION sql_mode='NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'",
    "SET SESSION time_zone='+00:00'",
    "SET NAMES utf8mb4",
    "SET SESSION net_read_timeout=3600",
    "SET SESSION net_write_timeout=3600",
    "SET SESSION max_statement_time=0",
    "SET SESSION lock_wait_timeout=300",
    "SET SESSION system_versioning_insert_history=1",
];

const BOOKKEEPING: &[&str] = &[
    "CREATE DATABASE IF NOT EXISTS replseed",
    "CREATE TABLE IF NOT EXISTS replseed.load_runs (\
       snapshot VARCHAR(128) NOT NULL PRIMARY KEY, stage TEXT NOT NULL, gtid TEXT NOT NULL, \
       binlog_file VARCHAR(255) NOT NULL, binlog_pos BIGINT UNSIGNED NOT NULL, status VARCHAR(16) NOT NULL, \
       started_at DATETIME NOT NULL, finished_at DATETIME NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS replseed.load_objects (\
       snapshot VARCHAR(128) NOT NULL, kind VARCHAR(16) NOT NULL, db_name VARCHAR(64) NOT NULL, \
       name VARCHAR(64) NOT NULL, state VARCHAR(16) NOT NULL, \
       PRIMARY KEY (snapshot, kind, db_name, name)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS replseed.load_chunks (\
       snapshot VARCHAR(128) NOT NULL, path_hash BINARY(32) NOT NULL, path TEXT NOT NULL, \
       db_name VARCHAR(64) NOT NULL, table_name VARCHAR(64) NOT NULL, rows_loaded BIGINT UNSIGNED NOT NULL, \
       loaded_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
       PRIMARY KEY (snapshot, path_hash)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
];

/// Connects a loader session (binlog off, checks off, UTC, binary-safe).
pub async fn session(server: &Server) -> Result<Conn, LoadError> {
    let mut conn = server.connect(&[]).await?;
    for s in SESSION {
        if let Err(e) = conn.query_drop(*s).await {
            let (msg, code) = replseed_stage::sql::describe(&e);
            if code == Some(1193) && s.contains("system_versioning_insert_history") {
                // Before 10.11: fine unless the snapshot has system-versioned
                // tables, which preflight refuses on such a target.
                continue;
            }
            return Err(match code {
                Some(1227) | Some(1044) | Some(1142) => LoadError::Preflight {
                    server: server.name(),
                    detail: format!("`{s}` was denied ({msg}); the load user needs SUPER or BINLOG ADMIN (for sql_log_bin=0) and ALL PRIVILEGES on the snapshot's databases and on replseed.*"),
                },
                _ => LoadError::Db(server.err(format!("setting up the session (`{s}`)"), &e)),
            });
        }
    }
    Ok(conn)
}

fn version_tuple(v: &str) -> (u32, u32, u32) {
    let mut it = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let mut n = || it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (n(), n(), n())
}

/// The namespace an object name lives in, for conflict detection.
fn namespace(kind: &str) -> &str {
    match kind {
        "table" | "view" | "sequence" => "table",
        other => other,
    }
}

/// An object of the snapshot, as the load tracks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ObjKey {
    kind: String,
    db: String,
    name: String,
}

impl ObjKey {
    fn new(kind: &str, db: &str, name: &str) -> ObjKey {
        ObjKey {
            kind: namespace(kind).to_string(),
            db: db.to_string(),
            name: name.to_string(),
        }
    }
}

fn snapshot_objects(m: &Manifest) -> Vec<(ObjKey, String)> {
    let mut out = Vec::new();
    for d in &m.databases {
        out.push((ObjKey::new("database", &d.name, ""), "database".to_string()));
        for t in &d.tables {
            out.push((ObjKey::new("table", &d.name, &t.name), "table".into()));
        }
        for s in &d.sequences {
            out.push((ObjKey::new("sequence", &d.name, &s.name), "sequence".into()));
        }
        for v in &d.views {
            out.push((ObjKey::new("view", &d.name, &v.name), "view".into()));
        }
        for o in d.triggers.iter().chain(&d.routines).chain(&d.events) {
            out.push((ObjKey::new(&o.kind, &d.name, &o.name), o.kind.clone()));
        }
    }
    out
}

/// Existing objects on the target in the snapshot's databases: key -> kind as found.
async fn existing_objects(
    conn: &mut Conn,
    server: &Server,
    m: &Manifest,
) -> Result<HashMap<ObjKey, String>, DbError> {
    let dbs: Vec<String> = m.databases.iter().map(|d| quote_str(&d.name)).collect();
    let mut out = HashMap::new();
    if dbs.is_empty() {
        return Ok(out);
    }
    let list = dbs.join(",");
    for r in rows(
        conn,
        server,
        &format!(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ({list})"
        ),
    )
    .await?
    {
        out.insert(
            ObjKey::new("database", &text(&r[0]), ""),
            "database".to_string(),
        );
    }
    for r in rows(conn, server, &format!("SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({list})")).await? {
        let kind = match text(&r[2]).as_str() {
            "VIEW" => "view",
            "SEQUENCE" => "sequence",
            _ => "table",
        };
        out.insert(ObjKey::new(kind, &text(&r[0]), &text(&r[1])), kind.to_string());
    }
    for r in rows(conn, server, &format!("SELECT TRIGGER_SCHEMA, TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA IN ({list})")).await? {
        out.insert(ObjKey::new("trigger", &text(&r[0]), &text(&r[1])), "trigger".into());
    }
    for r in rows(conn, server, &format!("SELECT ROUTINE_SCHEMA, ROUTINE_NAME, LOWER(ROUTINE_TYPE) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA IN ({list})")).await? {
        let kind = text(&r[2]);
        out.insert(ObjKey::new(&kind, &text(&r[0]), &text(&r[1])), kind);
    }
    for r in rows(conn, server, &format!("SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA IN ({list})")).await? {
        out.insert(ObjKey::new("event", &text(&r[0]), &text(&r[1])), "event".into());
    }
    Ok(out)
}

fn drop_statement(key: &ObjKey, found_kind: &str) -> Option<String> {
    let q = qualified(&key.db, &key.name);
    Some(match found_kind {
        "table" => format!("DROP TABLE IF EXISTS {q}"),
        "view" => format!("DROP VIEW IF EXISTS {q}"),
        "sequence" => format!("DROP SEQUENCE IF EXISTS {q}"),
        "trigger" => format!("DROP TRIGGER IF EXISTS {q}"),
        "procedure" => format!("DROP PROCEDURE IF EXISTS {q}"),
        "function" => format!("DROP FUNCTION IF EXISTS {q}"),
        "package" => format!("DROP PACKAGE IF EXISTS {q}"),
        "package body" => format!("DROP PACKAGE BODY IF EXISTS {q}"),
        "event" => format!("DROP EVENT IF EXISTS {q}"),
        _ => return None, // databases are never dropped
    })
}

/// An object of the snapshot that already exists on the target.
#[derive(Debug, Clone)]
pub struct Conflict {
    key: ObjKey,
    /// What the snapshot has (`table`, `view`, ...).
    kind: String,
    /// What the target has under that name.
    found: String,
}

impl Conflict {
    /// One line naming the object, for the refusal message.
    pub fn describe(&self) -> String {
        let (kind, found, key) = (&self.kind, &self.found, &self.key);
        if key.kind == "database" {
            format!("database `{}`", key.db)
        } else if found == kind {
            format!("{kind} `{}`.`{}`", key.db, key.name)
        } else {
            format!("{kind} `{}`.`{}` (exists as a {found})", key.db, key.name)
        }
    }
}

/// Checks the target without changing it. Returns the conflicting objects
/// (not counting those this snapshot's earlier, interrupted load created).
pub async fn preflight(conn: &mut Conn, plan: &LoadPlan) -> Result<Vec<Conflict>, LoadError> {
    let server = &plan.target;
    let m = &plan.manifest;
    let r = rows(
        conn,
        server,
        "SELECT VERSION(), @@server_id, @@local_infile, @@secure_timestamp, @@lower_case_table_names, @@read_only",
    )
    .await?;
    let r = &r[0];
    let version = text(&r[0]);
    let fail = |detail: String| LoadError::Preflight {
        server: server.name(),
        detail,
    };
    if !version.contains("MariaDB") {
        return Err(fail(format!("server version {version} is not MariaDB")));
    }
    let (tv, sv) = (version_tuple(&version), version_tuple(&m.source.version));
    if (tv.0, tv.1) < (sv.0, sv.1) {
        return Err(fail(format!(
            "MariaDB {version} is older than the snapshot's source ({}); its DDL may not apply: use a target of the same or a newer version",
            m.source.version
        )));
    }
    if text(&r[1]) == m.source.server_id.to_string() {
        return Err(fail(format!(
            "its server_id is {}, the same as the snapshot's master: a replica needs its own server_id (and is this the master itself?)",
            m.source.server_id
        )));
    }
    if text(&r[2]) != "1" {
        return Err(fail(
            "local_infile is OFF; run SET GLOBAL local_infile=1 (and set it in the config file)"
                .into(),
        ));
    }
    let versioned = m.tables().any(|(_, t)| t.system_versioned);
    if versioned && text(&r[3]) != "NO" {
        return Err(fail(format!(
            "secure_timestamp={} forbids loading the history of system-versioned tables; start the target with secure_timestamp=NO",
            text(&r[3])
        )));
    }
    if text(&r[4]) != m.source.lower_case_table_names.to_string() {
        return Err(fail(format!(
            "lower_case_table_names is {} but the source has {}; set it to match before loading",
            text(&r[4]),
            m.source.lower_case_table_names
        )));
    }
    // Objects this snapshot's earlier load created are not conflicts.
    let ours = ours(conn, server, &m.snapshot).await?;
    let existing = existing_objects(conn, server, m).await?;
    let mut conflicts = Vec::new();
    for (key, kind) in snapshot_objects(m) {
        if let Some(found) = existing.get(&key) {
            if !ours.contains_key(&key) {
                conflicts.push(Conflict {
                    found: found.clone(),
                    key,
                    kind,
                });
            }
        }
    }
    Ok(conflicts)
}

/// Objects recorded by an earlier load of this snapshot: key -> state.
async fn ours(
    conn: &mut Conn,
    server: &Server,
    snapshot: &str,
) -> Result<HashMap<ObjKey, String>, DbError> {
    let exists = rows(
        conn,
        server,
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='replseed' AND TABLE_NAME='load_objects'",
    )
    .await?;
    if text(&exists[0][0]) == "0" {
        return Ok(HashMap::new());
    }
    let mut out = HashMap::new();
    for r in rows(
        conn,
        server,
        &format!(
            "SELECT kind, db_name, name, state FROM replseed.load_objects WHERE snapshot={}",
            quote_str(snapshot)
        ),
    )
    .await?
    {
        out.insert(
            ObjKey::new(&text(&r[0]), &text(&r[1]), &text(&r[2])),
            text(&r[3]),
        );
    }
    Ok(out)
}

async fn set_state(
    conn: &mut Conn,
    server: &Server,
    snapshot: &str,
    key: &ObjKey,
    state: &str,
) -> Result<(), DbError> {
    exec(
        conn,
        server,
        &format!(
            "INSERT INTO replseed.load_objects (snapshot, kind, db_name, name, state) VALUES ({}, {}, {}, {}, {}) \
             ON DUPLICATE KEY UPDATE state=VALUES(state)",
            quote_str(snapshot),
            quote_str(&key.kind),
            quote_str(&key.db),
            quote_str(&key.name),
            quote_str(state)
        ),
    )
    .await
}

/// Runs `sql` with `db` as the default database and the object's session context.
async fn create_object(
    conn: &mut Conn,
    server: &Server,
    db: &str,
    o: &Object,
) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!("USE {}", quote_ident(db))).await?;
    let mut restore = Vec::new();
    if let Some(m) = &o.sql_mode {
        conn.query_drop(format!("SET SESSION sql_mode={}", quote_str(m)))
            .await?;
        restore.push(
            "SET SESSION sql_mode='NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'".to_string(),
        );
    }
    if let Some(cs) = &o.character_set_client {
        conn.query_drop(format!(
            "SET SESSION character_set_client={}",
            quote_str(cs)
        ))
        .await?;
        restore.push("SET NAMES utf8mb4".to_string());
    }
    if let Some(c) = &o.collation_connection {
        conn.query_drop(format!("SET SESSION collation_connection={}", quote_str(c)))
            .await?;
    }
    if let Some(tz) = &o.time_zone {
        conn.query_drop(format!("SET SESSION time_zone={}", quote_str(tz)))
            .await?;
        restore.push("SET SESSION time_zone='+00:00'".to_string());
    }
    let r = conn.query_drop(o.create_sql.as_str()).await;
    for s in restore {
        let _ = conn.query_drop(s).await;
    }
    debug!(server = %server.name(), object = %o.name, "created {}", o.kind);
    r
}

/// Runs a load. `cancel` resolves when the user asks to stop.
pub async fn run(
    plan: LoadPlan,
    progress: Arc<Progress>,
    cancel: impl std::future::Future<Output = ()> + Send,
) -> Result<LoadReport, LoadError> {
    tokio::select! {
        r = run_inner(&plan, progress, None) => r,
        _ = cancel => Err(LoadError::Interrupted),
    }
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
    tokio::select! {
        r = run_inner(&plan, progress, Some(events)) => r,
        _ = cancel => Err(LoadError::Interrupted),
    }
}

struct TableWork {
    db: String,
    table: Table,
    deferred: Vec<String>,
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

type Queue = Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Item>>>;

async fn run_inner(
    plan: &LoadPlan,
    progress: Arc<Progress>,
    follow: Option<tokio::sync::mpsc::UnboundedReceiver<SnapshotEvent>>,
) -> Result<LoadReport, LoadError> {
    let started = Instant::now();
    let server = &plan.target;
    let m = plan.manifest.clone();
    progress.set_phase("preflight");
    let mut conn = session(server).await?;
    let conflicts = preflight(&mut conn, plan).await?;
    if !conflicts.is_empty() && !plan.force {
        return Err(LoadError::Conflicts {
            server: server.name(),
            snapshot: m.snapshot.clone(),
            conflicts: conflicts.iter().map(Conflict::describe).collect(),
        });
    }
    for s in BOOKKEEPING {
        exec(&mut conn, server, s).await.map_err(|e| LoadError::Preflight {
            server: server.name(),
            detail: format!("cannot create the bookkeeping schema `replseed` ({}); grant ALL ON replseed.* to the load user", e.message),
        })?;
    }
    let status = rows(
        &mut conn,
        server,
        &format!(
            "SELECT status FROM replseed.load_runs WHERE snapshot={}",
            quote_str(&m.snapshot)
        ),
    )
    .await?;
    let total_rows: u64 = m.totals.rows;
    // `done`: loaded; `replicating`: loaded and handed over to replication.
    // Either way there is nothing to do, and the run record must stay as it
    // is (catch-up relies on it never to rewind a running replica).
    let status = status.first().map(|r| text(&r[0]));
    if matches!(status.as_deref(), Some("done") | Some("replicating")) {
        info!(snapshot = %m.snapshot, target = %server.addr(), "snapshot already loaded on this target");
        let _ = conn.disconnect().await;
        return Ok(LoadReport {
            snapshot: m.snapshot.clone(),
            target: server.addr(),
            tables: m.totals.tables,
            rows: total_rows,
            chunks_loaded: 0,
            chunks_resumed: m.totals.chunks,
            replaced: Vec::new(),
            already_loaded: true,
            elapsed_s: started.elapsed().as_secs_f64(),
        });
    }
    exec(
        &mut conn,
        server,
        &format!(
            "INSERT INTO replseed.load_runs (snapshot, stage, gtid, binlog_file, binlog_pos, status, started_at) \
             VALUES ({}, {}, {}, {}, {}, 'loading', UTC_TIMESTAMP()) ON DUPLICATE KEY UPDATE status='loading'",
            quote_str(&m.snapshot),
            quote_str(plan.stage.url()),
            quote_str(&m.position.gtid),
            quote_str(&m.position.binlog_file),
            m.position.binlog_pos
        ),
    )
    .await?;

    // --force: drop exactly the conflicting objects.
    let mut replaced = Vec::new();
    if !conflicts.is_empty() {
        progress.set_phase("replacing conflicting objects");
        for Conflict { key, found, .. } in &conflicts {
            match drop_statement(key, found) {
                Some(sql) => {
                    warn!(target = %server.addr(), "--force: {sql}");
                    exec(&mut conn, server, &sql).await?;
                    replaced.push(format!("{found} {}.{}", key.db, key.name));
                }
                None => {
                    // An existing database is kept (other objects in it are not ours);
                    // its defaults are set to the snapshot's.
                    let d = m.databases.iter().find(|d| d.name == key.db).expect("db");
                    let sql = format!(
                        "ALTER DATABASE {} CHARACTER SET {} COLLATE {}",
                        quote_ident(&d.name),
                        d.charset,
                        d.collation
                    );
                    exec(&mut conn, server, &sql).await?;
                    set_state(&mut conn, server, &m.snapshot, key, "adopted").await?;
                    replaced.push(format!("database {} (kept, defaults set)", key.db));
                }
            }
        }
    }

    // Databases and tables.
    progress.set_phase("creating tables");
    let mut ours_now = ours(&mut conn, server, &m.snapshot).await?;
    let mut work: Vec<TableWork> = Vec::new();
    for d in &m.databases {
        let dkey = ObjKey::new("database", &d.name, "");
        if !ours_now.contains_key(&dkey) {
            set_state(&mut conn, server, &m.snapshot, &dkey, "pending").await?;
            let exists = rows(
                &mut conn,
                server,
                &format!(
                    "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME={}",
                    quote_str(&d.name)
                ),
            )
            .await?;
            if exists.is_empty() {
                exec(&mut conn, server, &d.create_sql).await?;
            }
            set_state(&mut conn, server, &m.snapshot, &dkey, "created").await?;
        }
        for t in &d.tables {
            let key = ObjKey::new("table", &d.name, &t.name);
            let split = if ddl::can_defer(t) {
                ddl::split_indexes(&t.create_sql)
            } else {
                ddl::SplitDdl {
                    create: t.create_sql.clone(),
                    deferred: Vec::new(),
                }
            };
            let state = ours_now.get(&key).cloned().unwrap_or_default();
            let fresh = matches!(state.as_str(), "" | "pending");
            if fresh {
                set_state(&mut conn, server, &m.snapshot, &key, "pending").await?;
                exec(
                    &mut conn,
                    server,
                    &format!("DROP TABLE IF EXISTS {}", qualified(&d.name, &t.name)),
                )
                .await?;
                exec(&mut conn, server, &format!("DELETE FROM replseed.load_chunks WHERE snapshot={} AND db_name={} AND table_name={}", quote_str(&m.snapshot), quote_str(&d.name), quote_str(&t.name))).await?;
                conn.query_drop(format!("USE {}", quote_ident(&d.name)))
                    .await
                    .map_err(|e| server.err("USE", &e))?;
                conn.query_drop(split.create.as_str())
                    .await
                    .map_err(|e| LoadError::Object {
                        object: format!("table {}.{}", d.name, t.name),
                        detail: replseed_stage::sql::describe(&e).0,
                    })?;
                set_state(&mut conn, server, &m.snapshot, &key, "created").await?;
                ours_now.insert(key.clone(), "created".into());
            } else if !t.transactional && state == "created" {
                // A non-transactional table cannot roll back a half-loaded chunk: reload it whole.
                exec(
                    &mut conn,
                    server,
                    &format!("TRUNCATE TABLE {}", qualified(&d.name, &t.name)),
                )
                .await?;
                exec(&mut conn, server, &format!("DELETE FROM replseed.load_chunks WHERE snapshot={} AND db_name={} AND table_name={}", quote_str(&m.snapshot), quote_str(&d.name), quote_str(&t.name))).await?;
            }
            let state = ours_now.get(&key).cloned().unwrap_or_default();
            work.push(TableWork {
                db: d.name.clone(),
                table: t.clone(),
                deferred: if state == "indexed" {
                    Vec::new()
                } else {
                    split.deferred
                },
                loaded: 0,
                total: None,
                finished: false,
            });
        }
    }

    // Chunks still to load.
    let done: HashSet<String> = rows(
        &mut conn,
        server,
        &format!(
            "SELECT path FROM replseed.load_chunks WHERE snapshot={}",
            quote_str(&m.snapshot)
        ),
    )
    .await?
    .iter()
    .map(|r| text(&r[0]))
    .collect();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Item>();
    let mut resumed = 0u64;
    if follow.is_none() {
        let mut queue = Vec::new();
        for (ti, w) in work.iter_mut().enumerate() {
            w.total = Some(w.table.chunks.len());
            for c in &w.table.chunks {
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
            let (ta, tb) = (&work[a.0].table, &work[b.0].table);
            tb.rows.cmp(&ta.rows).then(a.1.path.cmp(&b.1.path))
        });
        progress
            .rows_total
            .store(queue.iter().map(|(_, c)| c.rows).sum(), Ordering::Relaxed);
        if resumed > 0 {
            info!(snapshot = %m.snapshot, target = %server.addr(), resumed, "resuming: chunks already loaded are skipped");
        }
        // Tables with nothing left to load go first: only their indexes may be missing.
        for (ti, w) in work.iter_mut().enumerate() {
            if w.take_finish() {
                let _ = tx.send(Item::Finish(ti));
            }
        }
        for (ti, c) in queue {
            let _ = tx.send(Item::Chunk(ti, c));
        }
    }

    progress.set_phase("loading chunks");
    let work = Arc::new(Mutex::new(work));
    let queue: Queue = Arc::new(tokio::sync::Mutex::new(rx));
    let threads = plan.threads.max(1);
    let mut handles = Vec::new();
    for _ in 0..threads {
        let c = session(server).await?;
        handles.push(tokio::spawn(load_worker(
            c,
            plan.clone(),
            work.clone(),
            queue.clone(),
            progress.clone(),
        )));
    }
    // Following an extract: turn its events into work until it publishes.
    let mut published: Option<Arc<Manifest>> = None;
    let mut feed_err: Option<LoadError> = None;
    if let Some(mut events) = follow {
        let index: HashMap<(String, String), usize> = work
            .lock()
            .expect("work")
            .iter()
            .enumerate()
            .map(|(i, w)| ((w.db.clone(), w.table.name.clone()), i))
            .collect();
        let find = |d: &str, t: &str| index.get(&(d.to_string(), t.to_string())).copied();
        let workers_alive = || handles.iter().any(|h| !h.is_finished());
        while let Some(ev) = events.recv().await {
            match ev {
                SnapshotEvent::Chunk {
                    database,
                    table,
                    chunk,
                } => {
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
                SnapshotEvent::TableDone {
                    database,
                    table,
                    chunks,
                } => {
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
                SnapshotEvent::Published(manifest) => {
                    published = Some(manifest);
                    break;
                }
                SnapshotEvent::Started(_) => {}
            }
            if !workers_alive() {
                break; // a worker failed: its error is reported below
            }
        }
        if published.is_none() && workers_alive() {
            feed_err = Some(LoadError::Object {
                object: format!("snapshot {}", m.snapshot),
                detail: "the extract stopped before publishing it, so the load stops too; the target now holds part of this unpublished snapshot: load a published snapshot with --force to replace it".into(),
            });
        }
    }
    drop(tx); // no more work: workers stop when the queue is empty
    let mut first_err: Option<LoadError> = feed_err;
    if first_err.is_some() {
        for h in &handles {
            h.abort();
        }
    }
    for h in handles {
        match h.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(j) if j.is_cancelled() => {}
            Err(j) => panic!("load worker panicked: {j}"),
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    // The rest uses the published manifest when following an extract.
    let m = published.unwrap_or(m);

    // Everything that is not table data.
    progress.set_phase("creating views, routines, triggers, events");
    let mut ours_now = ours(&mut conn, server, &m.snapshot).await?;
    for d in &m.databases {
        create_sequences(&mut conn, server, &m.snapshot, d, &mut ours_now).await?;
    }
    // Routines first: views may call functions; triggers may call both.
    for d in &m.databases {
        create_objects(
            &mut conn,
            server,
            &m.snapshot,
            d,
            &d.routines,
            &mut ours_now,
        )
        .await?;
    }
    create_views(&mut conn, server, &m, &mut ours_now).await?;
    for d in &m.databases {
        create_objects(
            &mut conn,
            server,
            &m.snapshot,
            d,
            &d.triggers,
            &mut ours_now,
        )
        .await?;
        create_objects(&mut conn, server, &m.snapshot, d, &d.events, &mut ours_now).await?;
    }
    exec(
        &mut conn,
        server,
        &format!("UPDATE replseed.load_runs SET status='done', finished_at=UTC_TIMESTAMP() WHERE snapshot={}", quote_str(&m.snapshot)),
    )
    .await?;
    let _ = conn.disconnect().await;
    progress.set_phase("done");
    Ok(LoadReport {
        snapshot: m.snapshot.clone(),
        target: server.addr(),
        tables: m.totals.tables,
        rows: m.totals.rows,
        chunks_loaded: progress.chunks.load(Ordering::Relaxed),
        chunks_resumed: resumed,
        replaced,
        already_loaded: false,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// Creates routines, triggers or events that are not created yet.
async fn create_objects(
    conn: &mut Conn,
    server: &Server,
    snapshot: &str,
    d: &Database,
    objects: &[Object],
    ours_now: &mut HashMap<ObjKey, String>,
) -> Result<(), LoadError> {
    for o in objects {
        let key = ObjKey::new(&o.kind, &d.name, &o.name);
        if ours_now.get(&key).map(|s| s == "created").unwrap_or(false) {
            continue;
        }
        set_state(conn, server, snapshot, &key, "pending").await?;
        if let Some(drop) = drop_statement(&key, &o.kind) {
            exec(conn, server, &drop).await?;
        }
        create_object(conn, server, &d.name, o)
            .await
            .map_err(|e| LoadError::Object {
                object: format!("{} {}.{}", o.kind, d.name, o.name),
                detail: replseed_stage::sql::describe(&e).0,
            })?;
        if o.kind == "event" && o.create_sql.contains(" ENABLE ") {
            // A replica must not run the master's events itself (MariaDB
            // marks replicated events this way too).
            let sql = format!(
                "ALTER EVENT {} DISABLE ON SLAVE",
                qualified(&d.name, &o.name)
            );
            exec(conn, server, &sql).await?;
        }
        set_state(conn, server, snapshot, &key, "created").await?;
        ours_now.insert(key, "created".into());
    }
    Ok(())
}

async fn finish_table(
    conn: &mut Conn,
    server: &Server,
    snapshot: &str,
    db: &str,
    name: &str,
    deferred: &[String],
) -> Result<(), LoadError> {
    let key = ObjKey::new("table", db, name);
    set_state(conn, server, snapshot, &key, "loaded").await?;
    if !deferred.is_empty() {
        // Only add what is missing (a killed ALTER leaves none or all, but be exact).
        let have: BTreeSet<String> = rows(
            conn,
            server,
            &format!(
                "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA={} AND TABLE_NAME={}",
                quote_str(db),
                quote_str(name)
            ),
        )
        .await?
        .iter()
        .map(|r| text(&r[0]))
        .collect();
        let missing: Vec<&String> = deferred
            .iter()
            .filter(|clause| {
                index_name(clause)
                    .map(|n| !have.contains(&n))
                    .unwrap_or(true)
            })
            .collect();
        if !missing.is_empty() {
            let t0 = Instant::now();
            let sql = format!(
                "ALTER TABLE {} {}",
                qualified(db, name),
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            conn.query_drop(sql.as_str())
                .await
                .map_err(|e| LoadError::Object {
                    object: format!("indexes of {db}.{name}"),
                    detail: replseed_stage::sql::describe(&e).0,
                })?;
            info!(table = %format!("{db}.{name}"), indexes = missing.len(), secs = t0.elapsed().as_secs_f64(), "secondary indexes built");
        }
    }
    set_state(conn, server, snapshot, &key, "indexed").await?;
    Ok(())
}

/// The index name in an `ADD [UNIQUE|FULLTEXT|SPATIAL] KEY `name` (...)` clause.
fn index_name(clause: &str) -> Option<String> {
    let start = clause.find('`')?;
    let rest = &clause[start + 1..];
    let mut name = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '`' {
            if chars.peek() == Some(&'`') {
                chars.next();
                name.push('`');
            } else {
                return Some(name);
            }
        } else {
            name.push(c);
        }
    }
    None
}

async fn load_worker(
    mut conn: Conn,
    plan: LoadPlan,
    work: Arc<Mutex<Vec<TableWork>>>,
    queue: Queue,
    progress: Arc<Progress>,
) -> Result<(), LoadError> {
    let server = &plan.target;
    loop {
        let next = queue.lock().await.recv().await;
        let ti = match next {
            None => break,
            Some(Item::Finish(ti)) => ti,
            Some(Item::Chunk(ti, chunk)) => {
                let (db, table) = {
                    let w = work.lock().expect("work");
                    (w[ti].db.clone(), w[ti].table.clone())
                };
                let local = plan.stage.fetch_chunk(&chunk, &plan.spool).await?;
                let t0 = Instant::now();
                let n = chunks::load_chunk(
                    &mut conn,
                    server,
                    &db,
                    &table,
                    &chunk,
                    local.path.clone(),
                    &plan.manifest.snapshot,
                    table.transactional,
                )
                .await?;
                drop(local);
                debug!(chunk = %chunk.path, rows = n, secs = t0.elapsed().as_secs_f64(), "chunk loaded");
                progress.rows.fetch_add(n, Ordering::Relaxed);
                progress.chunks.fetch_add(1, Ordering::Relaxed);
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
        let (db, name, deferred) = {
            let w = work.lock().expect("work");
            (
                w[ti].db.clone(),
                w[ti].table.name.clone(),
                w[ti].deferred.clone(),
            )
        };
        finish_table(
            &mut conn,
            server,
            &plan.manifest.snapshot,
            &db,
            &name,
            &deferred,
        )
        .await?;
    }
    let _ = conn.disconnect().await;
    Ok(())
}

async fn create_sequences(
    conn: &mut Conn,
    server: &Server,
    snapshot: &str,
    d: &Database,
    ours_now: &mut HashMap<ObjKey, String>,
) -> Result<(), LoadError> {
    for s in &d.sequences {
        let key = ObjKey::new("sequence", &d.name, &s.name);
        if ours_now
            .get(&key)
            .map(|st| st == "created")
            .unwrap_or(false)
        {
            continue;
        }
        set_state(conn, server, snapshot, &key, "pending").await?;
        exec(
            conn,
            server,
            &format!("DROP SEQUENCE IF EXISTS {}", qualified(&d.name, &s.name)),
        )
        .await?;
        let obj = Object {
            name: s.name.clone(),
            kind: "sequence".into(),
            create_sql: s.create_sql.clone(),
            sql_mode: None,
            character_set_client: None,
            collation_connection: None,
            database_collation: None,
            table: None,
            time_zone: None,
        };
        create_object(conn, server, &d.name, &obj)
            .await
            .map_err(|e| LoadError::Object {
                object: format!("sequence {}.{}", d.name, s.name),
                detail: replseed_stage::sql::describe(&e).0,
            })?;
        if s.row.len() == 8 {
            // next_not_cached_value, and the cycle count as SETVAL's round.
            exec(
                conn,
                server,
                &format!(
                    "DO SETVAL({}, {}, 0, {})",
                    qualified(&d.name, &s.name),
                    s.row[0],
                    s.row[7]
                ),
            )
            .await?;
        }
        set_state(conn, server, snapshot, &key, "created").await?;
        ours_now.insert(key, "created".into());
    }
    Ok(())
}

async fn create_views(
    conn: &mut Conn,
    server: &Server,
    m: &Manifest,
    ours_now: &mut HashMap<ObjKey, String>,
) -> Result<(), LoadError> {
    // Views may use other views: create in rounds until none is left.
    let mut pending: Vec<(&Database, &Object)> = m
        .databases
        .iter()
        .flat_map(|d| d.views.iter().map(move |v| (d, v)))
        .filter(|(d, v)| {
            !ours_now
                .get(&ObjKey::new("view", &d.name, &v.name))
                .map(|s| s == "created")
                .unwrap_or(false)
        })
        .collect();
    while !pending.is_empty() {
        let mut next = Vec::new();
        let mut last_err = None;
        for (d, v) in pending.iter().copied() {
            let key = ObjKey::new("view", &d.name, &v.name);
            set_state(conn, server, &m.snapshot, &key, "pending").await?;
            exec(
                conn,
                server,
                &format!("DROP VIEW IF EXISTS {}", qualified(&d.name, &v.name)),
            )
            .await?;
            match create_object(conn, server, &d.name, v).await {
                Ok(()) => {
                    set_state(conn, server, &m.snapshot, &key, "created").await?;
                    ours_now.insert(key, "created".into());
                }
                Err(e) => {
                    last_err = Some((
                        format!("view {}.{}", d.name, v.name),
                        replseed_stage::sql::describe(&e).0,
                    ));
                    next.push((d, v));
                }
            }
        }
        if next.len() == pending.len() {
            let (object, detail) = last_err.expect("an error");
            return Err(LoadError::Object { object, detail });
        }
        pending = next;
    }
    Ok(())
}
