//! Orchestration: raw flags become validated plans, plans run, results are
//! reported: listings and reports on stdout (one JSON line instead with
//! `--json`), logs, progress and what a command did on stderr.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::json;

use replseed_extract::{ExtractPlan, Progress};
use replseed_stage::{ChunkProps, Manifest, StageError};

use crate::cli::{Cli, Command, ExtractArgs, SnapshotsCommand, TuningArgs};
use crate::progress;
use stage_archive::ArchiveView;

mod archive;
mod credentials;
mod load;
mod point_in_time;
pub mod replicate;
mod stage_archive;

/// An outcome that is not a success but has its own exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// Message.
    pub message: String,
}

/// A flag value out of its range: a bad command line (exit 2).
pub fn bad_flag(message: impl Into<String>) -> anyhow::Error {
    Failure {
        code: 2,
        message: message.into(),
    }
    .into()
}

/// Exit code for an error.
pub fn exit_code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.code;
        }
        // A snapshot id that cannot be one is a bad command line.
        if let Some(StageError::InvalidSnapshotId { .. }) = cause.downcast_ref::<StageError>() {
            return 2;
        }
        if let Some(
            replseed_catchup::CatchupError::BinlogPurged { .. }
            | replseed_catchup::CatchupError::ArchiveBehind { .. }
            | replseed_catchup::CatchupError::OutOfRange { .. },
        ) = cause.downcast_ref::<replseed_catchup::CatchupError>()
        {
            return 3;
        }
    }
    1
}

fn print_json(v: serde_json::Value) {
    println!("{v}");
}

/// A line of a listing or a report: on stdout, where `| grep` finds it,
/// or on stderr with `--json`, whose one line stdout then holds alone.
/// Logs and progress bars are on stderr.
macro_rules! say {
    ($json:expr, $($arg:tt)*) => {
        if $json {
            $crate::progress::eprintln(format_args!($($arg)*));
        } else {
            println!($($arg)*);
        }
    };
}
pub(crate) use say;

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let bars = !cli.no_progress;
    credentials::init(&cli.command.credential_flags())?;
    match cli.command {
        Command::Extract(a) => {
            let plan = extract_plan(
                &a.source,
                &a.stage.stage,
                a.snapshot.clone(),
                a.databases.clone(),
                a.threads,
                &a.tuning,
                !a.no_accounts,
            )?;
            let m = extract(plan, bars).await?;
            report_extract(&a, &m.0, m.1);
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshots { command } => snapshots(command).await,
        Command::Load(a) => load::run(a, bars).await,
        Command::Catchup(a) => replicate::catchup(a, bars).await,
        Command::Provision(a) => replicate::provision(a, bars).await,
        Command::Verify(a) => replicate::verify(a, bars).await,
        Command::Archive(a) => archive::run(a).await,
        Command::Serve(a) => archive::serve(a).await,
    }
}

/// Builds a validated extract plan from flags.
pub fn extract_plan(
    source: &str,
    stage: &str,
    snapshot: Option<String>,
    databases: Option<Vec<String>>,
    threads: usize,
    tuning: &TuningArgs,
    accounts: bool,
) -> Result<ExtractPlan> {
    if threads == 0 || threads > 256 {
        return Err(bad_flag("--threads must be between 1 and 256"));
    }
    if tuning.chunk_rows == 0 {
        return Err(bad_flag("--chunk-rows must be at least 1"));
    }
    if tuning.max_rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(bad_flag(
            "--max-rate must be a positive number of MiB per second",
        ));
    }
    if !(1..=22).contains(&tuning.zstd_level) {
        return Err(bad_flag("--zstd-level must be between 1 and 22"));
    }
    let snapshot = snapshot.unwrap_or_else(replseed_stage::default_snapshot_id);
    replseed_stage::layout::validate_snapshot_id(&snapshot)?;
    let databases = databases.map(|v| {
        v.into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
    });
    if let Some(d) = &databases {
        if d.is_empty() {
            return Err(bad_flag(
                "--databases is empty; leave it out to copy every non-system database",
            ));
        }
    }
    Ok(ExtractPlan {
        source: credentials::server("source", source)?,
        stage: credentials::writable_stage(stage)?,
        snapshot,
        databases,
        threads,
        chunk_rows: tuning.chunk_rows,
        chunk_bytes: tuning.chunk_mb.max(1) << 20,
        props: ChunkProps {
            zstd_level: tuning.zstd_level,
            ..Default::default()
        }
        .for_writers(threads),
        lock_free_attempts: tuning.lock_free_attempts,
        accounts,
        events: None,
        max_rate: tuning.max_rate,
        guard: replseed_db::throttle::GuardLimits {
            max_threads_running: tuning.max_threads_running,
            max_replica_lag: tuning.max_replica_lag,
            replicas: tuning
                .lag_replicas
                .iter()
                .map(|u| credentials::server("replica", u))
                .collect::<Result<_>>()?,
            own_sessions: 0,
        },
    })
}

