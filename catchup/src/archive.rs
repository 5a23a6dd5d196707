//! Catch-up through the stage's binlog archive, for when the master has
//! purged the snapshot's binlogs: replseed serves the archive to the
//! replica over the replication protocol (`replseed_binlog::serve`), waits
//! until the replica has applied the archive's end, and hands it over to
//! the master, which must still have everything after that.
//!
//! The run record on the target says `archive` while the replica reads the
//! archive, so a catch-up that is run again resumes from where the replica
//! is instead of setting its position back to the snapshot's.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use replseed_binlog::serve::{ServePlan, ServeTls, Serving};
use replseed_binlog::GtidState;
use replseed_db::{exec, first, quote_str, text, DbError, Server};
use replseed_stage::{Manifest, Stage};
use tracing::info;

use crate::{slave_status, stalled, CatchupError, CatchupPlan, Stalled};

/// How the replica reaches replseed's binlog server.
#[derive(Debug, Clone)]
pub struct ArchiveRoute {
    /// The stage whose archive is served.
    pub stage: Stage,
    /// Where to listen (default: a free port on the address the target
    /// reaches replseed at, see [`reached_at`]).
    pub listen: Option<String>,
    /// The host name or address the replica connects to (default: the
    /// listen address, or when that is a wildcard the address the target
    /// reaches replseed at).
    pub host: Option<String>,
    /// TLS on this link; `None`: plain (`MASTER_SSL=0`).
    pub tls: Option<ArchiveTls>,
}

/// TLS on the link from the replica to the embedded `serve`.
#[derive(Debug, Clone)]
pub struct ArchiveTls {
    /// serve's certificate and key (plain logins refused).
    pub serve: ServeTls,
    /// The CA as the replica reads it (MASTER_SSL_CA); with it the replica
    /// verifies serve's certificate against the host it dials
    /// (MASTER_SSL_VERIFY_SERVER_CERT=1), without it the link is encrypted
    /// but not verified.
    pub replica_ca: Option<String>,
}

impl ArchiveTls {
    /// The `CHANGE MASTER` options of the replica for this link.
    fn options(tls: Option<&ArchiveTls>) -> String {
        match tls {
            None => ", MASTER_SSL=0".into(),
            Some(ArchiveTls {
                replica_ca: Some(ca),
                ..
            }) => format!(
                ", MASTER_SSL=1, MASTER_SSL_CA={}, MASTER_SSL_VERIFY_SERVER_CERT=1",
                quote_str(ca)
            ),
            Some(_) => ", MASTER_SSL=1, MASTER_SSL_VERIFY_SERVER_CERT=0".into(),
        }
    }
}

/// The address the target reaches replseed at: the client host the target
/// itself sees for replseed's session (`127.0.0.1` for a session over the
/// Unix socket). A replica on another host dials that back.
pub async fn reached_at(replica: &mut Conn, tgt: &Server) -> Result<String, DbError> {
    let r = first(
        replica,
        tgt,
        "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()",
        (),
    )
    .await?;
    Ok(client_host(&r.first().map(text).unwrap_or_default()))
}

/// The host of a processlist `HOST` (`10.0.0.5:41234`, `[::1]:41234`,
/// `name:41234`, `localhost`).
fn client_host(h: &str) -> String {
    let host = match h.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => h,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host == "localhost" {
        "127.0.0.1".into()
    } else {
        host.into()
    }
}

/// Where to listen by default: a free port on `seen` when it is one of
/// this host's addresses as the target sees it, else on every address.
fn default_listen(seen: &str) -> String {
    match seen.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, 0).to_string(),
        Err(_) => "0.0.0.0:0".into(),
    }
}

/// The GTID state at the start of the master's oldest binary log.
pub async fn master_start(
    conn: &mut Conn,
    server: &Server,
) -> Result<(String, GtidState), DbError> {
    let logs: Vec<Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| server.err("SHOW BINARY LOGS", &e))?;
    let Some(oldest) = logs.into_iter().next().map(|r| text(&r.unwrap()[0])) else {
        return Ok((String::new(), GtidState::default()));
    };
    let g = first(conn, server, "SELECT BINLOG_GTID_POS(?, 4)", (&oldest,)).await?;
    let state = GtidState::parse(&g.first().map(text).unwrap_or_default()).unwrap_or_default();
    Ok((oldest, state))
}

