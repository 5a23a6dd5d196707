//! `replseed catchup`, `replseed provision` and `replseed verify`.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use replseed_catchup::verify::VerifyPlan;
use replseed_catchup::{CatchupPlan, CatchupReport, Progress};
use replseed_db::Server;
use replseed_stage::Manifest;

use super::{extract_json, print_json, say, shutdown_signal, Failure};
use crate::cli::{CatchupArgs, ProvisionArgs, ReplicationOpts, VerifyArgs};
use crate::progress;

/// The replication user and password of `r` for replicas of `source`
/// (see [`super::credentials::replication_login`]).
fn replication_login(
    source: &Server,
    r: &ReplicationOpts,
) -> Result<(String, secrecy::SecretString)> {
    let login = super::credentials::replication_login(
        r.replication_user.as_deref(),
        r.replication_password.as_deref(),
        source,
    )?;
    if login.0 == source.user() {
        tracing::warn!(
            "the replica will connect to the master as `{}`, the --source user; \
             give replication a user of its own with only REPLICATION SLAVE (--replication-user)",
            login.0
        );
    }
    Ok(login)
}

/// What `provision` of a published snapshot does to one target: its load,
/// then its catch-up.
pub(super) fn target_plans(
    a: &ProvisionArgs,
    source: &Server,
    target: &str,
    m: &Arc<Manifest>,
    login: &(String, secrecy::SecretString),
) -> Result<(replseed_load::LoadPlan, CatchupPlan)> {
    let lplan = super::load::plan(
        target,
        super::credentials::stage(&a.stage.stage)?,
        m.clone(),
        &a.opts,
    )?;
    let cplan = catchup_plan(
        source,
        target,
        m.clone(),
        &a.replication,
        login,
        &a.stage.stage,
    )?;
    Ok((lplan, cplan))
}

pub(super) fn catchup_plan(
    source: &Server,
    target: &str,
    manifest: Arc<Manifest>,
    r: &ReplicationOpts,
    login: &(String, secrecy::SecretString),
    stage: &str,
) -> Result<CatchupPlan> {
    Ok(CatchupPlan {
        source: source.clone(),
        target: super::credentials::server("target", target)?,
        manifest,
        replication_user: login.0.clone(),
        replication_password: login.1.clone(),
        master_host: r.master_host.clone().unwrap_or_else(|| source.host()),
        master_port: r.master_port.unwrap_or_else(|| source.port()),
        master_tls: replseed_catchup::MasterTls::of(
            source,
            r.master_ssl_ca.clone(),
            r.master_ssl_cert.clone(),
            r.master_ssl_key.clone(),
        ),
        timeout: (r.catchup_timeout > 0).then(|| Duration::from_secs(r.catchup_timeout)),
        archive: Some(replseed_catchup::archive::ArchiveRoute {
            stage: super::credentials::stage(stage)?,
            listen: r.archive_listen.clone(),
            host: r.archive_host.clone(),
            tls: archive_tls(r)?,
        }),
    })
}

/// TLS for catchup's link to the archive, from `--archive-ssl-*`.
fn archive_tls(r: &ReplicationOpts) -> Result<Option<replseed_catchup::archive::ArchiveTls>> {
    let (Some(cert), Some(key)) = (&r.archive_ssl_cert, &r.archive_ssl_key) else {
        return Ok(None);
    };
    let serve = replseed_binlog::serve::ServeTls::load(cert, key, None, true).map_err(|e| {
        crate::commands::Failure {
            code: 2,
            message: format!("--archive-ssl-cert/--archive-ssl-key: {e}"),
        }
    })?;
    Ok(Some(replseed_catchup::archive::ArchiveTls {
        serve,
        replica_ca: r.archive_ssl_ca.clone(),
    }))
}

/// Whether a load failed for a fault that a later run cures.
fn transient_load(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<replseed_load::LoadError>()
            .is_some_and(|l| l.is_transient())
    })
}

/// Waits until the extract publishes `id`; `Err` when it failed instead
/// (its unpublished chunks are removed).
async fn published_manifest(
    stage: &replseed_stage::Stage,
    id: &str,
    mut extracted: tokio::sync::watch::Receiver<bool>,
) -> Result<Arc<Manifest>> {
    // The sender goes away when the extract fails.
    extracted.wait_for(|done| *done).await?;
    Ok(Arc::new(stage.read_manifest(id).await?))
}