/// Runs an extract with progress. Returns the manifest and elapsed seconds.
pub async fn extract(plan: ExtractPlan, bars: bool) -> Result<(Manifest, f64)> {
    let progress = Arc::new(Progress::default());
    let p = progress.clone();
    let reporter = progress::spawn("extract", bars, move || progress::Tick {
        phase: p.phase.lock().map(|s| s.clone()).unwrap_or_default(),
        done: p.rows.load(Ordering::Relaxed),
        total: p.rows_total.load(Ordering::Relaxed),
        unit: "rows",
    });
    let snapshot = plan.snapshot.clone();
    let stage_url = plan.stage.url().to_string();
    let r = replseed_extract::run(plan, progress, shutdown_signal()).await;
    reporter.finish();
    let r = r.with_context(|| {
        format!("extract of snapshot `{snapshot}` to {stage_url} failed; nothing was published")
    })?;
    let m = &r.manifest;
    progress::eprintln(format_args!(
        "published snapshot {} to {}: {} tables, {} rows, {} chunks, {} bytes in {:.1} s",
        m.snapshot,
        stage_url,
        m.totals.tables,
        m.totals.rows,
        m.totals.chunks,
        m.totals.bytes,
        r.elapsed.as_secs_f64()
    ));
    progress::eprintln(format_args!(
        "position {}:{}  gtid '{}'  ({}; commits blocked {} ms, DDL and non-transactional writes blocked {} ms)",
        m.position.binlog_file,
        m.position.binlog_pos,
        m.position.gtid,
        m.consistency.method,
        m.consistency.commit_blocked_ms,
        m.consistency.ddl_blocked_ms
    ));
    Ok((r.manifest, r.elapsed.as_secs_f64()))
}

fn report_extract(a: &ExtractArgs, m: &Manifest, secs: f64) {
    if a.json {
        print_json(extract_json(m, secs));
    }
}

/// The JSON summary of an extract.
pub fn extract_json(m: &Manifest, secs: f64) -> serde_json::Value {
    json!({
        "snapshot": m.snapshot,
        "gtid": m.position.gtid,
        "binlog_file": m.position.binlog_file,
        "binlog_pos": m.position.binlog_pos,
        "tables": m.totals.tables,
        "rows": m.totals.rows,
        "bytes": m.totals.bytes,
        "chunks": m.totals.chunks,
        "elapsed_s": (secs * 1000.0).round() / 1000.0,
        "consistency": {
            "method": m.consistency.method,
            "commit_blocked_ms": m.consistency.commit_blocked_ms,
            "ddl_blocked_ms": m.consistency.ddl_blocked_ms,
        },
    })
}

