//! `provision --until` and `catchup --until` (and `--until-time`): a
//! point-in-time copy of the master, from a snapshot and the stage's binlog
//! archive (see `replseed_catchup::until`). The master itself is not
//! needed: the replica is never pointed at it.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use replseed_binlog::GtidState;
use replseed_catchup::until::{Holdings, Point, UntilReport};
use replseed_catchup::CatchupPlan;
use replseed_stage::Stage;
use serde_json::json;

use super::{print_json, replicate};
use crate::cli::{CatchupArgs, ProvisionArgs, UntilArgs};

/// The point of `--until` / `--until-time`, if one was given.
pub fn point(u: &UntilArgs) -> Result<Option<Point>> {
    Point::from_flags(u.until.as_deref(), u.until_time.as_deref()).map_err(super::bad_flag)
}

/// The stage's holdings and the exact GTID state at `point` (exit 3 when
/// the stage cannot reach it).
async fn resolve(stage: &Stage, point: &Point) -> Result<(Holdings, GtidState)> {
    let h = Holdings::read(stage).await?;
    let at = h.locate(stage, point).await?;
    Ok((h, at))
}

/// No replication login: a point-in-time copy replicates only from the
/// embedded serve, with a user of its own.
fn no_login() -> (String, secrecy::SecretString) {
    (String::new(), secrecy::SecretString::from(String::new()))
}

async fn copy(
    plan: CatchupPlan,
    point: &Point,
    at: &GtidState,
    h: &Holdings,
) -> Result<UntilReport> {
    let target = plan.target.addr();
    let master_id = h.segments.last().map_or(0, |s| s.master_server_id);
    let r = replseed_catchup::until::run(&plan, point, at, master_id)
        .await
        .with_context(|| format!("point-in-time copy of {target} failed"))?;
    eprintln!(
        "{} is a copy of the master at {point} (GTID '{}', from snapshot {}) in {:.1} s: replication stopped there and not configured",
        r.target, r.gtid_reached, r.snapshot, r.elapsed_s
    );
    Ok(r)
}

pub async fn catchup(a: CatchupArgs, point: Point) -> Result<ExitCode> {
    let stage = super::credentials::stage(&a.stage.stage)?;
    let m = Arc::new(stage.resolve(&a.snapshot).await?);
    let (h, at) = resolve(&stage, &point).await?;
    h.check(&m, &point, &at)?;
    let source = super::credentials::server("source", &a.source)?;
    let plan = replicate::catchup_plan(
        &source,
        &a.target,
        m,
        &a.replication,
        &no_login(),
        &a.stage.stage,
    )?;
    let r = copy(plan, &point, &at, &h).await?;
    if a.json {
        print_json(serde_json::to_value(&r)?);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn provision(a: ProvisionArgs, point: Point, bars: bool) -> Result<ExitCode> {
    if a.databases.is_some() {
        return Err(super::bad_flag(
            "--databases chooses what a new extract copies, and --until/--until-time copy from a published snapshot: extract the subset first",
        ));
    }
    let source = super::credentials::server("source", &a.source)?;
    let targets = replicate::targets(&a.targets, &source)?;
    let stage = super::credentials::stage(&a.stage.stage)?;
    let (h, at) = resolve(&stage, &point).await?;
    let id = match &a.snapshot {
        Some(id) => id.clone(),
        None => h.pick(&point, &at)?.snapshot.clone(),
    };
    // Read again through `resolve`: its signature is checked.
    let m = Arc::new(stage.resolve(&id).await?);
    h.check(&m, &point, &at)?;
    eprintln!(
        "point-in-time copy at {point} (GTID '{at}') from snapshot {} (GTID '{}')",
        m.snapshot, m.position.gtid
    );
    let many = targets.len() > 1;
    let h = Arc::new(h);
    let mut tasks = Vec::new();
    for t in &targets {
        let (lplan, cplan) = replicate::target_plans(&a, &source, t, &m, &no_login())?;
        let (point, at, h) = (point.clone(), at.clone(), h.clone());
        tasks.push(tokio::spawn(async move {
            let l = super::load::load(lplan, bars && !many).await?;
            let c = copy(cplan, &point, &at, &h).await?;
            Ok::<_, anyhow::Error>((l, c))
        }));
    }
    let mut results = Vec::new();
    let mut failed = 0;
    for (t, task) in targets.iter().zip(tasks) {
        let addr = super::credentials::server("target", t)?.addr();
        match task.await.expect("provision task panicked") {
            Ok((l, c)) => results.push(json!({
                "target": addr, "ok": true, "rows": l.rows, "chunks_loaded": l.chunks_loaded,
                "chunks_resumed": l.chunks_resumed, "gtid_reached": c.gtid_reached,
                "load_s": l.elapsed_s, "until_s": c.elapsed_s,
            })),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
                results.push(json!({"target": addr, "ok": false, "error": format!("{e:#}")}));
            }
        }
    }
    if a.json {
        print_json(json!({
            "snapshot": m.snapshot,
            "point": point.to_string(),
            "gtid": at.to_string(),
            "targets": results,
            "ok": failed == 0,
        }));
    }
    if failed > 0 {
        return Err(anyhow::anyhow!(
            "{failed} of {} targets failed (see above)",
            targets.len()
        ));
    }
    Ok(ExitCode::SUCCESS)
}
