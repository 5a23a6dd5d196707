//! Point-in-time copies (`--until GTID`, `--until-time T`): a loaded target
//! is brought from its snapshot's GTID to the point through the stage's
//! binlog archive, served by the embedded `serve`, with `START SLAVE UNTIL
//! master_gtid_pos=<point>`, and left there: replication stopped and `RESET
//! SLAVE ALL` (pointed at nothing, so a `START SLAVE` has nothing to run
//! from), `replseed.load_runs` status `until` (a later `catchup` refuses to
//! move it on).
//!
//! The master is not needed: the point is resolved in the archive, whose
//! GTID events carry the master's commit timestamps. For a time T, the
//! point is the archive's state after every transaction up to the first
//! one stamped after T (whole segments whose last transaction is at or
//! before T are taken without reading them).

use std::time::{Duration, UNIX_EPOCH};

use mysql_async::Conn;
use replseed_binlog::event::types;
use replseed_binlog::GtidState;
use replseed_db::{exec, first, text, Server};
use replseed_stage::archive::SegmentManifest;
use replseed_stage::{Manifest, Stage};
use tracing::info;

use crate::{archive, filters, CatchupError, CatchupPlan};

/// The run-record status of a point-in-time copy.
pub const STATUS: &str = "until";

/// A point asked for on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Point {
    /// A GTID position (one or more domains).
    Gtid(GtidState),
    /// The master's time, seconds since the epoch (UTC).
    Time(u64),
}

impl Point {
    /// From `--until` / `--until-time` (at most one given); `Err` names the
    /// flag and what is wrong.
    pub fn from_flags(gtid: Option<&str>, time: Option<&str>) -> Result<Option<Point>, String> {
        match (gtid, time) {
            (Some(_), Some(_)) => Err("give --until or --until-time, not both".into()),
            (Some(g), None) => {
                let s = GtidState::parse(g).map_err(|e| format!("--until '{g}': {e}"))?;
                if s.is_empty() {
                    return Err(format!(
                        "--until '{g}': no GTID (give domain-server-seq, e.g. 0-1-100)"
                    ));
                }
                Ok(Some(Point::Gtid(s)))
            }
            (None, Some(t)) => parse_time(t)
                .map(|t| Some(Point::Time(t)))
                .map_err(|e| format!("--until-time '{t}': {e}")),
            (None, None) => Ok(None),
        }
    }
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Point::Gtid(g) => write!(f, "GTID '{g}'"),
            Point::Time(t) => write!(f, "time {}", rfc3339(*t)),
        }
    }
}

/// `2026-12-07 16:30:00` or RFC 3339 (`2026-12-07T16:30:00Z`, an offset,
/// fractions of a second ignored), UTC unless an offset says otherwise.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let bad = |e: &dyn std::fmt::Display| {
        format!("{e}; give UTC as 'YYYY-MM-DD HH:MM:SS' or RFC 3339 (2026-12-07T16:30:00Z)")
    };
    let s = s.trim();
    // An explicit offset (`+02:00`, `-01:00` after the time): humantime
    // takes UTC only, so it is shifted here.
    let tail = s
        .len()
        .checked_sub(6)
        .filter(|i| *i >= 19)
        .and_then(|i| s.get(i..));
    let (base, offset) = match tail {
        Some(o) if (o.starts_with('+') || o.starts_with('-')) && o.as_bytes()[3] == b':' => {
            let num = |r: std::ops::Range<usize>| o.get(r).and_then(|v| v.parse::<i64>().ok());
            let (Some(h), Some(m)) = (num(1..3), num(4..6)) else {
                return Err(bad(&format!("bad offset `{o}`")));
            };
            let secs = h * 3600 + m * 60;
            (
                &s[..s.len() - 6],
                if o.starts_with('-') { -secs } else { secs },
            )
        }
        _ => (s, 0),
    };
    let t = humantime::parse_rfc3339_weak(base).map_err(|e| bad(&e))?;
    let t = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| bad(&"before 1970"))?
        .as_secs() as i64;
    Ok((t - offset).max(0) as u64)
}

