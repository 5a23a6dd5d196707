//! The load's progress, kept on the target in the `replseed` schema: one
//! row per load run, per object and per loaded chunk. A chunk's row is
//! written in the chunk's own transaction (see `chunks.rs`), so a killed
//! load resumes exactly.

use std::collections::{HashMap, HashSet};

use mysql_async::Conn;
use replseed_db::{exec, rows, text, DbError, Server};
use replseed_stage::manifest::Manifest;

use crate::LoadError;

const SCHEMA: &[&str] = &[
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
    // The replication filter catch-up gave a subset replica (verify checks it).
    "CREATE TABLE IF NOT EXISTS replseed.replication_filters (\
       snapshot VARCHAR(128) NOT NULL PRIMARY KEY, wild_do_table TEXT NOT NULL) \
       ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
];

/// The statement that records a loaded chunk, inside its transaction.
/// Parameters: snapshot, path, path, database, table, rows.
pub const RECORD_CHUNK: &str = "INSERT INTO replseed.load_chunks \
     (snapshot, path_hash, path, db_name, table_name, rows_loaded) \
     VALUES (?, UNHEX(SHA2(?, 256)), ?, ?, ?, ?)";

/// The namespace an object name lives in, for conflict detection.
fn namespace(kind: &str) -> &str {
    match kind {
        "table" | "view" | "sequence" => "table",
        other => other,
    }
}

/// An object of the snapshot, as the load tracks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    /// Namespace: `database`, `table` (tables, views, sequences), `trigger`, ...
    pub kind: String,
    /// Database.
    pub db: String,
    /// Name (empty for a database).
    pub name: String,
}

impl ObjKey {
    /// The key of an object of `kind` (its namespace is derived).
    pub fn new(kind: &str, db: &str, name: &str) -> ObjKey {
        ObjKey {
            kind: namespace(kind).to_string(),
            db: db.to_string(),
            name: name.to_string(),
        }
    }
}

/// State of each object recorded by loads of one snapshot: key -> state
/// (`pending`, `created`, `adopted`, `loaded`, `indexed`).
pub type States = HashMap<ObjKey, String>;

/// Creates the bookkeeping schema if it is missing.
pub async fn ensure_schema(conn: &mut Conn, server: &Server) -> Result<(), LoadError> {
    for s in SCHEMA {
        exec(conn, server, s, ()).await.map_err(|e| LoadError::Preflight {
            server: server.name(),
            detail: format!("cannot create the bookkeeping schema `replseed` ({}); grant ALL ON replseed.* to the load user", e.message),
        })?;
    }
    Ok(())
}

/// Objects recorded by an earlier load of this snapshot (nothing when the
/// target has no bookkeeping yet: preflight must not create it).
pub async fn states(conn: &mut Conn, server: &Server, snapshot: &str) -> Result<States, DbError> {
    let exists = rows(
        conn,
        server,
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='replseed' AND TABLE_NAME='load_objects'",
        (),
    )
    .await?;
    if text(&exists[0][0]) == "0" {
        return Ok(HashMap::new());
    }
    let mut out = HashMap::new();
    for r in rows(
        conn,
        server,
        "SELECT kind, db_name, name, state FROM replseed.load_objects WHERE snapshot=?",
        (snapshot,),
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

/// Records the state of one object.
pub async fn set_state(
    conn: &mut Conn,
    server: &Server,
    snapshot: &str,
    key: &ObjKey,
    state: &str,
) -> Result<(), DbError> {
    exec(
        conn,
        server,
        "INSERT INTO replseed.load_objects (snapshot, kind, db_name, name, state) VALUES (?, ?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE state=VALUES(state)",
        (snapshot, &key.kind, &key.db, &key.name, state),
    )
    .await
}

/// Status of this snapshot's load run on the target, if there is one:
/// `loading`, `done`, or `replicating` (handed over to replication).
pub async fn run_status(
    conn: &mut Conn,
    server: &Server,
    snapshot: &str,
) -> Result<Option<String>, DbError> {
    let r = rows(
        conn,
        server,
        "SELECT status FROM replseed.load_runs WHERE snapshot=?",
        (snapshot,),
    )
    .await?;
    Ok(r.first().map(|r| text(&r[0])))
}

/// Records that the load of `m` from `stage_url` is running.
pub async fn start_run(
    conn: &mut Conn,
    server: &Server,
    m: &Manifest,
    stage_url: &str,
) -> Result<(), DbError> {
    exec(
        conn,
        server,
        "INSERT INTO replseed.load_runs (snapshot, stage, gtid, binlog_file, binlog_pos, status, started_at) \
         VALUES (?, ?, ?, ?, ?, 'loading', UTC_TIMESTAMP()) ON DUPLICATE KEY UPDATE status='loading'",
        (
            &m.snapshot,
            stage_url,
            &m.position.gtid,
            &m.position.binlog_file,
            m.position.binlog_pos,
        ),
    )
    .await
}

/// Records that the load is complete.
pub async fn finish_run(conn: &mut Conn, server: &Server, snapshot: &str) -> Result<(), DbError> {
    exec(
        conn,
        server,
        "UPDATE replseed.load_runs SET status='done', finished_at=UTC_TIMESTAMP() WHERE snapshot=?",
        (snapshot,),
    )
    .await
}

/// Paths of the chunks of this snapshot already loaded.
pub async fn loaded_chunks(
    conn: &mut Conn,
    server: &Server,
    snapshot: &str,
) -> Result<HashSet<String>, DbError> {
    Ok(rows(
        conn,
        server,
        "SELECT path FROM replseed.load_chunks WHERE snapshot=?",
        (snapshot,),
    )
    .await?
    .iter()
    .map(|r| text(&r[0]))
    .collect())
}

/// Forgets the loaded chunks of one table (it is being loaded again whole).
pub async fn forget_chunks(
    conn: &mut Conn,
    server: &Server,
    snapshot: &str,
    db: &str,
    table: &str,
) -> Result<(), DbError> {
    exec(
        conn,
        server,
        "DELETE FROM replseed.load_chunks WHERE snapshot=? AND db_name=? AND table_name=?",
        (snapshot, db, table),
    )
    .await
}
