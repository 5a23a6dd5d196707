//! `replseed serve`: the master side of MariaDB replication, from the
//! archive. A MariaDB replica points its IO thread here (`CHANGE MASTER TO
//! MASTER_HOST=<replseed>, MASTER_USE_GTID=slave_pos`) and replicates the
//! archived binlog with its own IO and SQL threads: parallel apply,
//! crash-safe `gtid_slave_pos`, events byte for byte as the master wrote
//! them. Many replicas at once, each in its own task.
//!
//! Written on tokio and hand-made packets rather than a server crate: the
//! MySQL server crates (opensrv-mysql, msql-srv) answer or panic on the
//! replication commands and cannot hand the socket over for the event
//! stream (see `docs/design/binlog-server.md`, section 4).
//!
//! * `packet.rs`: framing, OK/ERR/EOF and text result sets.
//! * `session.rs`: handshake, authentication, the connect-time queries.
//! * `dump.rs`: `COM_BINLOG_DUMP` from the archive's segments.

mod dump;
mod packet;
mod session;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use replseed_stage::Stage;
use tokio::net::TcpListener;
use tracing::{debug, info};

/// What a binlog server serves, and to whom.
#[derive(Debug, Clone)]
pub struct ServePlan {
    /// The stage whose archive is served.
    pub stage: Stage,
    /// The server_id replicas see (not theirs, not the master's).
    pub server_id: u32,
    /// The user replicas log in as.
    pub user: String,
    /// Its password (mysql_native_password).
    pub password: String,
    /// How often to look for new segments at the archive's head.
    pub poll: Duration,
}

pub(crate) struct Shared {
    stage: Stage,
    server_id: u32,
    user: String,
    password: String,
    poll: Duration,
}

/// A running binlog server; dropping it stops it.
#[derive(Debug)]
pub struct Serving {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `listen` and serves every replica that connects, in the
/// background, until the returned handle is dropped.
pub async fn start(plan: ServePlan, listen: &str) -> std::io::Result<Serving> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        stage: plan.stage,
        server_id: plan.server_id,
        user: plan.user,
        password: plan.password,
        poll: plan.poll,
    });
    info!(%addr, "serving the binlog archive");
    let ids = Arc::new(AtomicU32::new(1));
    let task = tokio::spawn(async move {
        let mut sessions = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let shared = shared.clone();
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    sessions.spawn(async move {
                        if let Err(e) = session::run(stream, id, shared).await {
                            debug!(%peer, "session ended: {e}");
                        }
                    });
                }
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            }
        }
    });
    Ok(Serving { addr, task })
}
