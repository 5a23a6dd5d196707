//! Catch-up: hand a loaded target over to native MariaDB replication at the
//! snapshot's GTID, and wait until it has caught up with the master.
//!
//! 1. The master must still hold the binlogs from the snapshot's position:
//!    the snapshot's binlog file must be listed by `SHOW BINARY LOGS` and
//!    `BINLOG_GTID_POS()` at that offset must give the snapshot's GTID (a
//!    `RESET MASTER` since the snapshot fails this). Otherwise
//!    [`CatchupError::BinlogPurged`]: a newer snapshot is needed.
//! 2. The target must hold a completed load of that snapshot.
//! 3. `SET GLOBAL gtid_slave_pos`, `CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos`,
//!    `START SLAVE`. The hand-off is recorded on the target before the
//!    replica starts (`archive`: its position is its own), so that running
//!    catch-up again never rewinds a replica that has moved on; `replicating`
//!    once the master has accepted the replica's dump. When the master lacks
//!    the replica's position (before the switch, or refusing it with 1236),
//!    the stage's binlog archive bridges it (`archive.rs`), again and again,
//!    or exit 3 until the archive has caught up.
//! 4. The master's `gtid_binlog_pos` at the start is the goal; the replica
//!    is polled (`MASTER_GTID_WAIT`, `SHOW SLAVE STATUS`) until it reaches
//!    it. A replication error stops the wait with the replica's own message.

#![warn(missing_docs)]

pub mod archive;
pub mod filters;
pub mod until;
pub mod verify;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use replseed_binlog::GtidState;
use replseed_db::{exec, first, quote_str, text, DbError, Server};
use replseed_stage::manifest::Manifest;
use secrecy::ExposeSecret;
use tracing::{info, warn};

/// Everything that can stop a catch-up.
#[derive(Debug, thiserror::Error)]
pub enum CatchupError {
    /// Talking to a server failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The master no longer has the binlogs from the snapshot's position.
    #[error("{server}: the binary logs from the snapshot's position ({file}:{pos}, GTID '{gtid}') were purged or reset on the master ({detail}); take a newer snapshot with `replseed extract` and load it")]
    BinlogPurged {
        /// Master name.
        server: String,
        /// Snapshot binlog file.
        file: String,
        /// Snapshot binlog position.
        pos: u64,
        /// Snapshot GTID.
        gtid: String,
        /// What the master has.
        detail: String,
    },
    /// The replica read the archive to its end, and the master no longer
    /// has what comes after: the archive must catch up first.
    #[error("{server}: the replica is at GTID '{at}', which the master no longer has after ({detail}); run `replseed archive` until the archive has caught up with the master, then catchup again (the replica resumes where it is)")]
    ArchiveBehind {
        /// Target name.
        server: String,
        /// The replica's gtid_slave_pos.
        at: String,
        /// What the master and the archive have.
        detail: String,
    },
    /// The target has not completed a load of the snapshot.
    #[error("{server}: snapshot {snapshot} is not completely loaded here ({detail}); run `replseed load` first")]
    NotLoaded {
        /// Target name.
        server: String,
        /// Snapshot id.
        snapshot: String,
        /// What was found.
        detail: String,
    },
    /// The target cannot replicate as asked.
    #[error("{server}: {detail}")]
    Setup {
        /// Target name.
        server: String,
        /// What is wrong and what to do.
        detail: String,
    },
    /// Replication broke while catching up.
    #[error("{server}: replication stopped: {detail}; fix the cause on the replica, then run catchup again")]
    Replication {
        /// Target name.
        server: String,
        /// IO and SQL thread errors.
        detail: String,
    },
    /// The replica did not catch up in time.
    #[error("{server}: not caught up after {secs} s (at '{at}', goal '{goal}'); it keeps replicating: run catchup again to keep waiting")]
    Timeout {
        /// Target name.
        server: String,
        /// Seconds waited.
        secs: u64,
        /// Replica's gtid_slave_pos.
        at: String,
        /// Goal.
        goal: String,
    },
    /// A point-in-time copy was asked for a point the stage cannot reach.
    #[error("{point} is outside what the stage holds: {detail}")]
    OutOfRange {
        /// The point as asked.
        point: String,
        /// Why, and the window the stage reaches.
        detail: String,
    },
    /// Interrupted.
    #[error("interrupted; the replica keeps replicating on its own")]
    Interrupted,
}