/// Seconds since the epoch as RFC 3339 (UTC).
pub fn rfc3339(t: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string()
}

/// What the stage can reach: from its oldest snapshot the archive covers
/// to the archive's head.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Window {
    /// The oldest snapshot the archive reaches.
    pub from_snapshot: String,
    /// Its GTID.
    pub from_gtid: String,
    /// When it was finished (replseed's clock).
    pub from_time: String,
    /// The archive's last GTID state.
    pub to_gtid: String,
    /// The master's timestamp of the archive's last transaction.
    pub to_time: String,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "from snapshot {} (GTID '{}', finished {}) to the archive's head (GTID '{}', last transaction at {})",
            self.from_snapshot, self.from_gtid, self.from_time, self.to_gtid, self.to_time
        )
    }
}

/// The snapshots and archive segments of a stage, as point-in-time copies
/// see them.
pub struct Holdings {
    /// Published snapshots.
    pub snapshots: Vec<Manifest>,
    /// The archive, checked (signatures, links).
    pub segments: Vec<SegmentManifest>,
}

fn state(s: &str) -> GtidState {
    GtidState::parse(s).unwrap_or_default()
}

fn finished_secs(m: &Manifest) -> Option<u64> {
    parse_time(&m.finished_at).ok()
}

impl Holdings {
    /// Reads the stage's snapshots and its archive.
    pub async fn read(stage: &Stage) -> Result<Holdings, CatchupError> {
        let setup = |e: replseed_stage::StageError| CatchupError::Setup {
            server: stage.url().to_string(),
            detail: format!("reading the stage: {e}"),
        };
        let snapshots = stage
            .list()
            .await
            .map_err(setup)?
            .into_iter()
            .filter_map(|e| e.manifest)
            .collect();
        let segments = stage.segment_chain().await.map_err(setup)?;
        Ok(Holdings {
            snapshots,
            segments,
        })
    }

    /// Whether the archive reaches from snapshot `m`: it starts at or before
    /// its GTID and ends at or after it.
    fn reaches(&self, m: &Manifest) -> bool {
        let (Some(first), Some(last)) = (self.segments.first(), self.segments.last()) else {
            return false;
        };
        let g = state(&m.position.gtid);
        g.covers(&state(&first.start_state)) && state(&last.end_state).covers(&g)
    }

    /// The window, or why there is none.
    pub fn window(&self) -> Result<Window, String> {
        let Some(last) = self.segments.last() else {
            return Err("the stage has no binlog archive (`replseed archive` keeps one)".into());
        };
        let oldest = self
            .snapshots
            .iter()
            .filter(|m| self.reaches(m))
            .min_by(|a, b| a.finished_at.cmp(&b.finished_at));
        let Some(oldest) = oldest else {
            return Err(format!(
                "no snapshot is within the binlog archive ('{}' to '{}')",
                self.segments[0].start_state, last.end_state
            ));
        };
        Ok(Window {
            from_snapshot: oldest.snapshot.clone(),
            from_gtid: oldest.position.gtid.clone(),
            from_time: oldest.finished_at.clone(),
            to_gtid: last.end_state.clone(),
            to_time: rfc3339(u64::from(last.last_event_time)),
        })
    }

    fn out_of_range(&self, point: &Point, why: &str) -> CatchupError {
        let window = match self.window() {
            Ok(w) => format!("the stage reaches {w}"),
            Err(e) => e,
        };
        CatchupError::OutOfRange {
            point: point.to_string(),
            detail: format!("{why}; {window}"),
        }
    }

