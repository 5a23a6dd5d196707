//! `replseed serve`: the master side of MariaDB replication, from the
//! archive. A MariaDB replica points its IO thread here (`CHANGE MASTER TO
//! MASTER_HOST=<replseed>, MASTER_USE_GTID=slave_pos`) and replicates the
//! archived binlog with its own IO and SQL threads: parallel apply,
//! crash-safe `gtid_slave_pos`, events byte for byte as the master wrote
//! them. Many replicas at once, each in its own task. Every client is
//! hostile until it has logged in: packets are bounded before they are
//! read, connections are limited, logins time out and wrong passwords
//! from one address are rate-limited.
//!
//! Written on tokio and hand-made packets rather than a server crate: the
//! MySQL server crates (opensrv-mysql, msql-srv) answer or panic on the
//! replication commands and cannot hand the socket over for the event
//! stream (see `docs/design/binlog-server.md`, section 4).
//!
//! * `limits.rs`: what a client is granted before and after logging in.
//! * `packet.rs`: framing (bounded reads), OK/ERR/EOF and text result sets.
//! * `tls.rs`: the TLS upgrade (certificate, key, client CA, `--require-ssl`).
//! * `session.rs`: handshake, authentication, the commands before the dump.
//! * `query.rs`: the general queries clients send before a dump.
//! * `dump.rs`: `COM_BINLOG_DUMP` from the archive's segments.
//! * `provision/`: with a snapshot, an empty replica's dump gets the
//!   snapshot as events first.

mod dump;
mod limits;
mod packet;
pub mod provision;
mod query;
mod request;
mod session;
mod tls;

pub use dump::events;
pub use limits::{Limits, MAX_PACKET_AFTER_AUTH, MAX_PACKET_BEFORE_AUTH};
pub use tls::ServeTls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use replseed_stage::Stage;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use limits::{Burst, Logins};

/// What a binlog server serves, and to whom.
#[derive(Debug, Clone)]
pub struct ServePlan {
    /// The stage whose archive is served.
    pub stage: Stage,
    /// The server_id replicas see (not theirs, not the master's).
    pub server_id: u32,
    /// The user replicas log in as.
    pub user: String,
    /// Its password (mysql_native_password); must not be empty.
    pub password: String,
    /// How often to look for new segments at the archive's head.
    pub poll: Duration,
    /// What clients are granted.
    pub limits: Limits,
    /// TLS offered to clients (and required, if it says so); `None`: plain only.
    pub tls: Option<ServeTls>,
    /// A snapshot to provision empty replicas from (`--snapshot`).
    pub provision: Option<Arc<provision::Provision>>,
}

pub(crate) struct Shared {
    stage: Stage,
    server_id: u32,
    user: String,
    password: String,
    poll: Duration,
    limits: Limits,
    logins: Logins,
    tls: Option<ServeTls>,
    provision: Option<Arc<provision::Provision>>,
    /// Segments already checked ahead of a dump (`segment::verify_ahead`).
    verified: crate::segment::Verified,
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

/// The first wait after a failed `accept` (out of file descriptors, say);
/// it doubles with each failure in a row, up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Listens on `listen` and serves every replica that connects, in the
/// background, until the returned handle is dropped. An empty password or
/// a connection limit of 0 is refused (`InvalidInput`) before listening.
pub async fn start(plan: ServePlan, listen: &str) -> std::io::Result<Serving> {
    if plan.password.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the replication user has no password",
        ));
    }
    if plan.limits.max_connections == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the connection limit is 0",
        ));
    }
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let permits = Arc::new(Semaphore::new(plan.limits.max_connections));
    let shared = Arc::new(Shared {
        stage: plan.stage,
        server_id: plan.server_id,
        user: plan.user,
        password: plan.password,
        poll: plan.poll,
        logins: Logins::new(&plan.limits),
        limits: plan.limits,
        tls: plan.tls,
        provision: plan.provision,
        verified: Default::default(),
    });
    info!(%addr, tls = shared.tls.is_some(), "serving the binlog archive");
    let ids = Arc::new(AtomicU32::new(1));
    let task = tokio::spawn(async move {
        let mut sessions = tokio::task::JoinSet::new();
        let mut accept_errors = Burst::default();
        let mut backoff = Duration::ZERO;
        let mut refused = Burst::default();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            if accept_errors.note() {
                                warn!(%addr, "cannot accept connections ({e}): backing off");
                            }
                            backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                            tokio::time::sleep(backoff).await;
                            continue;
                        }
                    };
                    let errors = accept_errors.end();
                    if errors > 0 {
                        info!(%addr, errors, "accepting connections again");
                    }
                    backoff = Duration::ZERO;
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        // As MariaDB: ER_CON_COUNT_ERROR instead of the greeting.
                        // A fresh socket's send buffer takes it without waiting.
                        let _ = stream.try_write(&packet::refusal(1040, "08004", "Too many connections"));
                        if refused.note() {
                            warn!(%peer, max = shared.limits.max_connections, "too many connections: refusing the excess");
                        }
                        continue;
                    };
                    let n = refused.end();
                    if n > 0 {
                        info!(refused = n, "connections were refused over the connection limit");
                    }
                    let shared = shared.clone();
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    sessions.spawn(async move {
                        let _permit = permit;
                        if let Err(e) = session::run(stream, peer, id, shared).await {
                            debug!(%peer, "session ended: {e}");
                        }
                    });
                }
                Some(ended) = sessions.join_next(), if !sessions.is_empty() => {
                    if let Err(e) = ended {
                        warn!("a session failed: {e}");
                    }
                }
            }
        }
    });
    Ok(Serving { addr, task })
}
