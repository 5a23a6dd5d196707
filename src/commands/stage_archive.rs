//! What `snapshots list|show|prune` say about the stage's binlog archive
//! (`replseed archive`): the GTID range it holds, whether a snapshot can be
//! caught up from it, and which segments no kept snapshot needs.
//!
//! Whether the master itself still has the binlogs is not known here (that
//! takes a connection to it; `catchup` checks).

use replseed_binlog::GtidState;
use replseed_stage::archive::{chain_breaks, SegmentManifest};
use replseed_stage::Stage;
use serde_json::{json, Value};

/// The archive's segments, as `snapshots` commands see them.
pub struct ArchiveView {
    segments: Vec<SegmentManifest>,
    breaks: Vec<String>,
    /// The first segment's start state, when it parses.
    start: Option<Result<GtidState, String>>,
}

impl ArchiveView {
    /// Reads every segment manifest of the stage.
    pub async fn read(stage: &Stage) -> anyhow::Result<ArchiveView> {
        Ok(ArchiveView::new(stage.segments().await?))
    }

    /// Reads the archive; when that fails, a view that says so (no snapshot
    /// is then covered) after a warning on stderr.
    pub async fn read_or_warn(stage: &Stage) -> ArchiveView {
        match stage.segments().await {
            Ok(s) => ArchiveView::new(s),
            Err(e) => {
                let e = format!("cannot read the binlog archive: {e}");
                eprintln!("warning: {e}");
                ArchiveView {
                    segments: Vec::new(),
                    breaks: Vec::new(),
                    start: Some(Err(e)),
                }
            }
        }
    }

    /// The view of `segments` (by sequence number).
    pub fn new(segments: Vec<SegmentManifest>) -> ArchiveView {
        let breaks = chain_breaks(&segments);
        let start = segments.first().map(|s| {
            GtidState::parse(&s.start_state).map_err(|e| format!("segment {}: {e}", s.seq))
        });
        ArchiveView {
            segments,
            breaks,
            start,
        }
    }

    /// Whether a snapshot at `gtid` can be caught up from the archive: its
    /// chain is unbroken and starts at or before `gtid`. `Err` says why not.
    pub fn verdict(&self, gtid: &str) -> Result<(), String> {
        let Some(start) = &self.start else {
            return Err("the stage has no binlog archive".into());
        };
        let start = start.as_ref().map_err(Clone::clone)?;
        if !self.breaks.is_empty() {
            return Err(format!(
                "the archive's chain is broken: {}",
                self.breaks.join("; ")
            ));
        }
        let at = GtidState::parse(gtid).map_err(|e| format!("the snapshot's gtid: {e}"))?;
        if at.covers(start) {
            Ok(())
        } else {
            Err(format!(
                "the archive starts at '{start}', after the snapshot's gtid '{gtid}'"
            ))
        }
    }

    /// Whether a snapshot at `gtid` can be caught up from the archive.
    pub fn covers(&self, gtid: &str) -> bool {
        self.verdict(gtid).is_ok()
    }

    /// The range the archive holds, for `--json` (`null` without segments).
    pub fn range_json(&self) -> Value {
        let (Some(first), Some(last)) = (self.segments.first(), self.segments.last()) else {
            return match &self.start {
                Some(Err(e)) => json!({ "error": e }),
                _ => Value::Null,
            };
        };
        json!({
            "start_state": first.start_state,
            "end_state": last.end_state,
            "segments": self.segments.len(),
            "first_seq": first.seq,
            "last_seq": last.seq,
            "transactions": self.segments.iter().map(|s| s.transactions).sum::<u64>(),
            "bytes_raw": self.segments.iter().map(|s| s.bytes_raw).sum::<u64>(),
            "bytes_stored": self.segments.iter().map(|s| s.bytes_stored).sum::<u64>(),
            "chain_breaks": self.breaks,
        })
    }

    /// The range the archive holds, in one line.
    pub fn range_line(&self) -> String {
        let (Some(first), Some(last)) = (self.segments.first(), self.segments.last()) else {
            return match &self.start {
                Some(Err(_)) => "unreadable (see the warning above)".into(),
                _ => "none".into(),
            };
        };
        format!(
            "'{}' .. '{}' in {} segments ({}..{}), {} bytes stored{}",
            first.start_state,
            last.end_state,
            self.segments.len(),
            first.seq,
            last.seq,
            self.segments.iter().map(|s| s.bytes_stored).sum::<u64>(),
            if self.breaks.is_empty() {
                String::new()
            } else {
                format!("; CHAIN BROKEN: {}", self.breaks.join("; "))
            }
        )
    }