/// A validated catch-up request.
#[derive(Debug, Clone)]
pub struct CatchupPlan {
    /// The master.
    pub source: Server,
    /// The loaded target.
    pub target: Server,
    /// The snapshot loaded into the target.
    pub manifest: std::sync::Arc<Manifest>,
    /// Replication user on the master.
    pub replication_user: String,
    /// Its password.
    pub replication_password: secrecy::SecretString,
    /// Master host as the replica reaches it.
    pub master_host: String,
    /// Master port as the replica reaches it.
    pub master_port: u16,
    /// TLS of the replication link.
    pub master_tls: MasterTls,
    /// Give up after this long (`None`: wait as long as it takes).
    pub timeout: Option<Duration>,
    /// The stage's binlog archive, served to the replica when the master
    /// has purged the snapshot's binlogs.
    pub archive: Option<archive::ArchiveRoute>,
}

/// TLS of the replication link: `MASTER_SSL*` of `CHANGE MASTER`, from the
/// `--source` URL's `ssl-*` settings, with the file paths overridable for
/// when the replica sees other paths.
#[derive(Debug, Clone, Default)]
pub struct MasterTls {
    /// The mode of the source URL.
    pub mode: replseed_db::tls::TlsMode,
    /// MASTER_SSL_CA.
    pub ca: Option<String>,
    /// MASTER_SSL_CERT.
    pub cert: Option<String>,
    /// MASTER_SSL_KEY.
    pub key: Option<String>,
}

impl MasterTls {
    /// From the source server, with path overrides.
    pub fn of(
        source: &Server,
        ca: Option<String>,
        cert: Option<String>,
        key: Option<String>,
    ) -> MasterTls {
        let t = source.tls();
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        MasterTls {
            mode: t.mode,
            ca: ca.or_else(|| path(&t.ca)),
            cert: cert.or_else(|| path(&t.cert)),
            key: key.or_else(|| path(&t.key)),
        }
    }

    /// The `CHANGE MASTER` options; `in_use` says whether the master offers
    /// TLS (what `preferred` follows).
    fn options(&self, in_use: bool) -> String {
        use replseed_db::tls::TlsMode;
        let on = match self.mode {
            TlsMode::Disabled => false,
            TlsMode::Preferred => in_use,
            _ => true,
        };
        if !on {
            return ", MASTER_SSL=0".into();
        }
        let mut o = String::from(", MASTER_SSL=1");
        for (k, v) in [
            ("MASTER_SSL_CA", &self.ca),
            ("MASTER_SSL_CERT", &self.cert),
            ("MASTER_SSL_KEY", &self.key),
        ] {
            if let Some(v) = v {
                o.push_str(&format!(", {k}={}", quote_str(v)));
            }
        }
        let verify = self.mode == TlsMode::VerifyIdentity;
        o.push_str(&format!(
            ", MASTER_SSL_VERIFY_SERVER_CERT={}",
            u8::from(verify)
        ));
        o
    }
}

/// Whether the master offers TLS (what `ssl-mode=preferred` follows for
/// the replication link; replseed's own session may have gone over the
/// Unix socket).
async fn tls_in_use(conn: &mut Conn, server: &Server) -> Result<bool, DbError> {
    let r = first(conn, server, "SELECT @@GLOBAL.have_ssl", ()).await?;
    Ok(r.first()
        .map(text)
        .is_some_and(|v| v.eq_ignore_ascii_case("YES")))
}

/// Live state, for progress.
#[derive(Debug, Default)]
pub struct Progress {
    /// Human-readable state.
    pub state: std::sync::Mutex<String>,
    /// Seconds behind the master, as the replica reports.
    pub behind: std::sync::atomic::AtomicU64,
    /// Transactions between the snapshot's GTID and the goal (the master's
    /// position when the wait began).
    pub transactions_total: std::sync::atomic::AtomicU64,
    /// Transactions the replica has yet to apply to reach the goal.
    pub transactions_behind: std::sync::atomic::AtomicU64,
}