    /// The exact GTID state of the master at `point`, from the archive.
    pub async fn locate(&self, stage: &Stage, point: &Point) -> Result<GtidState, CatchupError> {
        let (Some(first), Some(last)) = (self.segments.first(), self.segments.last()) else {
            return Err(self.out_of_range(point, "there is no binlog archive"));
        };
        let (start, end) = (state(&first.start_state), state(&last.end_state));
        match point {
            Point::Gtid(g) => {
                if !end.covers(g) {
                    return Err(self.out_of_range(point, "it is past the archive's head"));
                }
                if !g.covers(&start) {
                    return Err(self.out_of_range(point, "it is before the archive's start"));
                }
            }
            Point::Time(t) => {
                if *t > u64::from(last.last_event_time) {
                    return Err(self.out_of_range(
                        point,
                        "it is after the archive's last transaction (run `replseed archive` to bring the archive up to it)",
                    ));
                }
            }
        }
        let mut at = start;
        'segments: for seg in &self.segments {
            let whole = match point {
                Point::Gtid(g) => {
                    if at.covers(g) {
                        break;
                    }
                    g.covers(&state(&seg.end_state))
                }
                Point::Time(t) => u64::from(seg.last_event_time) <= *t,
            };
            if whole {
                at = state(&seg.end_state);
                continue;
            }
            let raw = replseed_binlog::segment::read_verified(stage, seg)
                .await
                .map_err(|e| CatchupError::Setup {
                    server: stage.url().to_string(),
                    detail: format!("reading the binlog archive: {e}"),
                })?;
            let events = replseed_binlog::serve::events(&raw, &mut false).map_err(|e| {
                CatchupError::Setup {
                    server: stage.url().to_string(),
                    detail: format!("{}: {e}", replseed_stage::archive::segment_path(seg.seq)),
                }
            })?;
            for e in events.iter().filter(|e| e.kind() == types::GTID) {
                let Ok((gtid, _)) = e.gtid() else { continue };
                match point {
                    Point::Gtid(g) if at.covers(g) => break 'segments,
                    Point::Time(t) if u64::from(e.timestamp()) > *t => break 'segments,
                    _ => at.apply(gtid),
                }
            }
        }
        if let Point::Gtid(g) = point {
            for want in g.iter() {
                if at.get(want.domain).map(|h| h.seq) != Some(want.seq) {
                    return Err(
                        self.out_of_range(point, &format!("the archive has no transaction {want}"))
                    );
                }
            }
        }
        Ok(at)
    }

    /// Whether snapshot `m` can be the start of a copy at `at` (the point
    /// `point` resolved): at or before it, and the archive reaches from it.
    pub fn usable(&self, m: &Manifest, point: &Point, at: &GtidState) -> Result<(), String> {
        if !self.reaches(m) {
            return Err(format!(
                "snapshot {} (GTID '{}') is not within the binlog archive",
                m.snapshot, m.position.gtid
            ));
        }
        let after = !at.covers(&state(&m.position.gtid))
            || matches!(point, Point::Time(t) if finished_secs(m).is_none_or(|f| f > *t));
        if after {
            return Err(format!(
                "snapshot {} (GTID '{}', finished {}) is after {point} (GTID '{at}'); give an older snapshot",
                m.snapshot, m.position.gtid, m.finished_at
            ));
        }
        Ok(())
    }

    /// The newest snapshot a copy at `at` can start from.
    pub fn pick(&self, point: &Point, at: &GtidState) -> Result<&Manifest, CatchupError> {
        self.snapshots
            .iter()
            .filter(|m| self.usable(m, point, at).is_ok())
            .max_by(|a, b| a.finished_at.cmp(&b.finished_at))
            .ok_or_else(|| self.out_of_range(point, "no snapshot is at or before it"))
    }

    /// `Err(OutOfRange)` when `m` cannot start a copy at `at`.
    pub fn check(&self, m: &Manifest, point: &Point, at: &GtidState) -> Result<(), CatchupError> {
        self.usable(m, point, at)
            .map_err(|why| self.out_of_range(point, &why))
    }
}

/// The outcome of a point-in-time copy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UntilReport {
    /// Target `host:port`.
    pub target: String,
    /// The snapshot it started from.
    pub snapshot: String,
    /// The point as asked.
    pub point: String,
    /// The GTID state it stopped at (`gtid_slave_pos`).
    pub gtid_reached: String,
    /// Seconds.
    pub elapsed_s: f64,
}

