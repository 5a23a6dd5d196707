//! A fault-injecting TCP proxy: put it in front of a server (MariaDB or the
//! S3 endpoint), point the client at [`FaultProxy::addr`], and cut, stall,
//! slow or refuse its connections at the moment a test chooses.
//!
//! * [`FaultProxy::cut`] resets every open connection (RST, as a dead
//!   network path or a killed peer looks to the client); new connections
//!   are accepted as before.
//! * [`FaultProxy::stall`] stops forwarding bytes both ways while on (the
//!   connections stay open, as behind a broken router).
//! * [`FaultProxy::refuse`] resets new connections at once while on (a
//!   server that is restarting).
//! * [`FaultProxy::set_rate`] limits each direction of each connection to
//!   so many bytes per second.
//! * [`FaultProxy::bytes`] counts the bytes forwarded, so a test can fault
//!   at a chosen point ([`FaultProxy::wait_bytes`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug)]
struct Control {
    /// Bumped by every cut: connections older than it end.
    cuts: watch::Sender<u64>,
    stalled: watch::Sender<bool>,
    refusing: AtomicBool,
    /// Bytes per second per direction; 0: unlimited.
    rate: AtomicU64,
    bytes: AtomicU64,
    accepted: AtomicU64,
    cut_connections: AtomicU64,
}

/// A running proxy; dropping it stops listening and resets its connections.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    control: Arc<Control>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fault proxy")?;
        let addr = listener.local_addr()?;
        let control = Arc::new(Control {
            cuts: watch::channel(0).0,
            stalled: watch::channel(false).0,
            refusing: AtomicBool::new(false),
            rate: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            cut_connections: AtomicU64::new(0),
        });
        let c = control.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if c.refusing.load(Ordering::SeqCst) {
                    let _ = client.set_zero_linger();
                    drop(client);
                    continue;
                }
                c.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(client, upstream, c.clone()));
            }
        });
        Ok(FaultProxy {
            addr,
            control,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Resets every open connection; returns how many there were.
    pub fn cut(&self) -> u64 {
        let before = self.control.cut_connections.load(Ordering::SeqCst);
        self.control.cuts.send_modify(|n| *n += 1);
        // Give the connection tasks a moment to see the cut.
        std::thread::sleep(Duration::from_millis(50));
        self.control.cut_connections.load(Ordering::SeqCst) - before
    }

    /// Stops (true) or resumes (false) forwarding on every connection.
    pub fn stall(&self, on: bool) {
        self.control.stalled.send_replace(on);
    }

    /// Resets new connections at once (true), or accepts them again.
    pub fn refuse(&self, on: bool) {
        self.control.refusing.store(on, Ordering::SeqCst);
    }

    /// Limits each direction of each connection to `bytes_per_sec` (None:
    /// unlimited).
    pub fn set_rate(&self, bytes_per_sec: Option<u64>) {
        self.control
            .rate
            .store(bytes_per_sec.unwrap_or(0), Ordering::SeqCst);
    }

    /// Bytes forwarded so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.control.bytes.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.control.accepted.load(Ordering::SeqCst)
    }

    /// Waits until `n` more bytes than now have been forwarded, or `limit`
    /// passes; returns whether they were.
    pub async fn wait_bytes(&self, n: u64, limit: Duration) -> bool {
        let target = self.bytes() + n;
        let deadline = tokio::time::Instant::now() + limit;
        while self.bytes() < target {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.control.cuts.send_modify(|n| *n += 1);
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, c: Arc<Control>) {
    let mut cuts = c.cuts.subscribe();
    cuts.mark_unchanged();
    let Ok(server) = TcpStream::connect(upstream).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, c.clone());
    let down = pump(sr, cw, c.clone());
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = cuts.changed() => {
            c.cut_connections.fetch_add(1, Ordering::SeqCst);
        }
    }
    // Dropping the halves here closes both sockets; with the cut they are
    // reset rather than closed in order (see `pump`).
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    c: Arc<Control>,
) {
    let _ = to.as_ref().set_zero_linger();
    let mut stalled = c.stalled.subscribe();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut sent = 0;
        while sent < n {
            while *stalled.borrow_and_update() {
                if stalled.changed().await.is_err() {
                    return;
                }
            }
            let rate = c.rate.load(Ordering::SeqCst);
            let piece = if rate == 0 {
                n - sent
            } else {
                // Ten slices a second.
                ((rate / 10).max(1) as usize).min(n - sent)
            };
            if to.write_all(&buf[sent..sent + piece]).await.is_err() {
                return;
            }
            sent += piece;
            c.bytes.fetch_add(piece as u64, Ordering::SeqCst);
            if rate != 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let _ = to.shutdown().await;
}
