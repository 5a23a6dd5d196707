//! `replseed archive`: follows a master as a replica would and stores its
//! binary log in the stage, in segments (`replseed_stage::archive`).
//!
//! The archiver registers with its own `server_id` and asks for a MariaDB
//! GTID dump (`@mariadb_slave_capability=4`, `@slave_connect_state`, see
//! `docs/design/binlog-server.md` and shared/docs/binlog-notes.md) from where
//! the archive ends, or from the oldest published snapshot's GTID when it is
//! empty. It checks every event's CRC32, keeps whole transactions only, and
//! publishes a segment when it reaches its size or age, when the master
//! moves to another binlog file, and when it stops. A segment's manifest is
//! the commit point: killed at any moment, the archiver restarts from the
//! last manifest's end state, so the archive has no gap and no duplicate.
//! Lost connections and master restarts are retried with backoff.

use std::time::{Duration, Instant};

use futures::StreamExt;
use mysql_async::binlog::BinlogVersion;
use mysql_async::prelude::Queryable;
use mysql_async::BinlogStreamRequest;
use replseed_db::{DbError, Server};
use replseed_stage::archive::SegmentManifest;
use replseed_stage::{Stage, StageError};
use tracing::{debug, info, warn};

use crate::event::{types, RawEvent, FL_STANDALONE};
use crate::gtid::{Gtid, GtidState};
use crate::segment::SegmentBuilder;

/// XA_PREPARE_LOG_EVENT: ends the group of a prepared XA transaction.
const XA_PREPARE: u8 = 38;

/// Everything that can stop the archiver.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Talking to the master failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The stage failed.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// The master no longer has the binlog from where the archive ends.
    #[error("{server}: the master no longer has the binary log from '{state}', where the archive ends ({detail}); the archive cannot continue without a gap: take a new snapshot, and archive from it into a new stage")]
    Purged {
        /// Master name.
        server: String,
        /// The GTID state asked for.
        state: String,
        /// The master's words.
        detail: String,
    },
    /// The stream broke a rule (bad CRC, a transaction out of order).
    #[error("{server}: {detail}")]
    Stream {
        /// Master name.
        server: String,
        /// What was wrong.
        detail: String,
        /// Whether reconnecting can cure it.
        transient: bool,
    },
    /// The archive cannot be continued as it is.
    #[error("archive in {url}: {detail}")]
    Archive {
        /// Stage URL.
        url: String,
        /// What is wrong and what to do.
        detail: String,
    },
    /// Interrupted before the goal (`--until-current`).
    #[error("interrupted; what was archived is kept, run the same command again to go on")]
    Interrupted,
}