/// Whether the archive bridges the snapshot and the master: it starts at or
/// before the snapshot's GTID, has no gap, and ends where the master's
/// binary logs still are. Returns the archive's end, or why not (named for
/// the exit-3 message).
pub async fn bridge(
    stage: &Stage,
    m: &Manifest,
    master_from: &(String, GtidState),
) -> Result<Result<GtidState, String>, CatchupError> {
    // Signatures and links checked here, before the replica is touched.
    let segments = stage
        .segment_chain()
        .await
        .map_err(|e| CatchupError::Setup {
            server: stage.url().to_string(),
            detail: format!("reading the binlog archive: {e}"),
        })?;
    let snapshot = GtidState::parse(&m.position.gtid).unwrap_or_default();
    let (Some(first_seg), Some(last_seg)) = (segments.first(), segments.last()) else {
        return Ok(Err(format!(
            "the stage {} has no binlog archive (`replseed archive` keeps one)",
            stage.url()
        )));
    };
    let start = GtidState::parse(&first_seg.start_state).unwrap_or_default();
    let end = GtidState::parse(&last_seg.end_state).unwrap_or_default();
    let range = format!("the archive covers '{start}' to '{end}'");
    if !snapshot.covers(&start) {
        return Ok(Err(format!(
            "{range}, which starts after the snapshot's GTID '{snapshot}'"
        )));
    }
    if !end.covers(&master_from.1) {
        return Ok(Err(format!(
            "{range}, and the master's oldest binary log {} starts at '{}': '{end}' to '{}' is missing (run `replseed archive` more often than the master purges)",
            master_from.0, master_from.1, master_from.1
        )));
    }
    Ok(Ok(end))
}

fn random_password() -> String {
    let mut b = [0u8; 18];
    getrandom::fill(&mut b).expect("OS randomness");
    hex::encode(b)
}