/// Result of a catch-up.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CatchupReport {
    /// Target `host:port`.
    pub target: String,
    /// GTID replication started from (the snapshot's).
    pub gtid_start: String,
    /// The master's position at the start of the catch-up (the goal).
    pub gtid_goal: String,
    /// The replica's `gtid_slave_pos` at the end.
    pub gtid_reached: String,
    /// Whether replication was configured by this run (false: it already was).
    pub configured: bool,
    /// The replication filter of a subset replica (`replicate_wild_do_table`),
    /// which its my.cnf must also carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_filter: Option<String>,
    /// Both replication threads running.
    pub replicating: bool,
    /// Caught up with the goal.
    pub caught_up: bool,
    /// Seconds.
    pub elapsed_s: f64,
}

/// `SHOW SLAVE STATUS` as a map (empty when no replication is configured).
pub async fn slave_status(
    conn: &mut Conn,
    server: &Server,
) -> Result<HashMap<String, String>, DbError> {
    let rows: Vec<Row> = conn
        .query("SHOW SLAVE STATUS")
        .await
        .map_err(|e| server.err("SHOW SLAVE STATUS", &e))?;
    let mut out = HashMap::new();
    if let Some(r) = rows.into_iter().next() {
        let cols = r.columns();
        for (i, v) in r.unwrap().iter().enumerate() {
            out.insert(cols[i].name_str().to_string(), text(v));
        }
    }
    Ok(out)
}

/// Checks that the master still serves the snapshot's position.
pub async fn check_binlogs(
    conn: &mut Conn,
    server: &Server,
    m: &Manifest,
) -> Result<(), CatchupError> {
    let names = binary_logs(conn, server).await?;
    let purged = |detail: String| CatchupError::BinlogPurged {
        server: server.name(),
        file: m.position.binlog_file.clone(),
        pos: m.position.binlog_pos,
        gtid: m.position.gtid.clone(),
        detail,
    };
    if m.source.replica_of.is_some() {
        // Taken from a replica: its binlog file names mean nothing here;
        // the master must still have every transaction after the GTID.
        return check_gtid_available(conn, server, &m.position.gtid, &names)
            .await?
            .map_err(purged);
    }
    if !names.contains(&m.position.binlog_file) {
        return Err(purged(format!(
            "its oldest binary log is {}",
            names.first().cloned().unwrap_or_else(|| "none".into())
        )));
    }
    let g = first(
        conn,
        server,
        "SELECT BINLOG_GTID_POS(?, ?)",
        (&m.position.binlog_file, m.position.binlog_pos),
    )
    .await?;
    let at = g.first().map(text);
    if at.as_deref() != Some(m.position.gtid.as_str()) {
        return Err(purged(format!(
            "at that offset the master now has GTID '{}': its binary log was reset or replaced since the snapshot",
            at.unwrap_or_default()
        )));
    }
    Ok(())
}

/// `domain -> seq` of a GTID list (`0-1-100,1-1-7`).
fn seq_by_domain(list: &str) -> HashMap<u32, u64> {
    list.split(',')
        .filter_map(|g| {
            let mut it = g.trim().split('-');
            let d = it.next()?.parse().ok()?;
            let _server = it.next()?;
            let seq = it.next()?.parse().ok()?;
            Some((d, seq))
        })
        .collect()
}

/// The master's binary log files, oldest first.
async fn binary_logs(conn: &mut Conn, server: &Server) -> Result<Vec<String>, DbError> {
    let logs: Vec<Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| server.err("SHOW BINARY LOGS", &e))?;
    Ok(logs.into_iter().map(|r| text(&r.unwrap()[0])).collect())
}