fn spool_dir() -> std::path::PathBuf {
    std::env::var_os("REPLSEED_SPOOL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

async fn snapshots(cmd: SnapshotsCommand) -> Result<ExitCode> {
    match cmd {
        SnapshotsCommand::List { stage, json } => {
            let stage = credentials::stage(&stage.stage)?;
            let entries = stage.list().await?;
            let archive = ArchiveView::read_or_warn(&stage).await;
            let mut published = Vec::new();
            let mut incomplete = Vec::new();
            for e in &entries {
                match &e.manifest {
                    Some(m) => {
                        let from_archive = archive.covers(&m.position.gtid);
                        say!(
                            json,
                            "{}  {}  gtid '{}'  {} tables  {} rows  {} bytes  archive {}",
                            m.snapshot,
                            m.finished_at,
                            m.position.gtid,
                            m.totals.tables,
                            m.totals.rows,
                            m.totals.bytes,
                            if from_archive { "yes" } else { "no" }
                        );
                        published.push(json!({
                            "id": m.snapshot,
                            "finished_at": m.finished_at,
                            "gtid": m.position.gtid,
                            "binlog_file": m.position.binlog_file,
                            "binlog_pos": m.position.binlog_pos,
                            "tables": m.totals.tables,
                            "rows": m.totals.rows,
                            "bytes": m.totals.bytes,
                            "archive": from_archive,
                        }));
                    }
                    None => {
                        let why = e.problem.clone().unwrap_or_else(|| {
                            "no manifest: incomplete (failed or running extract)".into()
                        });
                        say!(json, "{}  INCOMPLETE  {}", e.id, why);
                        incomplete.push(json!({"id": e.id, "reason": why}));
                    }
                }
            }
            if entries.is_empty() {
                say!(json, "no snapshots in {}", stage.url());
            }
            say!(json, "binlog archive: {}", archive.range_line());
            // What `--until` / `--until-time` can reach.
            let window = match replseed_catchup::until::Holdings::read(&stage).await {
                Ok(h) => h.window(),
                Err(e) => Err(e.to_string()),
            };
            match &window {
                Ok(w) => say!(json, "point-in-time window: {w}"),
                Err(e) => say!(json, "point-in-time window: none ({e})"),
            }
            if json {
                print_json(json!({
                    "stage": stage.url(),
                    "snapshots": published,
                    "incomplete": incomplete,
                    "archive_range": archive.range_json(),
                    "window": match window {
                        Ok(w) => serde_json::to_value(w)?,
                        Err(e) => json!({ "error": e }),
                    },
                }));
            }
            Ok(ExitCode::SUCCESS)
        }
        SnapshotsCommand::Show { id, stage, json } => {
            let stage = credentials::stage(&stage.stage)?;
            let m = stage.resolve(&id).await?;
            let archive = ArchiveView::read_or_warn(&stage).await;
            let verdict = archive.verdict(&m.position.gtid);
            if json {
                let tables: Vec<_> = m
                    .tables()
                    .map(|(d, t)| {
                        json!({
                            "database": d.name,
                            "table": t.name,
                            "engine": t.engine,
                            "rows": t.rows,
                            "bytes": t.bytes,
                            "chunks": t.chunks.iter().map(|c| json!({
                                "path": c.path, "rows": c.rows, "bytes": c.bytes, "sha256": c.sha256,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                print_json(json!({
                    "snapshot": m.snapshot,
                    "stage": stage.url(),
                    "started_at": m.started_at,
                    "finished_at": m.finished_at,
                    "source": {"version": m.source.version, "server_id": m.source.server_id, "hostname": m.source.hostname, "port": m.source.port},
                    "gtid": m.position.gtid,
                    "binlog_file": m.position.binlog_file,
                    "binlog_pos": m.position.binlog_pos,
                    "archive": verdict.is_ok(),
                    "archive_reason": verdict.as_ref().err(),
                    "archive_range": archive.range_json(),
                    "consistency": m.consistency,
                    "totals": m.totals,
                    "databases": m.databases.iter().map(|d| json!({
                        "name": d.name,
                        "tables": d.tables.len(),
                        "views": d.views.len(),
                        "sequences": d.sequences.len(),
                        "triggers": d.triggers.len(),
                        "routines": d.routines.len(),
                        "events": d.events.len(),
                        "outside_subset": m.outside_subset(d),
                    })).collect::<Vec<_>>(),
                    "tables": tables,
                }));
            } else {
                println!("snapshot   {}", m.snapshot);
                println!("taken      {} .. {}", m.started_at, m.finished_at);
                println!(
                    "source     {} (server_id {}, {}:{})",
                    m.source.version, m.source.server_id, m.source.hostname, m.source.port
                );
                println!(
                    "position   {}:{}",
                    m.position.binlog_file, m.position.binlog_pos
                );
                println!("gtid       '{}'", m.position.gtid);
                println!("archive    {}", archive.range_line());
                match &verdict {
                    Ok(()) => println!("catch-up   from the archive: yes"),
                    Err(why) => println!("catch-up   from the archive: no ({why})"),
                }
                println!(
                    "consistency {} (commits blocked {} ms, DDL blocked {} ms)",
                    m.consistency.method,
                    m.consistency.commit_blocked_ms,
                    m.consistency.ddl_blocked_ms
                );
                println!(
                    "totals     {} tables, {} rows, {} chunks, {} bytes",
                    m.totals.tables, m.totals.rows, m.totals.chunks, m.totals.bytes
                );
                for d in &m.databases {
                    println!(
                        "database {}: {} tables, {} views, {} sequences, {} triggers, {} routines, {} events{}",
                        d.name, d.tables.len(), d.views.len(), d.sequences.len(), d.triggers.len(), d.routines.len(), d.events.len(),
                        if m.outside_subset(d) { " (outside the subset)" } else { "" }
                    );
                    for t in &d.tables {
                        println!(
                            "  {:<40} {:>12} rows {:>5} chunks {:>14} bytes",
                            t.name,
                            t.rows,
                            t.chunks.len(),
                            t.bytes
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SnapshotsCommand::Verify { id, stage, json } => {
            let stage = credentials::stage(&stage.stage)?;
            let m = stage.resolve(&id).await?;
            let r = stage.verify(&m, &spool_dir()).await?;
            for b in &r.bad {
                say!(json, "BAD CHUNK {b}");
            }
            for u in &r.unexpected {
                say!(json, "note: object not in the manifest: {u}");
            }
            if json {
                print_json(json!({
                    "snapshot": m.snapshot, "ok": r.bad.is_empty(), "chunks": r.chunks, "rows": r.rows,
                    "bytes": r.bytes, "bad": r.bad, "unexpected": r.unexpected,
                }));
            }
            if r.bad.is_empty() {
                say!(
                    json,
                    "snapshot {} verified: {} chunks, {} rows, {} bytes",
                    m.snapshot,
                    r.chunks,
                    r.rows,
                    r.bytes
                );
                Ok(ExitCode::SUCCESS)
            } else {
                Err(Failure {
                    code: 4,
                    message: format!(
                        "snapshot {}: {} of {} chunks are bad (listed above); re-extract the snapshot",
                        m.snapshot,
                        r.bad.len(),
                        r.chunks
                    ),
                }
                .into())
            }
        }
        SnapshotsCommand::Delete { id, stage } => {
            let stage = credentials::stage(&stage.stage)?;
            let n = stage.delete(&id).await?;
            eprintln!("deleted snapshot {id} ({n} objects) from {}", stage.url());
            Ok(ExitCode::SUCCESS)
        }
        SnapshotsCommand::Prune { stage, keep, json } => {
            let stage = credentials::stage(&stage.stage)?;
            let entries = stage.list().await?;
            // Read before anything is deleted: unreadable, nothing changes.
            let archive = ArchiveView::read(&stage)
                .await
                .context("reading the binlog archive; nothing was pruned")?;
            let mut published: Vec<&Manifest> =
                entries.iter().filter_map(|e| e.manifest.as_ref()).collect();
            published.sort_by(|a, b| {
                (b.finished_at.as_str(), b.snapshot.as_str())
                    .cmp(&(a.finished_at.as_str(), a.snapshot.as_str()))
            });
            let mut deleted = Vec::new();
            let mut in_use = Vec::new();
            for m in published.iter().skip(keep) {
                match stage.delete(&m.snapshot).await {
                    Ok(_) => {
                        eprintln!("pruned snapshot {}", m.snapshot);
                        deleted.push(m.snapshot.clone());
                    }
                    // Being loaded: kept for a later prune.
                    Err(e @ StageError::SnapshotInUse { .. }) => {
                        eprintln!("kept {}: {e}", m.snapshot);
                        in_use.push(m.snapshot.clone());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // Incomplete prefixes older than the oldest kept snapshot are leftovers of failed runs.
            if let Some(oldest_kept) = published.iter().take(keep).next_back() {
                for e in entries
                    .iter()
                    .filter(|e| e.manifest.is_none() && e.problem.is_none())
                {
                    if e.id.as_str() < oldest_kept.snapshot.as_str() {
                        match stage.delete(&e.id).await {
                            Ok(_) => {
                                eprintln!("removed incomplete prefix {}", e.id);
                                deleted.push(e.id.clone());
                            }
                            // An extract still writing it.
                            Err(StageError::SnapshotInUse { .. }) => in_use.push(e.id.clone()),
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
            let kept: Vec<_> = published
                .iter()
                .take(keep)
                .map(|m| m.snapshot.clone())
                .collect();
            // Segments entirely before every snapshot still there (kept, or
            // kept because in use): lowest first, so the chain stays whole.
            let still_there: Vec<&str> = published
                .iter()
                .filter(|m| kept.contains(&m.snapshot) || in_use.contains(&m.snapshot))
                .map(|m| m.position.gtid.as_str())
                .collect();
            let mut segments_deleted = Vec::new();
            for s in archive.prunable(&still_there) {
                stage.delete_segment(s.seq).await?;
                eprintln!(
                    "pruned archive segment {} ('{}' .. '{}')",
                    s.seq, s.start_state, s.end_state
                );
                segments_deleted.push(s.seq);
            }
            if json {
                print_json(json!({
                    "stage": stage.url(),
                    "kept": kept,
                    "deleted": deleted,
                    "in_use": in_use,
                    "segments_deleted": segments_deleted,
                }));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