/// Replicates the target from the archive until it has applied `end`.
/// `resume`: the replica was reading the archive already (keep its position).
/// `until`: a point-in-time copy (`until.rs`): `START SLAVE UNTIL
/// master_gtid_pos=<end>`, recorded as [`crate::until::STATUS`].
#[allow(clippy::too_many_arguments)]
pub async fn replay(
    replica: &mut Conn,
    plan: &CatchupPlan,
    route: &ArchiveRoute,
    end: &GtidState,
    ids: (u32, u32),
    resume: bool,
    filter: Option<&str>,
    until: bool,
) -> Result<(), CatchupError> {
    let tgt = &plan.target;
    let m = &plan.manifest;
    let server_id = (4_000_000_002u32..)
        .find(|id| *id != ids.0 && *id != ids.1)
        .expect("a free server id");
    let password = random_password();
    let user = "replseed_catchup";
    let seen = reached_at(replica, tgt).await?;
    let listen = route
        .listen
        .clone()
        .unwrap_or_else(|| default_listen(&seen));
    let serving: Serving = replseed_binlog::serve::start(
        ServePlan {
            stage: route.stage.clone(),
            server_id,
            user: user.into(),
            password: password.clone(),
            poll: Duration::from_secs(1),
            limits: Default::default(),
            tls: route.tls.as_ref().map(|t| t.serve.clone()),
            provision: None,
        },
        &listen,
    )
    .await
    .map_err(|e| CatchupError::Setup {
        server: tgt.name(),
        detail: format!("cannot serve the binlog archive on {listen}: {e}; set --archive-listen (and --archive-host to the address the target reaches it at)"),
    })?;
    let host = route.host.clone().unwrap_or_else(|| {
        if serving.addr.ip().is_unspecified() {
            seen.clone()
        } else {
            serving.addr.ip().to_string()
        }
    });
    exec(replica, tgt, "STOP SLAVE", ()).await?;
    if !resume {
        exec(replica, tgt, "RESET SLAVE ALL", ()).await?;
        exec(
            replica,
            tgt,
            "SET GLOBAL gtid_slave_pos=?",
            (&m.position.gtid,),
        )
        .await?;
    }
    exec(
        replica,
        tgt,
        &format!(
            "CHANGE MASTER TO MASTER_HOST={}, MASTER_PORT={}, MASTER_USER={}, MASTER_PASSWORD={}, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1{}",
            quote_str(&host),
            serving.addr.port(),
            quote_str(user),
            quote_str(&password),
            ArchiveTls::options(route.tls.as_ref()),
        ),
        (),
    )
    .await?;
    if let Some(f) = filter {
        crate::filters::set(replica, tgt, f).await?;
    }
    // Recorded before START SLAVE: a re-run must not set the position back.
    let (status, start) = if until {
        (
            crate::until::STATUS,
            format!(
                "START SLAVE UNTIL master_gtid_pos={}",
                quote_str(&end.to_string())
            ),
        )
    } else {
        ("archive", "START SLAVE".to_string())
    };
    exec(
        replica,
        tgt,
        "UPDATE replseed.load_runs SET status=? WHERE snapshot=?",
        (status, &m.snapshot),
    )
    .await?;
    exec(replica, tgt, &start, ()).await?;
    info!(target = %tgt.addr(), archive = %route.stage.url(), end = %end, serving = %serving.addr, "replicating from the binlog archive");
    let started = Instant::now();
    let goal = end.to_string();
    let mut io_down_since: Option<Instant> = None;
    loop {
        let r = first(replica, tgt, "SELECT MASTER_GTID_WAIT(?, 1)", (&goal,)).await?;
        if text(&r[0]) == "0" {
            break;
        }
        let st = slave_status(replica, tgt).await?;
        let get = |k: &str| st.get(k).cloned().unwrap_or_default();
        let from = format!("replseed at {host}:{}", serving.addr.port());
        match stalled(&st, &mut io_down_since) {
            None => {}
            // Stopped at the goal (UNTIL) since the wait above.
            Some(Stalled::Sql(_))
                if text(
                    &first(replica, tgt, "SELECT MASTER_GTID_WAIT(?, 0)", (&goal,)).await?[0],
                ) == "0" =>
            {
                break
            }
            Some(Stalled::Sql(detail)) => {
                return Err(CatchupError::Replication {
                    server: tgt.name(),
                    detail: format!("applying the binlog archive, {detail}"),
                })
            }
            Some(Stalled::Fatal(e)) => {
                return Err(CatchupError::Replication {
                    server: tgt.name(),
                    detail: format!("reading the binlog archive from {from} (error 1236): {e}"),
                })
            }
            Some(Stalled::Io(detail)) => {
                return Err(CatchupError::Replication {
                    server: tgt.name(),
                    detail: format!("reading the binlog archive from {from} {detail}"),
                })
            }
        }
        if let Some(t) = plan.timeout {
            if started.elapsed() > t {
                return Err(CatchupError::Timeout {
                    server: tgt.name(),
                    secs: t.as_secs(),
                    at: get("Gtid_Slave_Pos"),
                    goal: goal.clone(),
                });
            }
        }
    }
    exec(replica, tgt, "STOP SLAVE", ()).await?;
    info!(target = %tgt.addr(), at = %goal, secs = format!("{:.1}", started.elapsed().as_secs_f64()), "the archive is applied: handing over to the master");
    drop(serving);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_dials_back_the_host_it_sees() {
        assert_eq!(client_host("10.0.0.5:41234"), "10.0.0.5");
        assert_eq!(client_host("[::1]:41234"), "::1");
        assert_eq!(client_host("db-7.example:5000"), "db-7.example");
        assert_eq!(client_host("localhost"), "127.0.0.1");
        assert_eq!(default_listen("10.0.0.5"), "10.0.0.5:0");
        assert_eq!(default_listen("::1"), "[::1]:0");
        assert_eq!(default_listen("db-7.example"), "0.0.0.0:0");
    }
}