impl ArchiveError {
    fn is_transient(&self) -> bool {
        match self {
            ArchiveError::Db(e) => e.transient,
            ArchiveError::Stream { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// What to archive, and how.
#[derive(Debug, Clone)]
pub struct ArchivePlan {
    /// The master.
    pub source: Server,
    /// The stage the archive lives in.
    pub stage: Stage,
    /// The archiver's `server_id` on the master (unique in the topology).
    pub server_id: u32,
    /// Stop once the master's `gtid_binlog_pos` at the start is archived.
    pub until_current: bool,
    /// Publish a segment at this many bytes.
    pub segment_bytes: usize,
    /// ... or when its first transaction is this old.
    pub segment_age: Duration,
    /// zstd level of the segments.
    pub zstd_level: i32,
}

/// What an archiver run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ArchiveReport {
    /// Where the archive started this run.
    pub from: String,
    /// Where it ended.
    pub to: String,
    /// Segments published this run.
    pub segments: u64,
    /// Transactions archived this run.
    pub transactions: u64,
    /// Events received (headers and heartbeats included).
    pub events: u64,
    /// Bytes of binlog archived (uncompressed).
    pub bytes_raw: u64,
    /// Bytes stored.
    pub bytes_stored: u64,
    /// Reconnections after a fault.
    pub reconnects: u64,
    /// Seconds.
    pub elapsed_s: f64,
}

/// Whether `e` ends the event group that a GTID event with `flags` began.
pub fn ends_group(e: &RawEvent, flags: u8) -> bool {
    match e.kind() {
        types::XID | XA_PREPARE => true,
        types::QUERY_COMPRESSED => flags & FL_STANDALONE != 0,
        types::QUERY => {
            if flags & FL_STANDALONE != 0 {
                return true;
            }
            let t = e.query_text().unwrap_or_default();
            let head = String::from_utf8_lossy(&t[..t.len().min(12)]).to_ascii_uppercase();
            ["COMMIT", "ROLLBACK", "XA COMMIT", "XA ROLLBACK"]
                .iter()
                .any(|k| head.starts_with(k))
        }
        _ => false,
    }
}

/// The archive's state in the stage: its last segment and where it ends.
async fn resume_point(
    plan: &ArchivePlan,
) -> Result<(Option<SegmentManifest>, GtidState), ArchiveError> {
    let stage = &plan.stage;
    // Signatures and links checked: the archive is continued only from a
    // segment it can vouch for.
    let segments = stage.segment_chain().await?;
    if let Some(last) = segments.last() {
        if last.signature.is_some() && !stage.has_key() {
            return Err(ArchiveError::Archive {
                url: stage.url().to_string(),
                detail: format!("the archive is signed (segment {} is) and no stage key was given: set REPLSEED_STAGE_KEY or --stage-key-file to the key it was written with", last.seq),
            });
        }
        let state = GtidState::parse(&last.end_state).map_err(|e| ArchiveError::Archive {
            url: stage.url().to_string(),
            detail: format!("segment {}: {e}", last.seq),
        })?;
        return Ok((Some(last.clone()), state));
    }
    // Empty: from the oldest published snapshot.
    let mut oldest: Option<replseed_stage::Manifest> = None;
    for e in stage.list().await? {
        if let Some(m) = e.manifest {
            if oldest.as_ref().is_none_or(|o| {
                (m.finished_at.as_str(), m.snapshot.as_str())
                    < (o.finished_at.as_str(), o.snapshot.as_str())
            }) {
                oldest = Some(m);
            }
        }
    }
    let Some(m) = oldest else {
        return Err(ArchiveError::Archive {
            url: stage.url().to_string(),
            detail: "no segment and no published snapshot: the archive starts at a snapshot's position, so run `replseed extract` into this stage first".into(),
        });
    };
    let state = GtidState::parse(&m.position.gtid).map_err(|e| ArchiveError::Archive {
        url: stage.url().to_string(),
        detail: format!("snapshot {}: {e}", m.snapshot),
    })?;
    info!(snapshot = %m.snapshot, gtid = %state, "the archive is empty: starting at the oldest snapshot's position");
    Ok((None, state))
}

/// The stream's position and the segment being assembled.
struct Run {
    plan: ArchivePlan,
    archiver: String,
    last: Option<SegmentManifest>,
    /// Everything up to here is archived or in `open`.
    state: GtidState,
    open: Option<SegmentBuilder>,
    /// A segment taken out of `open` whose storing has not finished. A
    /// SIGTERM drops the stream (and a publish under way) at any await: the
    /// segment waits here for the publish that follows, instead of being
    /// lost with the dropped future.
    unpublished: Option<(std::sync::Arc<Vec<u8>>, SegmentManifest)>,
    report: ArchiveReport,
    goal: Option<GtidState>,
    last_event_time: u32,
}

impl Run {
    async fn publish(&mut self) -> Result<(), ArchiveError> {
        if self.unpublished.is_some() {
            self.store_unpublished().await?;
        }
        let Some(seg) = self.open.take() else {
            return Ok(());
        };
        if seg.is_empty() {
            return Ok(());
        }
        let seq = self.last.as_ref().map(|l| l.seq + 1).unwrap_or(1);
        let (raw, m) = seg.finish(
            seq,
            self.last.as_ref(),
            &self.plan.source.addr(),
            &self.archiver,
        );
        self.unpublished = Some((std::sync::Arc::new(raw), m));
        self.store_unpublished().await
    }

    /// Compresses and stores the segment waiting in `unpublished`.
    async fn store_unpublished(&mut self) -> Result<(), ArchiveError> {
        let (raw, mut m) = self.unpublished.clone().expect("a segment to store");
        let seq = m.seq;
        let level = self.plan.zstd_level;
        let input = raw.clone();
        let stored = tokio::task::spawn_blocking(move || zstd::bulk::compress(&input, level))
            .await
            .expect("compression task");
        let stored = stored.map_err(|e| ArchiveError::Archive {
            url: self.plan.stage.url().to_string(),
            detail: format!("compressing segment {seq}: {e}"),
        })?;
        self.plan.stage.put_segment(&raw, stored, &mut m).await?;
        self.unpublished = None;
        info!(
            seq,
            transactions = m.transactions,
            end = %m.end_state,
            mib = format!("{:.1}", m.bytes_raw as f64 / 1048576.0),
            "segment published"
        );
        self.report.segments += 1;
        self.report.transactions += m.transactions;
        self.report.bytes_raw += m.bytes_raw;
        self.report.bytes_stored += m.bytes_stored;
        self.last = Some(m);
        Ok(())
    }

    fn done(&self) -> bool {
        self.goal.as_ref().is_some_and(|g| self.state.covers(g))
    }
}

/// Turns a received event into its bytes as the master sent them.
fn raw_event(ev: &mysql_async::binlog::events::Event) -> Result<RawEvent, String> {
    let mut buf = Vec::new();
    ev.write(BinlogVersion::Version4, &mut buf)
        .map_err(|e| e.to_string())?;
    let checksum = ev.checksum();
    if let Some(c) = checksum {
        // `write` computes a new checksum: put back the one that came, so
        // that a corrupted event is caught below.
        let n = buf.len();
        buf[n - 4..].copy_from_slice(&c);
    }
    RawEvent::new(buf, checksum.is_some()).map_err(|e| e.to_string())
}

/// Runs the archiver until the goal (`--until-current`), or for ever.
/// `cancel` resolves on SIGINT/SIGTERM: the open segment is published, then
/// it returns.
pub async fn run(
    plan: ArchivePlan,
    cancel: impl std::future::Future<Output = ()> + Send,
) -> Result<ArchiveReport, ArchiveError> {
    let started = Instant::now();
    plan.stage.check_access().await?;
    let (last, state) = resume_point(&plan).await?;
    let goal = if plan.until_current {
        let mut c = plan.source.connect(&[]).await?;
        let r =
            replseed_db::first(&mut c, &plan.source, "SELECT @@GLOBAL.gtid_binlog_pos", ()).await?;
        let _ = c.disconnect().await;
        let g = GtidState::parse(&replseed_db::text(&r[0])).map_err(|e| ArchiveError::Stream {
            server: plan.source.name(),
            detail: e,
            transient: false,
        })?;
        Some(g)
    } else {
        None
    };
    let mut run = Run {
        archiver: replseed_stage::lease::holder_id(),
        report: ArchiveReport {
            from: state.to_string(),
            ..Default::default()
        },
        last,
        state,
        open: None,
        unpublished: None,
        goal,
        last_event_time: 0,
        plan,
    };
    if run.done() {
        info!(at = %run.state, "the archive already holds the master's binlog up to its current position");
    } else {
        let mut cancel = std::pin::pin!(cancel);
        let mut waits = replseed_db::retry::backoff();
        loop {
            let r = tokio::select! {
                r = follow(&mut run) => r,
                _ = &mut cancel => {
                    // Whole transactions only are in the open segment: keep them.
                    run.publish().await?;
                    if run.goal.is_some() && !run.done() {
                        return Err(ArchiveError::Interrupted);
                    }
                    break;
                }
            };
            match r {
                Ok(()) => break,
                Err(e) if e.is_transient() => {
                    // A daemon waits for its master for ever; a cron job gives up.
                    let wait = match waits.next() {
                        Some(w) => w,
                        None if run.goal.is_none() => Duration::from_secs(10),
                        None => {
                            run.publish().await?;
                            return Err(e);
                        }
                    };
                    run.report.reconnects += 1;
                    warn!(source = %run.plan.source.addr(), "{e}; reconnecting in {:.1} s from '{}'", wait.as_secs_f64(), run.state);
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    run.publish().await?;
                    return Err(e);
                }
            }
        }
    }
    run.report.to = run.state.to_string();
    run.report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(run.report)
}

/// One connection's worth of streaming: returns `Ok` at the goal, an error
/// when the stream breaks (the open segment keeps whole transactions).
async fn follow(run: &mut Run) -> Result<(), ArchiveError> {
    let server = run.plan.source.clone();
    let mut conn = server.connect(&[]).await?;
    // `run.state` is where the archive (published or open) ends.
    let connect_state = run.state.clone();
    for (sql, what) in [
        (
            "SET @mariadb_slave_capability=4",
            "asking for MariaDB GTID events",
        ),
        (
            "SET @slave_gtid_strict_mode=1",
            "asking for strict GTID order",
        ),
        // A heartbeat a second while the master is idle: segments are cut by
        // age, and a dead connection is noticed.
        (
            "SET @master_heartbeat_period=1000000000",
            "asking for heartbeats",
        ),
    ] {
        conn.query_drop(sql)
            .await
            .map_err(|e| server.err(what, &e))?;
    }
    conn.exec_drop("SET @slave_connect_state=?", (connect_state.to_string(),))
        .await
        .map_err(|e| server.err("setting @slave_connect_state", &e))?;
    let mut stream = conn
        .get_binlog_stream(BinlogStreamRequest::new(run.plan.server_id))
        .await
        .map_err(|e| server.err("requesting the binlog dump (needs REPLICATION SLAVE)", &e))?;
    info!(source = %server.addr(), from = %connect_state, "following the master's binary log");

    let mut file = String::new();
    let mut fde: Option<RawEvent> = None;
    // The group being received: its GTID, flags and events.
    let mut group: Option<(Gtid, u8, Vec<RawEvent>)> = None;
    let mut last_report = Instant::now();
    let mut since_report = 0u64;
    loop {
        let next = stream.next().await;
        let ev = match next {
            None => {
                return Err(ArchiveError::Stream {
                    server: server.name(),
                    detail: "the master ended the binlog stream".into(),
                    transient: true,
                })
            }
            Some(Err(e)) => {
                let err = server.err("reading the binlog stream", &e);
                if err.code == Some(1236) {
                    return Err(ArchiveError::Purged {
                        server: server.name(),
                        state: connect_state.to_string(),
                        detail: err.message,
                    });
                }
                return Err(err.into());
            }
            Some(Ok(ev)) => ev,
        };
        run.report.events += 1;
        since_report += 1;
        let raw = raw_event(&ev).map_err(|detail| ArchiveError::Stream {
            server: server.name(),
            detail,
            transient: true,
        })?;
        let kind = raw.kind();
        // The first (made-up) rotate is sent before the format description
        // and carries a checksum the driver has not stripped.
        if kind == types::ROTATE {
            let raw = if !raw.checksum_ok() || raw.body().len() < 8 {
                raw
            } else {
                match RawEvent::new(raw.bytes().to_vec(), true) {
                    Ok(r) if r.checksum_ok() && raw.is_artificial() => r,
                    _ => raw,
                }
            };
            let (next_file, _) = raw.rotate().map_err(|e| ArchiveError::Stream {
                server: server.name(),
                detail: e.to_string(),
                transient: true,
            })?;
            if next_file != file {
                // A segment holds the events of one master file.
                if run
                    .open
                    .as_ref()
                    .is_some_and(|s| s.master_file() != next_file)
                {
                    run.publish().await?;
                }
                file = next_file;
            }
            continue;
        }
        if !raw.checksum_ok() {
            return Err(ArchiveError::Stream {
                server: server.name(),
                detail: format!(
                    "event of type {kind} at {file}:{} failed its CRC32 check; reconnecting",
                    raw.log_pos()
                ),
                transient: true,
            });
        }
        match kind {
            types::FORMAT_DESCRIPTION => {
                if let (Some(open), Some(old)) = (&run.open, &fde) {
                    if !open.is_empty() && old.fde_identity() != raw.fde_identity() {
                        run.publish().await?;
                    }
                }
                fde = Some(raw);
                continue;
            }
            types::GTID => {
                let (gtid, flags) = raw.gtid().map_err(|e| ArchiveError::Stream {
                    server: server.name(),
                    detail: e.to_string(),
                    transient: true,
                })?;
                if group.is_some() {
                    debug!("a group without its end was followed by {gtid}; dropping it");
                }
                // The master sends what follows the archive's state, found by
                // GTID: only the state's own GTID again is a repeat (a lower
                // sequence number is legitimate with gtid_strict_mode=OFF).
                let current = &run.state;
                if current.get(gtid.domain) == Some(&gtid) {
                    return Err(ArchiveError::Stream {
                        server: server.name(),
                        detail: format!(
                            "the master sent {gtid}, which the archive has ('{current}')"
                        ),
                        transient: false,
                    });
                }
                group = Some((gtid, flags, vec![raw]));
                continue;
            }
            _ => {}
        }
        let Some((_, flags, events)) = group.as_mut() else {
            // Between groups: heartbeats, GTID lists, checkpoints, made-up
            // events. Not data.
            if kind == types::HEARTBEAT {
                if let Some(open) = &run.open {
                    if !open.is_empty() && open.age() >= run.plan.segment_age {
                        run.publish().await?;
                    }
                }
                if last_report.elapsed() >= Duration::from_secs(10) {
                    report_progress(run, &mut last_report, &mut since_report);
                }
            }
            continue;
        };
        events.push(raw);
        let last = events.last().expect("event just pushed");
        if !ends_group(last, *flags) {
            continue;
        }
        let (gtid, _, events) = group.take().expect("group");
        let Some(fd) = &fde else {
            return Err(ArchiveError::Stream {
                server: server.name(),
                detail: "a transaction arrived before any format description event".into(),
                transient: true,
            });
        };
        let start = run.state.clone();
        let seg = run
            .open
            .get_or_insert_with(|| SegmentBuilder::new(fd, start, fd.server_id(), &file));
        seg.push(gtid, &events);
        debug!(%gtid, "taken into the open segment");
        run.last_event_time = events[0].timestamp();
        run.state = seg.end().clone();
        if seg.len() >= run.plan.segment_bytes || seg.age() >= run.plan.segment_age {
            run.publish().await?;
        }
        if run.done() {
            run.publish().await?;
            return Ok(());
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            report_progress(run, &mut last_report, &mut since_report);
        }
    }
}

fn report_progress(run: &Run, last_report: &mut Instant, events: &mut u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let lag = now.saturating_sub(u64::from(run.last_event_time));
    info!(
        at = %run.state,
        lag_s = if run.last_event_time == 0 { 0 } else { lag },
        events_per_s = (*events as f64 / last_report.elapsed().as_secs_f64()) as u64,
        segments = run.report.segments,
        "archiving"
    );
    *last_report = Instant::now();
    *events = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::build;

    fn query(text: &str) -> RawEvent {
        let mut body = vec![0u8; 13];
        body[8] = 1; // db name length
        body.extend_from_slice(b"d\0");
        body.extend_from_slice(text.as_bytes());
        build(types::QUERY, 1, 0, &body, true)
    }

    /// A run on a local stage with one transaction in its open segment.
    fn run_with_one_transaction(dir: &std::path::Path) -> Run {
        let url = dir.display().to_string();
        Stage::create(&url).unwrap();
        // A format description: version, server version, timestamp,
        // header length, post-header lengths, then CRC32 (1) as algorithm.
        let mut body = vec![0u8; 57 + 40];
        body[0] = 4;
        body.push(1);
        let fde = build(types::FORMAT_DESCRIPTION, 1, 0, &body, true);
        let gtid = Gtid {
            domain: 0,
            server: 1,
            seq: 7,
        };
        let mut gtid_body = vec![0u8; 19];
        gtid_body[..8].copy_from_slice(&7u64.to_le_bytes());
        gtid_body[12] = FL_STANDALONE;
        let events = [
            build(types::GTID, 1, 0, &gtid_body, true),
            query("CREATE TABLE t (a INT)"),
        ];
        let mut seg = SegmentBuilder::new(&fde, GtidState::default(), 1, "mariadb-bin.000001");
        seg.push(gtid, &events);
        Run {
            plan: ArchivePlan {
                source: Server::parse("source", "mysql://u@127.0.0.1:1").unwrap(),
                stage: Stage::open(&url).unwrap(),
                server_id: 99,
                until_current: false,
                segment_bytes: 1 << 20,
                segment_age: Duration::from_secs(3600),
                zstd_level: 3,
            },
            archiver: "test".into(),
            last: None,
            state: seg.end().clone(),
            open: Some(seg),
            unpublished: None,
            report: ArchiveReport::default(),
            goal: None,
            last_event_time: 0,
        }
    }

    /// SIGTERM drops the stream's future, and with it a publish under way
    /// (the master rotated, say): the segment is published by the publish
    /// the shutdown runs next, not lost with the dropped future.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publish_cut_short_is_completed_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = run_with_one_transaction(dir.path());
        {
            let first = std::pin::pin!(run.publish());
            // Polled until its first wait (compression), then dropped.
            assert!(futures::poll!(first).is_pending());
        }
        run.publish().await.unwrap();
        let chain = run.plan.stage.segment_chain().await.unwrap();
        assert_eq!(chain.len(), 1, "the segment is published once");
        assert_eq!(chain[0].end_state, "0-1-7");
        assert!(run.open.is_none() && run.unpublished.is_none());
    }

    #[test]
    fn groups_end_at_commit_xid_or_a_standalone_statement() {
        assert!(ends_group(&build(types::XID, 1, 0, &[0; 8], true), 0));
        assert!(ends_group(&query("COMMIT"), 0));
        assert!(!ends_group(&query("BEGIN"), 0));
        assert!(!ends_group(&query("INSERT INTO t VALUES (1)"), 0));
        assert!(ends_group(&query("CREATE TABLE t (a INT)"), FL_STANDALONE));
        assert!(ends_group(&query("xa commit 'x'"), 0));
        assert!(!ends_group(&build(23, 1, 0, &[0; 20], true), 0));
    }
}