/// Brings the target, loaded with `plan.manifest`, to `at` through the
/// archive and leaves it there (see the module).
pub async fn run(
    plan: &CatchupPlan,
    point: &Point,
    at: &GtidState,
    master_server_id: u32,
) -> Result<UntilReport, CatchupError> {
    let started = std::time::Instant::now();
    let (tgt, m) = (&plan.target, &plan.manifest);
    let Some(route) = &plan.archive else {
        return Err(CatchupError::Setup {
            server: tgt.name(),
            detail: "a point-in-time copy needs the stage's binlog archive".into(),
        });
    };
    let mut replica = tgt.connect(&["SET SESSION sql_log_bin=0"]).await?;
    let own_id: u32 = text(&first(&mut replica, tgt, "SELECT @@server_id", ()).await?[0])
        .parse()
        .unwrap_or(0);
    let status = crate::load_status(&mut replica, tgt, &m.snapshot).await?;
    let resume = match status.as_deref() {
        Some("done") => false,
        Some(STATUS) => {
            let pos = slave_pos(&mut replica, tgt).await?;
            if !at.covers(&pos) {
                return Err(CatchupError::Setup {
                    server: tgt.name(),
                    detail: format!(
                        "it is a point-in-time copy at GTID '{pos}', past {point} (GTID '{at}'); load the snapshot again for an earlier point"
                    ),
                });
            }
            true
        }
        Some(other) => {
            return Err(CatchupError::NotLoaded {
                server: tgt.name(),
                snapshot: m.snapshot.clone(),
                detail: format!("the load is in state `{other}`, a point-in-time copy starts from a completed load (`done`)"),
            })
        }
        None => {
            return Err(CatchupError::NotLoaded {
                server: tgt.name(),
                snapshot: m.snapshot.clone(),
                detail: "no load of it is recorded in replseed.load_runs".into(),
            })
        }
    };
    let filter = filters::wild_do_table(m).map_err(|detail| CatchupError::Setup {
        server: tgt.name(),
        detail,
    })?;
    let done = resume && slave_pos(&mut replica, tgt).await? == *at;
    if !done {
        archive::replay(
            &mut replica,
            plan,
            route,
            at,
            (own_id, master_server_id),
            resume,
            filter.as_deref(),
            true,
        )
        .await?;
    }
    let reached = slave_pos(&mut replica, tgt).await?;
    if reached != *at {
        return Err(CatchupError::Replication {
            server: tgt.name(),
            detail: format!(
                "it stopped at GTID '{reached}', not at {point} (GTID '{at}'); load the snapshot again"
            ),
        });
    }
    // Pointed at nothing: a START SLAVE has no master to run past the point from.
    exec(&mut replica, tgt, "RESET SLAVE ALL", ()).await?;
    info!(target = %tgt.addr(), gtid = %reached, "point-in-time copy: replication stopped there and not configured");
    let _ = replica.disconnect().await;
    Ok(UntilReport {
        target: tgt.addr(),
        snapshot: m.snapshot.clone(),
        point: point.to_string(),
        gtid_reached: reached.to_string(),
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

async fn slave_pos(replica: &mut Conn, tgt: &Server) -> Result<GtidState, CatchupError> {
    let pos = text(&first(replica, tgt, "SELECT @@GLOBAL.gtid_slave_pos", ()).await?[0]);
    Ok(state(&pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_utc_in_both_forms() {
        let t = 1_796_145_000; // 2026-12-01T17:10:00Z
        assert_eq!(parse_time("2026-12-01 17:10:00"), Ok(t));
        assert_eq!(parse_time("2026-12-01T17:10:00Z"), Ok(t));
        assert_eq!(parse_time("2026-12-01T17:10:00.75Z"), Ok(t));
        assert_eq!(parse_time("2026-12-01T19:10:00+02:00"), Ok(t));
        assert_eq!(parse_time("2026-12-01T16:10:00-01:00"), Ok(t));
        assert_eq!(rfc3339(t), "2026-12-01T17:10:00Z");
        assert!(parse_time("yesterday").unwrap_err().contains("YYYY-MM-DD"));
        assert!(Point::from_flags(Some("0-1-5"), Some("2026-12-01 17:10:00")).is_err());
        assert!(Point::from_flags(Some(""), None).is_err());
        assert_eq!(Point::from_flags(None, None), Ok(None));
    }
}