    /// The leading segments no snapshot at one of `kept` (GTID states)
    /// needs: lowest sequence number first, while a segment's end state is
    /// covered by every one of them (it lies entirely before the oldest).
    /// The chain stays contiguous, and the last segment always stays (the
    /// archiver resumes from it and never reuses its number). Nothing when
    /// `kept` is empty or one of them does not parse.
    pub fn prunable(&self, kept: &[&str]) -> &[SegmentManifest] {
        let Ok(kept) = kept
            .iter()
            .map(|g| GtidState::parse(g))
            .collect::<Result<Vec<_>, _>>()
        else {
            return &[];
        };
        if kept.is_empty() {
            return &[];
        }
        let before_last = &self.segments[..self.segments.len().saturating_sub(1)];
        let n = before_last
            .iter()
            .take_while(|s| {
                GtidState::parse(&s.end_state).is_ok_and(|end| kept.iter().all(|k| k.covers(&end)))
            })
            .count();
        &self.segments[..n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seq: u64, start: &str, end: &str) -> SegmentManifest {
        SegmentManifest {
            format: replseed_stage::archive::SEGMENT_FORMAT.into(),
            format_version: 1,
            seq,
            start_state: start.into(),
            end_state: end.into(),
            prev_seq: (seq > 1).then(|| seq - 1),
            prev_end_state: (seq > 1).then(|| start.to_string()),
            domains: Vec::new(),
            server_ids: vec![1],
            master_server_id: 1,
            server_version: "11.4".into(),
            master_file: "b.000001".into(),
            first_pos: 0,
            last_pos: 0,
            checksum_alg: "CRC32".into(),
            events: 1,
            transactions: 1,
            bytes_raw: 10,
            bytes_stored: 5,
            sha256_raw: String::new(),
            sha256_stored: String::new(),
            last_event_time: 0,
            created_at: String::new(),
            archiver: String::new(),
            source: String::new(),
            prev_digest: None,
            signature: None,
        }
    }

    fn prunable(v: &ArchiveView, kept: &[&str]) -> Vec<u64> {
        v.prunable(kept).iter().map(|s| s.seq).collect()
    }

    #[test]
    fn verdicts_and_prunable_segments() {
        let v = ArchiveView::new(vec![
            seg(2, "0-1-10", "0-1-20"),
            seg(3, "0-1-20", "0-1-30,1-1-5"),
            seg(4, "0-1-30,1-1-5", "0-1-40,1-1-5"),
        ]);
        assert!(v.covers("0-1-10"));
        assert!(v.covers("0-1-25,1-1-1"));
        assert!(!v.covers("0-1-9"));
        assert!(!v.covers(""));
        assert_eq!(v.range_json()["bytes_stored"], 15);
        // Entirely before the oldest kept snapshot only.
        assert_eq!(prunable(&v, &["0-1-20"]), vec![2]);
        assert_eq!(prunable(&v, &["0-1-30,1-1-5", "0-1-20"]), vec![2]);
        assert_eq!(prunable(&v, &["0-1-30,1-1-5"]), vec![2, 3]);
        // A domain the snapshot lacks is not covered.
        assert_eq!(prunable(&v, &["0-1-30"]), vec![2]);
        // The last segment stays; nothing without a kept snapshot.
        assert_eq!(prunable(&v, &["0-1-99,1-1-99"]), vec![2, 3]);
        assert!(v.prunable(&[]).is_empty());
        assert!(v.prunable(&["bad"]).is_empty());

        let broken = ArchiveView::new(vec![seg(1, "0-1-1", "0-1-5"), seg(3, "0-1-9", "0-1-12")]);
        assert!(broken.verdict("0-1-3").unwrap_err().contains("broken"));
        assert!(!ArchiveView::new(Vec::new()).covers("0-1-3"));
        assert_eq!(ArchiveView::new(Vec::new()).range_json(), Value::Null);
    }
}
