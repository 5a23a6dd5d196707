//! `replseed load`.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use replseed_load::{LoadPlan, LoadReport, Progress};
use replseed_stage::{Manifest, Stage};

use super::{print_json, shutdown_signal};
use crate::cli::{LoadArgs, LoadOpts};
use crate::progress;

/// Builds a validated load plan.
pub fn plan(
    target: &str,
    stage: Stage,
    manifest: Arc<Manifest>,
    opts: &LoadOpts,
) -> Result<LoadPlan> {
    if opts.threads == 0 || opts.threads > 256 {
        return Err(super::bad_flag("--threads must be between 1 and 256"));
    }
    if opts.max_load_rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(super::bad_flag(
            "--max-load-rate must be a positive number of MiB per second",
        ));
    }
    let spool = opts.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    if !spool.is_dir() {
        return Err(super::bad_flag(format!(
            "--spool-dir {} is not a directory",
            spool.display()
        )));
    }
    Ok(LoadPlan {
        target: super::credentials::server("target", target)?,
        stage,
        manifest,
        threads: opts.threads,
        force: opts.force,
        spool,
        accounts: !opts.no_accounts,
        preview_accounts: None,
        rate: replseed_db::throttle::RateLimit::new(opts.max_load_rate),
    })
}

/// Load progress counters and their reporter.
fn reporter(bars: bool) -> (Arc<Progress>, progress::Reporter) {
    let progress = Arc::new(Progress::default());
    let p = progress.clone();
    let r = progress::spawn("load", bars, move || progress::Tick {
        phase: p.phase.lock().map(|s| s.clone()).unwrap_or_default(),
        // Committed rows, and those of the chunks being loaded.
        done: p.rows.load(Ordering::Relaxed) + p.rows_sending.load(Ordering::Relaxed),
        total: p.rows_total.load(Ordering::Relaxed),
        unit: "rows",
    });
    (progress, r)
}

/// Runs a load with progress reporting.
pub async fn load(plan: LoadPlan, bars: bool) -> Result<LoadReport> {
    let (progress, reporter) = reporter(bars);
    let target = plan.target.addr();
    let snapshot = plan.manifest.snapshot.clone();
    let r = replseed_load::run(plan, progress, shutdown_signal()).await;
    reporter.finish();
    let r = r.with_context(|| format!("load of snapshot `{snapshot}` into {target} failed"))?;
    if r.already_loaded {
        eprintln!(
            "snapshot {} was already loaded into {}",
            r.snapshot, r.target
        );
    } else {
        eprintln!(
            "loaded snapshot {} into {}: {} tables, {} rows, {} chunks ({} resumed from an earlier run) in {:.1} s",
            r.snapshot, r.target, r.tables, r.rows, r.chunks_loaded, r.chunks_resumed, r.elapsed_s
        );
    }
    for x in &r.replaced {
        eprintln!("  replaced (--force): {x}");
    }
    Ok(r)
}

/// Runs a load that follows a running extract (provision). Returns the
/// report and the published manifest.
pub async fn load_following(
    plan: LoadPlan,
    events: tokio::sync::mpsc::UnboundedReceiver<replseed_stage::SnapshotEvent>,
    bars: bool,
) -> Result<(LoadReport, Arc<Manifest>)> {
    let (progress, reporter) = reporter(bars);
    let target = plan.target.addr();
    let snapshot = plan.manifest.snapshot.clone();
    let stage = plan.stage.clone();
    let r = replseed_load::run_following(plan, events, progress, shutdown_signal()).await;
    reporter.finish();
    let r = r.with_context(|| format!("load of snapshot `{snapshot}` into {target} failed"))?;
    eprintln!(
        "loaded snapshot {} into {}: {} tables, {} rows, {} chunks, while it was extracted, in {:.1} s",
        r.snapshot, r.target, r.tables, r.rows, r.chunks_loaded, r.elapsed_s
    );
    let m = Arc::new(stage.read_manifest(&snapshot).await?);
    Ok((r, m))
}

pub async fn run(a: LoadArgs, bars: bool) -> Result<ExitCode> {
    let stage = super::credentials::stage(&a.stage.stage)?;
    let manifest = Arc::new(stage.resolve(&a.snapshot).await?);
    let plan = plan(&a.target, stage, manifest, &a.opts)?;
    let r = load(plan, bars).await?;
    if a.json {
        print_json(serde_json::to_value(&r)?);
    }
    Ok(ExitCode::SUCCESS)
}
