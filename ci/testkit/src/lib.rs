//! Dev-only harness: throwaway `mariadbd` instances and an S3 server.
//!
//! Tests, the quickstart and the benchmark all start real servers through
//! this crate, never mocks:
//!
//! * [`MariaDb`] copies a template datadir (made once per machine with
//!   `mariadb-install-db`) and starts `mariadbd` on its own port, with its
//!   own `server_id`, the binary log in ROW format with full images and
//!   metadata, and GTID strict mode. Dropping the handle kills the server and
//!   removes its directory, unless it was started with [`MariaDbOptions::keep`].
//! * [`S3Server`] serves an `s3s-fs` store in-process on `127.0.0.1:0`, with
//!   SigV4 authentication, so the tests exercise object_store's real S3
//!   client. Set `REPLSEED_TEST_S3_ENDPOINT` (plus `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`) to use an external endpoint such as MinIO
//!   instead.

pub mod proxy;
pub use proxy::FaultProxy;

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mysql_async::prelude::Queryable;

/// Options for one sandbox server.
#[derive(Debug, Clone)]
pub struct MariaDbOptions {
    /// `server_id` of the instance.
    pub server_id: u32,
    /// TCP port; `None` picks a free one.
    pub port: Option<u16>,
    /// Directory to hold the datadir, socket and logs; `None` uses a temp dir.
    pub dir: Option<PathBuf>,
    /// Keep the server running and its files after the handle is dropped.
    pub keep: bool,
    /// Turn on the binary log (on by default: every sandbox can be a master).
    pub log_bin: bool,
    /// InnoDB buffer pool size in MiB.
    pub buffer_pool_mb: u32,
    /// Extra `--option=value` arguments for `mariadbd`.
    pub extra_args: Vec<String>,
    /// Serve TLS with these files, and accept nothing else
    /// (`require_secure_transport=ON`).
    pub tls_only: Option<TlsFiles>,
    /// Durable as production replicas are: `innodb_flush_log_at_trx_commit=1`
    /// and `sync_binlog=1` (the default, false, flushes once a second).
    pub durable: bool,
}

/// A server's TLS files (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed `cert`.
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl Default for MariaDbOptions {
    fn default() -> Self {
        MariaDbOptions {
            server_id: 1,
            port: None,
            dir: None,
            keep: false,
            log_bin: true,
            buffer_pool_mb: 128,
            extra_args: Vec::new(),
            tls_only: None,
            durable: false,
        }
    }
}

/// A running throwaway MariaDB server.
#[derive(Debug)]
pub struct MariaDb {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Whether the server accepts TLS connections only.
    pub tls_only: bool,
    /// `server_id` of the instance.
    pub server_id: u32,
    /// Directory holding `data/`, `mariadbd.sock`, `error.log`.
    pub dir: PathBuf,
    child: Option<Child>,
    /// How it was started, for [`MariaDb::restart`].
    command: Option<(PathBuf, Vec<std::ffi::OsString>)>,
    _tmp: Option<tempfile::TempDir>,
    keep: bool,
}

/// Where the mariadbd binaries are.
fn mariadbd_bin() -> Result<PathBuf> {
    for p in [
        "/usr/sbin/mariadbd",
        "/usr/bin/mariadbd",
        "/usr/local/bin/mariadbd",
    ] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("mariadbd not found: install it with `apt-get install -y mariadb-server` (ci/test.sh does this)")
}

fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (released before return; callers retry on a race).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Returns the path of a datadir made by `mariadb-install-db`, creating it once
/// per machine (in the temp dir, keyed by the server version) and reusing it.
fn template_datadir() -> Result<PathBuf> {
    let bin = mariadbd_bin()?;
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .context("running mariadbd --version")?;
    let version = String::from_utf8_lossy(&version.stdout);
    let key: String = version
        .split_whitespace()
        .nth(2)
        .unwrap_or("unknown")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    let root = std::env::temp_dir().join(format!("replseed-mariadb-template-{key}"));
    if root.join("ready").exists() {
        return Ok(root.join("data"));
    }
    let staging = tempfile::Builder::new()
        .prefix("replseed-template-")
        .tempdir_in(std::env::temp_dir())?;
    let data = staging.path().join("data");
    let mut cmd = Command::new("mariadb-install-db");
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg("--innodb-log-file-size=32M");
    if is_root() {
        cmd.arg("--user=root");
    }
    let out = cmd.output().context("running mariadb-install-db")?;
    if !out.status.success() {
        bail!(
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(staging.path().join("ready"), b"ok")?;
    let staged = staging.keep();
    // Another process may have won the race; then use theirs.
    if std::fs::rename(&staged, &root).is_err() {
        let _ = std::fs::remove_dir_all(&staged);
    }
    if !root.join("ready").exists() {
        bail!(
            "could not create the template datadir at {}",
            root.display()
        );
    }
    Ok(root.join("data"))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !status.success() {
        bail!("cp -a {} {} failed", from.display(), to.display());
    }
    Ok(())
}

impl MariaDb {
    /// Starts a server with default options and the given `server_id`.
    pub async fn start(server_id: u32) -> Result<MariaDb> {
        Self::start_with(MariaDbOptions {
            server_id,
            ..Default::default()
        })
        .await
    }

    /// Starts a server.
    pub async fn start_with(opts: MariaDbOptions) -> Result<MariaDb> {
        let bin = mariadbd_bin()?;
        let (tmp, dir) = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (None, d.canonicalize()?)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("replseed-mariadb-")
                    .tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let data = dir.join("data");
        if !data.exists() {
            let template = tokio::task::spawn_blocking(template_datadir).await??;
            copy_dir(&template, &data)?;
        }
        // The init file gives root TCP access from 127.0.0.1 and anywhere
        // (replicas connect as root), without writing to the binary log.
        let init = dir.join("init.sql");
        std::fs::write(
            &init,
            "SET SESSION sql_log_bin=0;\n\
             CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';\n\
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n\
             CREATE USER IF NOT EXISTS 'root'@'%';\n\
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;\n",
        )?;
        // Our own tmpdir: at startup mariadbd deletes every `#sql*` file in its
        // tmpdir, which would pull the temporary tables from under the other
        // sandboxes sharing /tmp.
        let tmpdir = dir.join("tmp");
        std::fs::create_dir_all(&tmpdir)?;
        let mut last_err = None;
        for _attempt in 0..5 {
            let port = opts.port.unwrap_or_else(free_port);
            let mut cmd = Command::new(&bin);
            cmd.arg("--no-defaults");
            if is_root() {
                cmd.arg("--user=root");
            }
            cmd.arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", dir.join("mariadbd.sock").display()))
                .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
                .arg(format!("--log-error={}", dir.join("error.log").display()))
                .arg(format!("--init-file={}", init.display()))
                .arg(format!("--tmpdir={}", tmpdir.display()))
                .arg(format!("--port={port}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--server-id={}", opts.server_id))
                .arg("--gtid-strict-mode=1")
                .arg("--local-infile=1")
                .arg("--innodb-log-file-size=32M")
                .arg(format!(
                    "--innodb-buffer-pool-size={}M",
                    opts.buffer_pool_mb
                ))
                .arg(if opts.durable {
                    "--innodb-flush-log-at-trx-commit=1"
                } else {
                    "--innodb-flush-log-at-trx-commit=2"
                })
                .arg(if opts.durable {
                    "--sync-binlog=1"
                } else {
                    "--sync-binlog=0"
                })
                .arg("--max-allowed-packet=256M")
                .arg("--character-set-server=utf8mb4")
                .arg("--collation-server=utf8mb4_general_ci");
            if opts.log_bin {
                cmd.arg("--log-bin=mariadb-bin")
                    .arg("--binlog-format=ROW")
                    .arg("--binlog-row-image=FULL")
                    .arg("--binlog-row-metadata=FULL");
            }
            for a in &opts.extra_args {
                cmd.arg(a);
            }
            if let Some(t) = &opts.tls_only {
                cmd.arg(format!("--ssl-ca={}", t.ca.display()))
                    .arg(format!("--ssl-cert={}", t.cert.display()))
                    .arg(format!("--ssl-key={}", t.key.display()))
                    .arg("--require-secure-transport=ON");
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if opts.keep {
                // Detach, so that the server outlives the sandbox command.
                use std::os::unix::process::CommandExt;
                cmd.process_group(0);
            }
            let command = (
                bin.clone(),
                cmd.get_args().map(|a| a.to_os_string()).collect(),
            );
            let child = cmd.spawn().context("spawning mariadbd")?;
            let mut db = MariaDb {
                port,
                tls_only: opts.tls_only.is_some(),
                server_id: opts.server_id,
                dir: dir.clone(),
                child: Some(child),
                command: Some(command),
                _tmp: None,
                keep: opts.keep,
            };
            match db.wait_ready(Duration::from_secs(60)).await {
                Ok(()) => {
                    db._tmp = tmp;
                    return Ok(db);
                }
                Err(e) => {
                    last_err = Some(e);
                    db.kill();
                    if opts.port.is_some() {
                        break;
                    }
                }
            }
        }
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("mariadbd did not start"))).with_context(
            || {
                format!(
                    "mariadbd in {} did not start; error.log tail:\n{}",
                    dir.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            },
        )
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("mariadbd exited with {status}");
                }
            }
            if let Ok(mut conn) = mysql_async::Conn::from_url(self.url()).await {
                // Another test's server may have taken the port between
                // free_port() and our bind: only our own datadir counts.
                let datadir: Option<String> =
                    conn.query_first("SELECT @@datadir").await.ok().flatten();
                let _ = conn.disconnect().await;
                match datadir {
                    Some(d)
                        if Path::new(&d).canonicalize().ok()
                            == self.dir.join("data").canonicalize().ok() =>
                    {
                        return Ok(())
                    }
                    Some(d) => bail!(
                        "port {} is taken by another server (datadir {d})",
                        self.port
                    ),
                    None => {}
                }
            }
            if start.elapsed() > timeout {
                bail!(
                    "mariadbd on port {} not ready after {:?}",
                    self.port,
                    timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `mysql://root@127.0.0.1:PORT` (root has no password in a sandbox);
    /// for a TLS-only server, with TLS asked of the driver (unverified).
    pub fn url(&self) -> String {
        if self.tls_only {
            format!(
                "mysql://root@127.0.0.1:{}?require_ssl=true&verify_ca=false&verify_identity=false&prefer_socket=false",
                self.port
            )
        } else {
            format!("mysql://root@127.0.0.1:{}", self.port)
        }
    }

    /// A new connection as root.
    pub async fn conn(&self) -> Result<mysql_async::Conn> {
        Ok(mysql_async::Conn::from_url(self.url()).await?)
    }

    /// Runs SQL statements (separated by `;` at line ends are fine: uses the text protocol).
    pub async fn exec(&self, sql: &str) -> Result<()> {
        let mut c = self.conn().await?;
        c.query_drop(sql)
            .await
            .with_context(|| format!("running SQL on port {}", self.port))?;
        c.disconnect().await?;
        Ok(())
    }

    /// Kills the server at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Crashes the server (SIGKILL), waits `down`, and starts it again on
    /// the same port and datadir (InnoDB recovers); returns once it accepts
    /// connections.
    pub async fn restart(&mut self, down: Duration) -> Result<()> {
        self.kill();
        tokio::time::sleep(down).await;
        let (bin, args) = self.command.clone().context("not started by this handle")?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning mariadbd again")?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(120)).await
    }

    /// Releases the handle without stopping the server (for `--keep` sandboxes).
    pub fn detach(mut self) {
        self.child.take();
        self.keep = true;
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if !self.keep {
            self.kill();
        }
    }
}

/// Stops a sandbox server started with `keep` by its pid file.
pub fn stop_sandbox(dir: &Path) -> Result<bool> {
    let pidfile = dir.join("mariadbd.pid");
    let Ok(pid) = std::fs::read_to_string(&pidfile) else {
        return Ok(false);
    };
    let pid = pid.trim();
    let _ = Command::new("kill").arg(pid).status();
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if Path::new(&format!("/proc/{pid}")).exists() {
        let _ = Command::new("kill").arg("-9").arg(pid).status();
    }
    Ok(true)
}

/// An S3 endpoint for tests: s3s-fs in-process, or an external one.
#[derive(Debug)]
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Access key.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
    /// Filesystem root of an in-process server (for corrupting objects in tests).
    pub root: Option<PathBuf>,
    _tmp: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl S3Server {
    /// Starts s3s-fs in-process on 127.0.0.1:`port` (0 = any) rooted at `root`
    /// (a temp dir when `None`), or returns the external endpoint named by
    /// `REPLSEED_TEST_S3_ENDPOINT`.
    pub async fn start(root: Option<PathBuf>, port: u16) -> Result<S3Server> {
        if let Ok(ep) = std::env::var("REPLSEED_TEST_S3_ENDPOINT") {
            return Ok(S3Server {
                endpoint: ep,
                access_key: std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
                secret_key: std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
                root: None,
                _tmp: None,
                shutdown: None,
            });
        }
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto::Builder as ConnBuilder;
        use s3s::auth::SimpleAuth;
        use s3s::service::S3ServiceBuilder;

        let (tmp, root) = match root {
            Some(r) => {
                std::fs::create_dir_all(&r)?;
                (None, r.canonicalize()?)
            }
            None => {
                let t = tempfile::Builder::new().prefix("replseed-s3-").tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let access_key = "replseed-test".to_string();
        let secret_key = "replseed-test-secret".to_string();
        let fs = s3s_fs::FileSystem::new(&root).map_err(|e| anyhow::anyhow!("s3s-fs: {e:?}"))?;
        let service = {
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(
                access_key.clone(),
                secret_key.clone(),
            ));
            b.build()
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let (socket, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                    _ = &mut rx => break,
                };
                let conn = http.serve_connection(TokioIo::new(socket), service.clone());
                let conn = conn.into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Ok(S3Server {
            endpoint: format!("http://{addr}"),
            access_key,
            secret_key,
            root: Some(root),
            _tmp: tmp,
            shutdown: Some(tx),
        })
    }

    /// Creates a bucket (a directory for the in-process server).
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        match &self.root {
            Some(root) => {
                std::fs::create_dir_all(root.join(name))?;
                Ok(())
            }
            None => Ok(()), // external endpoints: the bucket must exist already
        }
    }

    /// Environment variables that point object_store's S3 client at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
