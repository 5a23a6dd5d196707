//! The loader's sessions on the target: binary log off, foreign key and
//! CHECK constraints off, UTC, binary-safe.
//!
//! `unique_checks` stays on. With both `unique_checks=0` and
//! `foreign_key_checks=0`, InnoDB loads an empty table through its bulk
//! insert path, which locks the whole table until the chunk commits: the
//! other chunks of that table queue behind it (and fail with ERROR 1205 on a
//! replica with a short `innodb_lock_wait_timeout`). Measured on a durable
//! target (flush=1, sync_binlog=1), 500k sysbench rows per chunk: one chunk
//! takes 1.7 s either way (the bulk path gains nothing on sorted input), and
//! four chunks of one table in parallel take 4.7-6.0 s with the checks on
//! against 5.2-6.7 s with them off (docs/BENCHMARKS.md). The bulk path for
//! a table copied in one chunk, with its indexes kept in the CREATE, was
//! measured too: faster alone (4.2 s against 5.4 s with the deferred
//! `ALTER`), slower in a whole load of 8 such tables at 2 threads (31-37 s
//! against 29 s), so it is not used. Chunks of a table with an
//! AUTO_INCREMENT column are kept from queuing on its AUTO-INC lock by the
//! scheduler.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use replseed_db::Server;

use crate::LoadError;

/// The sql_mode of loader sessions (objects restore it after their own).
pub const SQL_MODE: &str = "NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION";

const SESSION: &[&str] = &[
    "SET SESSION sql_log_bin=0",
    "SET SESSION foreign_key_checks=0",
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

/// Connects a loader session (binlog off, checks off, UTC, binary-safe).
pub async fn session(server: &Server) -> Result<Conn, LoadError> {
    let mut conn = server.connect(&[]).await?;
    for s in SESSION {
        if let Err(e) = conn.query_drop(*s).await {
            let (msg, code) = replseed_db::describe(&e);
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

/// A loader session, waiting out a server that is restarting or a network
/// that is down (transient errors, [`replseed_db::retry::backoff`]).
pub async fn session_retrying(server: &Server) -> Result<Conn, LoadError> {
    let mut waits = replseed_db::retry::backoff();
    loop {
        match session(server).await {
            Err(e) if e.is_transient() => match waits.next() {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(e),
            },
            r => return r,
        }
    }
}