/// Whether the master's binary logs still start at or before `position`
/// (a GTID state) in every domain; `Err` says what the master has.
async fn check_gtid_available(
    conn: &mut Conn,
    server: &Server,
    position: &str,
    names: &[String],
) -> Result<Result<(), String>, DbError> {
    let Some(oldest) = names.first() else {
        return Ok(Err("it has no binary logs".into()));
    };
    let g = first(conn, server, "SELECT BINLOG_GTID_POS(?, 4)", (oldest,)).await?;
    let start = seq_by_domain(&g.first().map(text).unwrap_or_default());
    let have = seq_by_domain(position);
    for (domain, seq) in start {
        match have.get(&domain) {
            Some(s) if *s >= seq => {}
            got => {
                return Ok(Err(format!(
                    "its oldest binary log {oldest} starts after GTID {domain}-*-{seq}, and the replica's position is at {} in domain {domain}",
                    got.map_or("nothing".to_string(), |s| s.to_string())
                )))
            }
        }
    }
    Ok(Ok(()))
}

/// Whether the master still has the binary logs from a replica's own
/// position (`gtid_slave_pos`).
pub async fn check_position(
    conn: &mut Conn,
    server: &Server,
    position: &str,
) -> Result<Result<(), String>, DbError> {
    let names = binary_logs(conn, server).await?;
    check_gtid_available(conn, server, position, &names).await
}

/// Why replication cannot go on, read from `SHOW SLAVE STATUS`.
pub(crate) enum Stalled {
    /// The SQL thread stopped (its error, or that someone stopped it).
    Sql(String),
    /// The IO thread got 1236: its source does not have the position.
    Fatal(String),
    /// The IO thread has failed for 30 s (`(error N): message`).
    Io(String),
}

impl Stalled {
    /// The error a wait ends with when the replica `tgt` stalled so. A
    /// 1236 (`Fatal`) means a position the source lacks: each wait names
    /// what is missing itself, so it is reported here only as the IO
    /// thread's text.
    pub(crate) fn into_error(self, tgt: &Server) -> CatchupError {
        let detail = match self {
            Stalled::Io(detail) | Stalled::Fatal(detail) => {
                format!("IO thread cannot read from the master {detail}")
            }
            Stalled::Sql(detail) => detail,
        };
        CatchupError::Replication {
            server: tgt.name(),
            detail,
        }
    }
}

/// Whether replication has stalled. `io_down_since` keeps how long the IO
/// thread has been failing: a reconnect is given 30 s before it counts.
pub(crate) fn stalled(
    st: &HashMap<String, String>,
    io_down_since: &mut Option<Instant>,
) -> Option<Stalled> {
    let get = |k: &str| st.get(k).cloned().unwrap_or_default();
    let sql_err = get("Last_SQL_Error");
    if get("Slave_SQL_Running") != "Yes" {
        return Some(Stalled::Sql(if sql_err.is_empty() {
            "the SQL thread is stopped (someone ran STOP SLAVE?)".into()
        } else {
            format!("SQL thread error {}: {sql_err}", get("Last_SQL_Errno"))
        }));
    }
    let io_err = get("Last_IO_Error");
    if get("Last_IO_Errno") == "1236" {
        return Some(Stalled::Fatal(io_err));
    }
    if get("Slave_IO_Running") != "Yes" && !io_err.is_empty() {
        let since = *io_down_since.get_or_insert_with(Instant::now);
        if since.elapsed() > Duration::from_secs(30) {
            return Some(Stalled::Io(format!(
                "(error {}): {io_err}",
                get("Last_IO_Errno")
            )));
        }
    } else {
        *io_down_since = None;
    }
    None
}

/// Runs a catch-up.
pub async fn run(
    plan: CatchupPlan,
    progress: std::sync::Arc<Progress>,
    cancel: impl std::future::Future<Output = ()> + Send,
) -> Result<CatchupReport, CatchupError> {
    // A catch-up never rewinds a replica that has moved on (the run record
    // says `replicating` before START SLAVE), so after a transient fault (a
    // connection cut, a server restarting) it runs again from the top.
    let retrying = async {
        let mut waits = replseed_db::retry::backoff();
        loop {
            match run_inner(&plan, &progress).await {
                Err(e) if e.is_transient() => {
                    let Some(wait) = waits.next() else {
                        return Err(e);
                    };
                    warn!(target = %plan.target.addr(), "{e}; the catch-up goes on in {:.1} s", wait.as_secs_f64());
                    tokio::time::sleep(wait).await;
                }
                r => return r,
            }
        }
    };
    tokio::select! {
        r = retrying => r,
        _ = cancel => Err(CatchupError::Interrupted),
    }
}

