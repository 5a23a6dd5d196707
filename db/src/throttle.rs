//! Protecting a server that is serving: a byte-rate limit shared by all the
//! sessions of a run, and a guard that pauses the work while the server is
//! busy or its replicas lag (as `pt-archiver --max-load` and
//! `--check-slave-lag` do).
//!
//! Both act between batches of rows: a paused worker stops reading, its
//! statement and its snapshot stay open, and it goes on where it was.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::Row;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::Server;

/// A limit of bytes per second over every session that shares it.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_sec: f64,
    /// When the bytes taken so far are paid for (a virtual clock).
    next: tokio::sync::Mutex<Instant>,
}

/// How far ahead of the clock a burst may run.
const BURST: Duration = Duration::from_millis(250);

impl RateLimit {
    /// A limit of `mb_per_sec` MiB per second; `None` for no limit.
    pub fn new(mb_per_sec: Option<f64>) -> Option<Arc<RateLimit>> {
        let rate = mb_per_sec.filter(|r| *r > 0.0)?;
        Some(Arc::new(RateLimit {
            bytes_per_sec: rate * 1024.0 * 1024.0,
            next: tokio::sync::Mutex::new(Instant::now()),
        }))
    }

    /// Accounts for `bytes`, waiting as long as the limit asks.
    pub async fn take(&self, bytes: u64) {
        let wait = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            // Idle time is not saved up beyond a short burst.
            let start = (*next).max(now.checked_sub(BURST).unwrap_or(now));
            *next = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec);
            next.saturating_duration_since(now + BURST)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// When the guard pauses the work.
#[derive(Debug, Clone, Default)]
pub struct GuardLimits {
    /// Pause while the server's `Threads_running`, less the run's own
    /// sessions, is above this.
    pub max_threads_running: Option<u64>,
    /// Pause while any of `replicas` is more than this many seconds behind
    /// (or not replicating).
    pub max_replica_lag: Option<u64>,
    /// The replicas whose lag is watched.
    pub replicas: Vec<Server>,
    /// The run's own sessions on the server (not counted as load).
    pub own_sessions: u64,
}

impl GuardLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.max_threads_running.is_some() || self.max_replica_lag.is_some()
    }
}

/// The guard's verdict, shared with the workers.
#[derive(Debug, Clone)]
pub struct Guard {
    paused: watch::Receiver<Option<String>>,
}

impl Guard {
    /// Returns at once while the server is fine; otherwise waits until it is.
    pub async fn wait(&self) {
        let mut rx = self.paused.clone();
        let _ = rx.wait_for(|p| p.is_none()).await;
    }
}

