//! `replseed archive`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use replseed_binlog::ArchivePlan;

use super::{credentials, print_json, shutdown_signal, Failure};
use crate::cli::ArchiveArgs;

pub async fn run(a: ArchiveArgs) -> Result<ExitCode> {
    if a.server_id == 0 {
        return Err(super::bad_flag(
            "--server-id must not be 0 (a master refuses a replica with server_id 0)",
        ));
    }
    if a.segment_mb == 0 || a.segment_secs == 0 {
        return Err(super::bad_flag(
            "--segment-mb and --segment-secs must be at least 1",
        ));
    }
    let plan = ArchivePlan {
        source: credentials::server("source", &a.source)?,
        // It starts from a snapshot already staged, or from the archive:
        // a stage that does not exist is an error, not a new empty folder.
        stage: credentials::stage(&a.stage.stage)?,
        server_id: a.server_id,
        until_current: a.until_current,
        segment_bytes: (a.segment_mb as usize) << 20,
        segment_age: Duration::from_secs(a.segment_secs),
        zstd_level: 3,
    };
    let source = plan.source.addr();
    let r = replseed_binlog::archiver::run(plan, shutdown_signal())
        .await
        .with_context(|| format!("archiving the binary log of {source} failed"))?;
    eprintln!(
        "archived {} transactions in {} segments ({:.1} MiB of binlog, {:.1} MiB stored) from '{}' to '{}' in {:.1} s",
        r.transactions,
        r.segments,
        r.bytes_raw as f64 / 1048576.0,
        r.bytes_stored as f64 / 1048576.0,
        r.from,
        r.to,
        r.elapsed_s
    );
    if a.json {
        print_json(serde_json::to_value(&r)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `replseed serve`: until SIGINT/SIGTERM. Without a replication password
/// it does not start (exit 2): anyone could replicate the archive.
pub async fn serve(a: crate::cli::ServeArgs) -> Result<ExitCode> {
    use secrecy::ExposeSecret;
    let bad = |message: &str| Failure {
        code: 2,
        message: message.to_string(),
    };
    let password = credentials::password("replication")?
        .map(|p| p.expose_secret().to_string())
        .unwrap_or_default();
    if password.is_empty() {
        return Err(bad(&format!(
            "replseed serve needs a password for the replication user '{}': set REPLSEED_REPLICATION_PASSWORD or --replication-password-file",
            a.replication_user
        ))
        .into());
    }
    if a.max_connections == 0 || a.handshake_timeout_secs == 0 || a.idle_timeout_secs == 0 {
        return Err(bad("--max-connections, --handshake-timeout-secs and --idle-timeout-secs must be at least 1").into());
    }
    if a.max_login_failures > 0 && a.login_block_secs == 0 {
        return Err(
            bad("--login-block-secs must be at least 1 (or --max-login-failures 0)").into(),
        );
    }
    let tls = match (&a.ssl_cert, &a.ssl_key) {
        (Some(cert), Some(key)) => Some(
            replseed_binlog::serve::ServeTls::load(cert, key, a.ssl_ca.as_deref(), a.require_ssl)
                .map_err(|e| bad(&format!("--ssl-cert/--ssl-key/--ssl-ca: {e}")))?,
        ),
        _ => None,
    };
    let stage = credentials::stage(&a.stage.stage)?;
    let provision = match &a.snapshot {
        None => None,
        Some(id) => {
            let m = stage
                .resolve(id)
                .await
                .with_context(|| format!("cannot serve snapshot {id} of {}", stage.url()))?;
            let p =
                replseed_binlog::serve::provision::Provision::new(m, a.force, std::env::temp_dir())
                    .map_err(|m| bad(&m))?;
            eprintln!("provisioning empty replicas from snapshot {}", p.snapshot());
            Some(std::sync::Arc::new(p))
        }
    };
    let plan = replseed_binlog::serve::ServePlan {
        stage,
        provision,
        server_id: a.server_id,
        user: a.replication_user,
        password,
        poll: Duration::from_secs(1),
        limits: replseed_binlog::serve::Limits {
            max_connections: a.max_connections,
            handshake_timeout: Duration::from_secs(a.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(a.idle_timeout_secs),
            max_login_failures: a.max_login_failures,
            login_block: Duration::from_secs(a.login_block_secs),
        },
        tls,
    };
    let serving = replseed_binlog::serve::start(plan, &a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    eprintln!("serving the binlog archive on {}", serving.addr);
    shutdown_signal().await;
    drop(serving);
    Ok(ExitCode::SUCCESS)
}
