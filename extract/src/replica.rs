//! Taking a snapshot from a replica, to spare the master.
//!
//! A replica's own binary log says nothing about the master's transactions
//! when `log_slave_updates` is off (or its binary log is off), so the
//! snapshot's position comes from the replica's `gtid_slave_pos` instead:
//! the replica's SQL threads are stopped, `gtid_slave_pos` is read (it
//! covers the replicated domains only, not the replica's own), the
//! workers' snapshots open, and the SQL threads start again, a few
//! milliseconds later. The replica's accounts are read while its SQL
//! threads are stopped too. A failed or interrupted extract restarts the
//! threads it stopped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use replseed_db::{first, quote_str, text, Server};
use tracing::{info, warn};

use crate::ExtractError;

/// Why a replica's snapshot takes `gtid_slave_pos`, recorded in the manifest.
pub const GTID_SOURCE: &str = "@@gtid_slave_pos of the replica the snapshot was taken from, read with its SQL threads stopped while the snapshots opened: the master's transactions the data contains. The replica's own binlog position says nothing about them when log_slave_updates or its binary log is off.";

/// A source that replicates from one or more masters.
#[derive(Debug, Clone)]
pub struct ReplicaSource {
    /// `host:port` of each master (one per replication connection).
    pub masters: Vec<String>,
    /// Connections whose SQL thread is running (the default one is ``).
    pub running: Vec<String>,
}

fn privilege(server: &Server, what: &str, grant: &str) -> ExtractError {
    ExtractError::Privilege {
        server: server.name(),
        detail: format!(
            "{what} was denied: a snapshot taken from a replica stops its SQL threads briefly"
        ),
        grant: grant.into(),
    }
}

/// Whether `server` is a replica (has replication connections).
pub async fn detect(
    conn: &mut Conn,
    server: &Server,
) -> Result<Option<ReplicaSource>, ExtractError> {
    let r: Result<Vec<Row>, _> = conn.query("SHOW ALL SLAVES STATUS").await;
    let rows = match r {
        Ok(rows) => rows,
        Err(mysql_async::Error::Server(e)) if e.code == 1227 => {
            // Not allowed to look: the running replication threads still show.
            let r = first(conn, server, "SHOW GLOBAL STATUS LIKE 'Slaves_running'", ()).await?;
            if r.get(1).map(text).unwrap_or_default() != "0" {
                return Err(privilege(
                    server,
                    "SHOW ALL SLAVES STATUS",
                    "GRANT SLAVE MONITOR, REPLICATION SLAVE ADMIN ON *.*",
                ));
            }
            return Ok(None);
        }
        Err(e) => return Err(server.err("SHOW ALL SLAVES STATUS", &e).into()),
    };
    if rows.is_empty() {
        return Ok(None);
    }
    let mut masters = Vec::new();
    let mut running = Vec::new();
    for r in rows {
        let get = |k: &str| {
            r.get_opt::<String, _>(k)
                .and_then(|v| v.ok())
                .unwrap_or_default()
        };
        masters.push(format!("{}:{}", get("Master_Host"), get("Master_Port")));
        if get("Slave_SQL_Running") == "Yes" {
            running.push(get("Connection_name"));
        }
    }
    Ok(Some(ReplicaSource { masters, running }))
}

fn thread_statement(verb: &str, connection: &str) -> String {
    if connection.is_empty() {
        format!("{verb} SLAVE SQL_THREAD")
    } else {
        format!("{verb} SLAVE {} SQL_THREAD", quote_str(connection))
    }
}

/// Stops the running SQL threads and returns `gtid_slave_pos` once none
/// applies anything. `paused` records what to restart, for every exit path.
pub async fn pause(
    conn: &mut Conn,
    server: &Server,
    source: &ReplicaSource,
    paused: &Arc<Mutex<Vec<String>>>,
) -> Result<String, ExtractError> {
    for c in &source.running {
        conn.query_drop(thread_statement("STOP", c))
            .await
            .map_err(|e| match &e {
                mysql_async::Error::Server(s) if s.code == 1227 => privilege(
                    server,
                    "STOP SLAVE SQL_THREAD",
                    "GRANT REPLICATION SLAVE ADMIN ON *.*",
                ),
                _ => ExtractError::Db(server.err("stopping the SQL thread", &e)),
            })?;
        paused.lock().expect("paused").push(c.clone());
    }
    // STOP SLAVE returns once the thread has stopped; check anyway.
    let t0 = Instant::now();
    loop {
        let r: Vec<Row> = conn
            .query("SHOW ALL SLAVES STATUS")
            .await
            .map_err(|e| server.err("SHOW ALL SLAVES STATUS", &e))?;
        let busy = r.iter().any(|r| {
            let name: String = r.get("Connection_name").unwrap_or_default();
            source.running.contains(&name)
                && r.get::<String, _>("Slave_SQL_Running").as_deref() == Some("Yes")
        });
        if !busy {
            break;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(ExtractError::SourceConfig {
                server: server.name(),
                detail: "the replica's SQL thread did not stop within 60 s; retry".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = first(conn, server, "SELECT @@GLOBAL.gtid_slave_pos", ()).await?;
    Ok(r.first().map(text).unwrap_or_default())
}

/// Starts the SQL threads `paused` lists again.
pub async fn resume(
    conn: &mut Conn,
    server: &Server,
    paused: &Arc<Mutex<Vec<String>>>,
) -> Result<(), ExtractError> {
    let names: Vec<String> = std::mem::take(&mut *paused.lock().expect("paused"));
    let mut first_err = None;
    for c in &names {
        if let Err(e) = conn.query_drop(thread_statement("START", c)).await {
            first_err.get_or_insert(ExtractError::Db(
                server.err("restarting the SQL thread", &e),
            ));
        }
    }
    if !names.is_empty() {
        info!(connections = ?names, "replica SQL threads restarted");
    }
    first_err.map_or(Ok(()), Err)
}

/// After a failure: restarts what is still paused, on a connection of its own.
pub async fn resume_after_failure(server: &Server, paused: &Arc<Mutex<Vec<String>>>) {
    if paused.lock().expect("paused").is_empty() {
        return;
    }
    match server.connect(&[]).await {
        Ok(mut c) => {
            if let Err(e) = resume(&mut c, server, paused).await {
                warn!(error = %e, "could not restart the replica's SQL thread: run START SLAVE on it");
            }
            let _ = c.disconnect().await;
        }
        Err(e) => {
            warn!(error = %e, "could not restart the replica's SQL thread: run START SLAVE on it")
        }
    }
}