impl CatchupError {
    /// Whether running the catch-up again can cure it: see [`replseed_db::retry`].
    pub fn is_transient(&self) -> bool {
        matches!(self, CatchupError::Db(e) if e.transient)
    }
}

fn set_state(p: &Progress, s: impl Into<String>) {
    *p.state.lock().expect("state") = s.into();
}

async fn run_inner(plan: &CatchupPlan, progress: &Progress) -> Result<CatchupReport, CatchupError> {
    let started = Instant::now();
    let m = &plan.manifest;
    let (src, tgt) = (&plan.source, &plan.target);
    set_state(progress, "checking the master's binlogs");
    let mut master = src.connect(&[]).await?;
    let master_id = text(&first(&mut master, src, "SELECT @@server_id", ()).await?[0]);
    let master_tls = tls_in_use(&mut master, src).await?;

    let mut replica = tgt.connect(&["SET SESSION sql_log_bin=0"]).await?;
    let r = first(
        &mut replica,
        tgt,
        "SELECT @@server_id, @@gtid_slave_pos",
        (),
    )
    .await?;
    if text(&r[0]) == master_id {
        return Err(CatchupError::Setup {
            server: tgt.name(),
            detail: format!(
                "its server_id {master_id} equals the master's; give the replica its own server_id"
            ),
        });
    }
    let filter = filters::wild_do_table(m).map_err(|detail| CatchupError::Setup {
        server: tgt.name(),
        detail,
    })?;
    let status = load_status(&mut replica, tgt, &m.snapshot).await?;
    let configured = match status.as_deref() {
        Some("done") | Some("archive") => {
            let ids = (
                text(&r[0]).parse().unwrap_or(0),
                master_id.parse().unwrap_or(0),
            );
            // `archive`: an earlier run moved it. `done` but already past
            // the snapshot: something else (a `serve`, another source)
            // has been replicating it; hand it over from where it is,
            // never rewinding it to the snapshot.
            let pos = GtidState::parse(&text(&r[1])).unwrap_or_default();
            let snap = GtidState::parse(&m.position.gtid).unwrap_or_default();
            let own = status.as_deref() == Some("archive") || (pos.covers(&snap) && pos != snap);
            let links = Links {
                master: &mut master,
                replica: &mut replica,
                ids,
                master_tls,
                filter: filter.as_deref(),
            };
            hand_off(links, plan, own).await?;
            true
        }
        Some("replicating") => {
            // Configured by an earlier run: never rewind; just make sure it
            // runs, with the filter a subset replica needs.
            if let Some(f) = &filter {
                if let Some(detail) = filters::missing(&mut replica, tgt, f).await? {
                    return Err(CatchupError::Setup {
                        server: tgt.name(),
                        detail,
                    });
                }
            }
            let st = slave_status(&mut replica, tgt).await?;
            if st
                .get("Slave_SQL_Running")
                .map(|s| s != "Yes")
                .unwrap_or(true)
                || st
                    .get("Slave_IO_Running")
                    .map(|s| s == "No")
                    .unwrap_or(true)
            {
                exec(&mut replica, tgt, "START SLAVE", ()).await?;
            }
            false
        }
        Some(until::STATUS) => {
            let at =
                text(&first(&mut replica, tgt, "SELECT @@GLOBAL.gtid_slave_pos", ()).await?[0]);
            return Err(CatchupError::Setup {
                server: tgt.name(),
                detail: format!("it is a point-in-time copy of snapshot {} stopped at GTID '{at}' (replseed.load_runs status `until`); catchup does not move it on: load the snapshot again to make a replica", m.snapshot),
            });
        }
        Some(other) => {
            return Err(CatchupError::NotLoaded {
                server: tgt.name(),
                snapshot: m.snapshot.clone(),
                detail: format!("the load is in state `{other}`"),
            })
        }
        None => {
            return Err(CatchupError::NotLoaded {
                server: tgt.name(),
                snapshot: m.snapshot.clone(),
                detail: "no load of it is recorded in replseed.load_runs".into(),
            })
        }
    };

    // The goal: where the master is now.
    let goal = text(&first(&mut master, src, "SELECT @@GLOBAL.gtid_binlog_pos", ()).await?[0]);
    let _ = master.disconnect().await;
    info!(target = %tgt.addr(), %goal, "waiting for the replica to catch up");
    let goal_state = GtidState::parse(&goal).unwrap_or_default();
    let behind_goal = |pos: &str| {
        GtidState::parse(pos)
            .unwrap_or_default()
            .behind(&goal_state)
    };
    let total = behind_goal(&m.position.gtid);
    progress
        .transactions_behind
        .store(total, std::sync::atomic::Ordering::Relaxed);
    progress
        .transactions_total
        .store(total, std::sync::atomic::Ordering::Relaxed);
    let mut io_down_since: Option<Instant> = None;
    loop {
        if let Some(t) = plan.timeout {
            if started.elapsed() > t {
                let at =
                    text(&first(&mut replica, tgt, "SELECT @@GLOBAL.gtid_slave_pos", ()).await?[0]);
                return Err(CatchupError::Timeout {
                    server: tgt.name(),
                    secs: t.as_secs(),
                    at,
                    goal,
                });
            }
        }
        let reached = if goal.is_empty() {
            true
        } else {
            let r = first(&mut replica, tgt, "SELECT MASTER_GTID_WAIT(?, 1)", (&goal,)).await?;
            text(&r[0]) == "0"
        };
        let st = slave_status(&mut replica, tgt).await?;
        let get = |k: &str| st.get(k).cloned().unwrap_or_default();
        let sql_running = get("Slave_SQL_Running") == "Yes";
        let io_running = get("Slave_IO_Running");
        match stalled(&st, &mut io_down_since) {
            None => {}
            Some(Stalled::Fatal(io_err)) => {
                return Err(CatchupError::BinlogPurged {
                    server: src.name(),
                    file: m.position.binlog_file.clone(),
                    pos: m.position.binlog_pos,
                    gtid: m.position.gtid.clone(),
                    detail: format!("the replica's IO thread reports: {io_err}"),
                })
            }
            Some(other) => return Err(other.into_error(tgt)),
        }
        let behind = get("Seconds_Behind_Master");
        progress.behind.store(
            behind.parse().unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );
        // (SHOW SLAVE STATUS has no Gtid_Slave_Pos; SHOW ALL SLAVES STATUS has.)
        let pos = text(&first(&mut replica, tgt, "SELECT @@GLOBAL.gtid_slave_pos", ()).await?[0]);
        let left = if reached { 0 } else { behind_goal(&pos) };
        progress
            .transactions_behind
            .store(left, std::sync::atomic::Ordering::Relaxed);
        let seconds = if behind.is_empty() || behind == "NULL" {
            "seconds behind the master unknown".to_string()
        } else {
            format!("{behind} s behind the master")
        };
        set_state(
            progress,
            format!("{left} behind, {seconds}; replica at '{pos}'"),
        );
        if reached && sql_running && io_running == "Yes" {
            break;
        }
        if reached && io_running != "Yes" {
            // Caught up, but the IO thread must be connected to call it replicating.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let reached = text(&first(&mut replica, tgt, "SELECT @@GLOBAL.gtid_slave_pos", ()).await?[0]);
    let _ = replica.disconnect().await;
    Ok(CatchupReport {
        target: tgt.addr(),
        gtid_start: m.position.gtid.clone(),
        gtid_goal: goal,
        gtid_reached: reached,
        configured,
        replication_filter: filter,
        replicating: true,
        caught_up: true,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// The status of the target's load of `snapshot` in `replseed.load_runs`
/// (`None`: no load of it, or no bookkeeping at all).
pub(crate) async fn load_status(
    replica: &mut Conn,
    tgt: &Server,
    snapshot: &str,
) -> Result<Option<String>, CatchupError> {
    let loaded: Vec<Row> = match replica
        .exec(
            "SELECT status FROM replseed.load_runs WHERE snapshot=?",
            (snapshot,),
        )
        .await
    {
        Ok(rows) => rows,
        // No bookkeeping at all: nothing was loaded here.
        Err(mysql_async::Error::Server(e)) if e.code == 1146 || e.code == 1049 => Vec::new(),
        Err(e) => return Err(tgt.err("reading replseed.load_runs", &e).into()),
    };
    Ok(loaded.first().map(|r| text(&r.clone().unwrap()[0])))
}

/// The two sessions of a hand-off and what it needs to know of them.
struct Links<'a> {
    master: &'a mut Conn,
    replica: &'a mut Conn,
    /// The replica's and the master's server_id.
    ids: (u32, u32),
    /// Whether the master offers TLS.
    master_tls: bool,
    /// The replication filter of a subset replica.
    filter: Option<&'a str>,
}

/// Hands the replica over to the master, through the stage's binlog
/// archive for as long as the master no longer has the replica's position:
/// before each switch to the master the master is checked to have it, and
/// a master that purged meanwhile gets a new bridge from the archive. The
/// run record says `replicating` only once the master has taken the
/// replica (its dump was accepted); until then it says `archive`, so that
/// a rerun resumes from where the replica is and looks at the archive
/// again. `own`: the replica's position is its own (an earlier run moved
/// it); otherwise it is the snapshot's.
async fn hand_off(l: Links<'_>, plan: &CatchupPlan, mut own: bool) -> Result<(), CatchupError> {
    let (src, tgt, m) = (&plan.source, &plan.target, &plan.manifest);
    let Links {
        master,
        replica,
        ids,
        master_tls,
        filter,
    } = l;
    let mut bridged: Option<GtidState> = None;
    let mut refused_at: Option<String> = None;
    loop {
        let at = if own {
            text(&first(replica, tgt, "SELECT @@GLOBAL.gtid_slave_pos", ()).await?[0])
        } else {
            m.position.gtid.clone()
        };
        // What the master lacks of the replica's position, as the error to
        // give when the archive cannot bridge it either.
        let lacks = if own {
            check_position(master, src, &at).await?.err().map(|detail| {
                CatchupError::ArchiveBehind {
                    server: tgt.name(),
                    at: at.clone(),
                    detail,
                }
            })
        } else {
            match check_binlogs(master, src, m).await {
                Ok(()) => None,
                Err(e @ CatchupError::BinlogPurged { .. }) => Some(e),
                Err(e) => return Err(e),
            }
        };
        if let Some(lacks) = lacks {
            let Some(route) = &plan.archive else {
                return Err(with_detail(lacks, "no binlog archive was given"));
            };
            let master_from = archive::master_start(master, src).await?;
            let end = match archive::bridge(&route.stage, m, &master_from).await? {
                Ok(end) if bridged.as_ref() != Some(&end) => end,
                Ok(end) => {
                    return Err(with_detail(
                        lacks,
                        &format!("the archive ends at '{end}', which the replica has applied"),
                    ))
                }
                Err(why) => return Err(with_detail(lacks, &why)),
            };
            archive::replay(replica, plan, route, &end, ids, own, filter, false).await?;
            own = true;
            bridged = Some(end);
            continue;
        }
        configure(replica, plan, master_tls, !own).await?;
        own = true;
        match taken(replica, tgt).await? {
            Ok(()) => break,
            Err(io_err) => {
                // The master purged between the check and the switch (or
                // has not what the check took it to have): through the
                // archive again, unless that changed nothing.
                if refused_at.as_deref() == Some(at.as_str()) {
                    return Err(CatchupError::ArchiveBehind {
                        server: tgt.name(),
                        at,
                        detail: format!("the master refuses it: {io_err}"),
                    });
                }
                warn!(target = %tgt.addr(), "the master refused the replica at '{at}' ({io_err}); bridging from the binlog archive again");
                refused_at = Some(at);
            }
        }
    }
    exec(
        replica,
        tgt,
        "UPDATE replseed.load_runs SET status='replicating' WHERE snapshot=?",
        (&m.snapshot,),
    )
    .await?;
    info!(target = %tgt.addr(), master = %format!("{}:{}", plan.master_host, plan.master_port), "the master has taken the replica");
    Ok(())
}

/// `e` with `why` added to what it says the master has.
fn with_detail(e: CatchupError, why: &str) -> CatchupError {
    match e {
        CatchupError::BinlogPurged {
            server,
            file,
            pos,
            gtid,
            detail,
        } => CatchupError::BinlogPurged {
            server,
            file,
            pos,
            gtid,
            detail: format!("{detail}; {why}"),
        },
        CatchupError::ArchiveBehind { server, at, detail } => CatchupError::ArchiveBehind {
            server,
            at,
            detail: format!("{detail}; {why}"),
        },
        e => e,
    }
}

/// Waits until the master has taken the replica just pointed at it: the
/// IO thread runs and the master's first rotate has named a file (a master
/// sends it only once it has found the replica's GTID position). `Err`:
/// the master's 1236.
async fn taken(replica: &mut Conn, tgt: &Server) -> Result<Result<(), String>, CatchupError> {
    let mut io_down_since: Option<Instant> = None;
    loop {
        let st = slave_status(replica, tgt).await?;
        let get = |k: &str| st.get(k).cloned().unwrap_or_default();
        if get("Slave_IO_Running") == "Yes" && !get("Master_Log_File").is_empty() {
            return Ok(Ok(()));
        }
        match stalled(&st, &mut io_down_since) {
            None => {}
            Some(Stalled::Fatal(e)) => return Ok(Err(e)),
            Some(other) => return Err(other.into_error(tgt)),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn configure(
    replica: &mut Conn,
    plan: &CatchupPlan,
    master_tls: bool,
    set_position: bool,
) -> Result<(), CatchupError> {
    let tgt = &plan.target;
    let m = &plan.manifest;
    exec(replica, tgt, "STOP SLAVE", ()).await?;
    exec(replica, tgt, "RESET SLAVE ALL", ()).await?;
    if set_position {
        let set = "SET GLOBAL gtid_slave_pos=?";
        replica
            .exec_drop(set, (&m.position.gtid,))
            .await
            .map_err(|e| CatchupError::Setup {
                server: tgt.name(),
                detail: format!(
                    "SET GLOBAL gtid_slave_pos='{}' failed ({}); the target's own binary log has GTIDs that conflict with the master's: on a fresh replica run RESET MASTER, then catchup again",
                    m.position.gtid,
                    replseed_db::describe(&e).0
                ),
            })?;
    }
    exec(
        replica,
        tgt,
        &format!(
            "CHANGE MASTER TO MASTER_HOST={}, MASTER_PORT={}, MASTER_USER={}, MASTER_PASSWORD={}, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=5{}",
            quote_str(&plan.master_host),
            plan.master_port,
            quote_str(&plan.replication_user),
            quote_str(plan.replication_password.expose_secret()),
            plan.master_tls.options(master_tls)
        ),
        (),
    )
    .await?;
    // A subset replica replicates exactly its databases.
    let filter = filters::wild_do_table(m).map_err(|detail| CatchupError::Setup {
        server: tgt.name(),
        detail,
    })?;
    if let Some(f) = &filter {
        filters::set(replica, tgt, f).await?;
        exec(
            replica,
            tgt,
            "INSERT INTO replseed.replication_filters (snapshot, wild_do_table) VALUES (?, ?) \
             ON DUPLICATE KEY UPDATE wild_do_table=VALUES(wild_do_table)",
            (&m.snapshot, f),
        )
        .await?;
        warn!(target = %tgt.addr(), "subset replica: add `{}` to the [mysqld] section of its my.cnf, or a restart forgets the filter", filters::my_cnf_line(f));
    }
    // Recorded before START SLAVE: a re-run must not set gtid_slave_pos
    // back. `archive` (the replica's position is its own) until the master
    // has taken it.
    exec(
        replica,
        tgt,
        "UPDATE replseed.load_runs SET status='archive' WHERE snapshot=?",
        (&m.snapshot,),
    )
    .await?;
    exec(replica, tgt, "START SLAVE", ()).await?;
    info!(target = %tgt.addr(), gtid = %m.position.gtid, master = %format!("{}:{}", plan.master_host, plan.master_port), "replication started");
    Ok(())
}