async fn catchup_one(plan: CatchupPlan, bars: bool) -> Result<CatchupReport> {
    let progress = Arc::new(Progress::default());
    let p = progress.clone();
    // Counts the transactions applied since the snapshot up to the goal.
    let reporter = progress::spawn("catchup", bars, move || {
        let total = p.transactions_total.load(Ordering::Relaxed);
        progress::Tick {
            phase: p.state.lock().map(|s| s.clone()).unwrap_or_default(),
            done: total.saturating_sub(p.transactions_behind.load(Ordering::Relaxed)),
            total,
            unit: "transactions",
        }
    });
    let target = plan.target.addr();
    let r = replseed_catchup::run(plan, progress, shutdown_signal()).await;
    reporter.finish();
    let r = r.with_context(|| format!("catch-up of {target} failed"))?;
    eprintln!(
        "{} is replicating and caught up: started at GTID '{}', reached '{}' (goal '{}') in {:.1} s",
        r.target, r.gtid_start, r.gtid_reached, r.gtid_goal, r.elapsed_s
    );
    Ok(r)
}

pub async fn catchup(a: CatchupArgs, bars: bool) -> Result<ExitCode> {
    if let Some(point) = super::point_in_time::point(&a.until)? {
        return super::point_in_time::catchup(a, point).await;
    }
    let stage = super::credentials::stage(&a.stage.stage)?;
    let manifest = Arc::new(stage.resolve(&a.snapshot).await?);
    let source = super::credentials::server("source", &a.source)?;
    let login = replication_login(&source, &a.replication)?;
    let plan = catchup_plan(
        &source,
        &a.target,
        manifest,
        &a.replication,
        &login,
        &a.stage.stage,
    )?;
    let r = catchup_one(plan, bars).await?;
    if a.json {
        print_json(serde_json::to_value(&r)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--target`s of `provision`, none of them the `--source`.
pub(super) fn targets(targets: &[String], source: &Server) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for t in targets {
        let s = super::credentials::server("target", t)?;
        if s.addr() == source.addr() {
            return Err(super::bad_flag(format!(
                "--target {} is the --source itself",
                s.addr()
            )));
        }
        out.push(t.clone());
    }
    Ok(out)
}

pub async fn provision(a: ProvisionArgs, bars: bool) -> Result<ExitCode> {
    if let Some(point) = super::point_in_time::point(&a.until)? {
        return super::point_in_time::provision(a, point, bars).await;
    }
    let source = super::credentials::server("source", &a.source)?;
    // Before anything is extracted or loaded.
    let login = replication_login(&source, &a.replication)?;
    let targets = targets(&a.targets, &source)?;
    let many = a.targets.len() > 1;
    let mut tasks = Vec::new();
    let (manifest, extract_summary) = match &a.snapshot {
        Some(id) => {
            // Reuse a published snapshot: every target loads it, then catches up.
            let stage = super::credentials::stage(&a.stage.stage)?;
            let m = Arc::new(stage.resolve(id).await?);
            eprintln!(
                "reusing snapshot {} (GTID '{}')",
                m.snapshot, m.position.gtid
            );
            for t in &targets {
                let (lplan, cplan) = target_plans(&a, &source, t, &m, &login)?;
                tasks.push(tokio::spawn(async move {
                    let l = super::load::load(lplan, bars && !many).await?;
                    let c = catchup_one(cplan, bars && !many).await?;
                    Ok::<_, anyhow::Error>((l, c))
                }));
            }
            (m, serde_json::Value::Null)
        }
        None => {
            // Extract, and load every target while the extract writes the
            // chunks: each chunk is loaded as soon as it is in the stage.
            let mut plan = super::extract_plan(
                &a.source,
                &a.stage.stage,
                None,
                a.databases.clone(),
                a.opts.threads,
                &a.tuning,
                !a.opts.no_accounts,
            )?;
            // Every target is checked before the master pays for an extract:
            // a refused target costs it nothing, and a retry finds no
            // snapshot of the refused run in the stage.
            let (preview, preview_accounts) = replseed_extract::preview(&plan).await?;
            let preview = Arc::new(preview);
            let mut refused = Vec::new();
            for t in &targets {
                let mut lplan = super::load::plan(
                    t,
                    super::credentials::stage(&a.stage.stage)?,
                    preview.clone(),
                    &a.opts,
                )?;
                lplan.preview_accounts = preview_accounts.clone();
                if let Err(e) = replseed_load::check(&lplan).await {
                    refused.push(e.to_string());
                }
            }
            if !refused.is_empty() {
                anyhow::bail!(
                    "{}\nnothing was extracted; fix the target(s) and run provision again",
                    refused.join("\n")
                );
            }
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            plan.events = Some(tx);
            let extract = tokio::spawn(super::extract(plan, false));
            let (extracted_tx, extracted_rx) = tokio::sync::watch::channel(false);
            let mut senders = Vec::new();
            // The first event carries the schema; without it the extract failed.
            if let Some(replseed_stage::SnapshotEvent::Started(skeleton)) = rx.recv().await {
                for t in &targets {
                    let (ttx, trx) = tokio::sync::mpsc::unbounded_channel();
                    senders.push(ttx);
                    let lplan = super::load::plan(
                        t,
                        super::credentials::stage(&a.stage.stage)?,
                        skeleton.clone(),
                        &a.opts,
                    )?;
                    let cplan = catchup_plan(
                        &source,
                        t,
                        skeleton.clone(),
                        &a.replication,
                        &login,
                        &a.stage.stage,
                    )?;
                    let extracted = extracted_rx.clone();
                    tasks.push(tokio::spawn(async move {
                        let again = lplan.clone();
                        let (l, published) =
                            match super::load::load_following(lplan, trx, bars && !many).await {
                                Ok(r) => r,
                                // The target went away for longer than a chunk's
                                // retries: load the snapshot again once it is
                                // published, resuming what is in.
                                Err(e) if transient_load(&e) => {
                                    tracing::warn!("{e:#}; the load resumes once the extract has published the snapshot");
                                    let m = published_manifest(&again.stage, &again.manifest.snapshot, extracted)
                                        .await
                                        .map_err(|_| e)?;
                                    let plan = replseed_load::LoadPlan {
                                        manifest: m.clone(),
                                        ..again
                                    };
                                    (super::load::load(plan, false).await?, m)
                                }
                                Err(e) => return Err(e),
                            };
                        let cplan = CatchupPlan {
                            manifest: published,
                            ..cplan
                        };
                        let c = catchup_one(cplan, bars && !many).await?;
                        Ok::<_, anyhow::Error>((l, c))
                    }));
                }
            }
            while let Some(ev) = rx.recv().await {
                for s in &senders {
                    let _ = s.send(ev.clone());
                }
            }
            drop(senders);
            let (m, secs) = extract.await.expect("extract task panicked")?;
            let _ = extracted_tx.send(true);
            let j = extract_json(&m, secs);
            (Arc::new(m), j)
        }
    };
    let mut results = Vec::new();
    let mut failed = 0;
    for (t, h) in a.targets.iter().zip(tasks) {
        let addr = super::credentials::server("target", t)?.addr();
        match h.await.expect("provision task panicked") {
            Ok((l, c)) => results.push(json!({
                "target": addr, "ok": true, "rows": l.rows, "chunks_loaded": l.chunks_loaded,
                "chunks_resumed": l.chunks_resumed, "replicating": c.replicating, "caught_up": c.caught_up,
                "gtid_reached": c.gtid_reached, "load_s": l.elapsed_s, "catchup_s": c.elapsed_s,
            })),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
                results.push(json!({"target": addr, "ok": false, "replicating": false, "caught_up": false, "error": format!("{e:#}")}));
            }
        }
    }
    if a.json {
        print_json(json!({
            "snapshot": manifest.snapshot,
            "gtid": manifest.position.gtid,
            "extract": extract_summary,
            "targets": results,
            "ok": failed == 0,
        }));
    }
    if failed > 0 {
        return Err(anyhow::anyhow!(
            "{failed} of {} targets failed (see above)",
            a.targets.len()
        ));
    }
    eprintln!(
        "all {} target(s) replicate from the master and are caught up",
        a.targets.len()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(a: VerifyArgs, bars: bool) -> Result<ExitCode> {
    let plan = VerifyPlan {
        source: super::credentials::server("source", &a.source)?,
        target: super::credentials::server("target", &a.target)?,
        databases: a.databases.clone(),
        timeout: Duration::from_secs(a.timeout),
        accounts: !a.no_accounts,
    };
    let progress = Arc::new(replseed_catchup::verify::Progress::default());
    let p = progress.clone();
    let reporter = progress::spawn("verify", bars, move || progress::Tick {
        phase: p.phase.lock().map(|s| s.clone()).unwrap_or_default(),
        done: p.tables_done.load(Ordering::Relaxed),
        total: p.tables_total.load(Ordering::Relaxed),
        unit: "tables",
    });
    let r = replseed_catchup::verify::run(plan, &progress).await;
    reporter.finish();
    let r = r.context("verify failed")?;
    // The report goes to stdout (with --json: the JSON line alone).
    for d in &r.differences {
        say!(a.json, "DIFFERENCE {d}");
    }
    if a.json {
        print_json(serde_json::to_value(&r)?);
    }
    say!(
        a.json,
        "compared {} databases, {} tables ({} rows), {} objects: {}",
        r.databases.len(),
        r.tables,
        r.rows,
        r.objects,
        r.method
    );
    if r.differences.is_empty() {
        say!(a.json, "identical");
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Failure {
            code: 4,
            message: format!(
                "{} difference(s) between master and replica (listed above)",
                r.differences.len()
            ),
        }
        .into())
    }
}