/// Starts watching `server` (and the replicas in `limits`) once a second.
/// `None` when no limit is set. The watcher ends when every [`Guard`] is
/// dropped.
pub fn guard(server: &Server, limits: GuardLimits) -> Option<Guard> {
    if !limits.any() {
        return None;
    }
    let (tx, rx) = watch::channel(None);
    let server = server.clone();
    tokio::spawn(async move {
        let mut conns: Vec<Option<mysql_async::Conn>> =
            (0..=limits.replicas.len()).map(|_| None).collect();
        let mut was: Option<String> = None;
        let mut since = Instant::now();
        loop {
            let verdict = check(&server, &limits, &mut conns).await;
            match (&was, &verdict) {
                (None, Some(why)) => {
                    since = Instant::now();
                    warn!(server = %server.addr(), "{why}: pausing the work");
                }
                (Some(_), None) => info!(
                    server = %server.addr(),
                    "going on after a pause of {:.0} s",
                    since.elapsed().as_secs_f64()
                ),
                _ => {}
            }
            was = verdict.clone();
            if tx.send(verdict).is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Some(Guard { paused: rx })
}

/// One look at the server and its replicas: why to pause, or `None`.
async fn check(
    server: &Server,
    limits: &GuardLimits,
    conns: &mut [Option<mysql_async::Conn>],
) -> Option<String> {
    if let Some(max) = limits.max_threads_running {
        match status(server, &mut conns[0]).await {
            // The guard's own statement counts too.
            Some(running) if running.saturating_sub(limits.own_sessions + 1) > max => {
                return Some(format!(
                    "Threads_running is {running} (replseed's own {} sessions not counted, the limit is {max})",
                    limits.own_sessions + 1
                ));
            }
            _ => {}
        }
    }
    if let Some(max) = limits.max_replica_lag {
        for (r, conn) in limits.replicas.iter().zip(conns[1..].iter_mut()) {
            match lag(r, conn).await {
                Ok(Some(s)) if s <= max => {}
                Ok(Some(s)) => {
                    return Some(format!(
                        "replica {} is {s} s behind (the limit is {max} s)",
                        r.addr()
                    ))
                }
                Ok(None) => {
                    return Some(format!(
                        "replica {} is not replicating (Seconds_Behind_Master is NULL)",
                        r.addr()
                    ))
                }
                // Unreachable: not a reason to stop the work for ever.
                Err(e) => warn!(replica = %r.addr(), "cannot read the replica's lag: {e}"),
            }
        }
    }
    None
}

async fn session<'a>(
    server: &Server,
    conn: &'a mut Option<mysql_async::Conn>,
) -> Result<&'a mut mysql_async::Conn, crate::DbError> {
    if conn.is_none() {
        *conn = Some(server.connect(&[]).await?);
    }
    Ok(conn.as_mut().expect("session just opened"))
}

async fn status(server: &Server, conn: &mut Option<mysql_async::Conn>) -> Option<u64> {
    let c = match session(server, conn).await {
        Ok(c) => c,
        Err(e) => {
            warn!("cannot read Threads_running: {e}");
            return None;
        }
    };
    match c
        .query_first::<(String, u64), _>("SHOW GLOBAL STATUS LIKE 'Threads_running'")
        .await
    {
        Ok(r) => r.map(|(_, v)| v),
        Err(e) => {
            *conn = None;
            warn!(server = %server.addr(), "cannot read Threads_running: {e}");
            None
        }
    }
}

/// Seconds behind the master (`None`: not replicating).
async fn lag(
    server: &Server,
    conn: &mut Option<mysql_async::Conn>,
) -> Result<Option<u64>, crate::DbError> {
    let c = session(server, conn).await?;
    let rows: Vec<Row> = match c.query("SHOW ALL SLAVES STATUS").await {
        Ok(r) => r,
        Err(e) => {
            let err = server.err("SHOW ALL SLAVES STATUS", &e);
            *conn = None;
            return Err(err);
        }
    };
    let mut worst: Option<u64> = Some(0);
    if rows.is_empty() {
        // Not a replica at all: a mistake in --lag-replica, not lag.
        return Err(server.fail(
            "reading the replica's lag",
            "it replicates from no master (SHOW ALL SLAVES STATUS is empty); check --lag-replica",
        ));
    }
    for r in rows {
        let s: Option<u64> = r
            .columns_ref()
            .iter()
            .position(|c| c.name_str() == "Seconds_Behind_Master")
            .and_then(|i| r.get_opt::<Option<u64>, _>(i))
            .and_then(Result::ok)
            .flatten();
        worst = match (worst, s) {
            (Some(w), Some(s)) => Some(w.max(s)),
            _ => None,
        };
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_rate_limit_spreads_bytes_over_time() {
        let limit = RateLimit::new(Some(4.0)).unwrap();
        let start = Instant::now();
        // 2 MiB at 4 MiB/s: about half a second, less the burst.
        for _ in 0..8 {
            limit.take(256 * 1024).await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(900),
            "{took:?}"
        );
        assert!(RateLimit::new(None).is_none());
        assert!(RateLimit::new(Some(0.0)).is_none());
    }
}
