//! `replseed-sandbox`: local servers for the quickstart, examples and benchmark.
//!
//! ```text
//! replseed-sandbox mariadb start --dir sandbox/master --port 3307 --server-id 1
//! replseed-sandbox mariadb stop  --dir sandbox/master
//! replseed-sandbox s3 --root sandbox/s3 --port 9000 --bucket snapshots   # runs in the foreground
//! ```
//!
//! Sandboxes are for trying replseed out and for tests: root has no password
//! and the server listens on 127.0.0.1 only.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use replseed_testkit::{stop_sandbox, MariaDb, MariaDbOptions, S3Server};

#[derive(Parser)]
#[command(
    name = "replseed-sandbox",
    about = "Throwaway local MariaDB and S3 servers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// MariaDB sandbox servers.
    Mariadb {
        #[command(subcommand)]
        cmd: MariaCmd,
    },
    /// An S3 server (s3s-fs) in the foreground; stop it with Ctrl-C or SIGTERM.
    S3 {
        /// Directory holding the buckets.
        #[arg(long)]
        root: PathBuf,
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 9000)]
        port: u16,
        /// Bucket to create.
        #[arg(long)]
        bucket: Vec<String>,
    },
}

#[derive(Subcommand)]
enum MariaCmd {
    /// Start a server in the background (binlog ROW + GTID strict); prints its URL.
    Start {
        /// Directory for the datadir, socket and logs (kept).
        #[arg(long)]
        dir: PathBuf,
        /// Port on 127.0.0.1.
        #[arg(long)]
        port: u16,
        /// Durable as production replicas: innodb_flush_log_at_trx_commit=1, sync_binlog=1.
        #[arg(long)]
        durable: bool,
        /// server_id.
        #[arg(long)]
        server_id: u32,
        /// InnoDB buffer pool in MiB.
        #[arg(long, default_value_t = 256)]
        buffer_pool_mb: u32,
        /// Extra mariadbd options (repeatable), e.g. --opt=--innodb-flush-log-at-trx-commit=1.
        #[arg(long = "opt", allow_hyphen_values = true)]
        opts: Vec<String>,
    },
    /// Stop a server started with `start`.
    Stop {
        /// Directory given to `start`.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Mariadb {
            cmd:
                MariaCmd::Start {
                    dir,
                    port,
                    server_id,
                    buffer_pool_mb,
                    durable,
                    opts,
                },
        } => {
            let db = MariaDb::start_with(MariaDbOptions {
                server_id,
                port: Some(port),
                dir: Some(dir),
                keep: true,
                log_bin: true,
                buffer_pool_mb,
                extra_args: opts,
                tls_only: None,
                durable,
            })
            .await?;
            println!("{}", db.url());
            db.detach();
        }
        Cmd::Mariadb {
            cmd: MariaCmd::Stop { dir },
        } => {
            if !stop_sandbox(&dir)? {
                eprintln!("no sandbox running in {}", dir.display());
            }
        }
        Cmd::S3 { root, port, bucket } => {
            let s3 = S3Server::start(Some(root), port).await?;
            for b in &bucket {
                s3.create_bucket(b)?;
            }
            eprintln!(
                "S3 server at {} (access key {}, secret {})",
                s3.endpoint, s3.access_key, s3.secret_key
            );
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        }
    }
    Ok(())
}
