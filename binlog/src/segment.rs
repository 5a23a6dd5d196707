//! One archive segment being assembled: a self-contained binlog file of
//! whole transactions, and the facts its manifest records.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use replseed_stage::archive::{
    digest, segment_path, DomainRange, SegmentManifest, SEGMENT_FORMAT, SEGMENT_VERSION,
};
use replseed_stage::{Stage, StageError};
use sha2::{Digest, Sha256};

use crate::event::{self, RawEvent, MAGIC};
use crate::gtid::{Gtid, GtidState};

/// A segment in memory: at most its size limit plus one transaction.
#[derive(Debug)]
pub struct SegmentBuilder {
    buf: Vec<u8>,
    checksummed: bool,
    start: GtidState,
    end: GtidState,
    domains: BTreeMap<u32, DomainRange>,
    server_ids: BTreeSet<u32>,
    master_server_id: u32,
    server_version: String,
    master_file: String,
    first_pos: Option<u64>,
    last_pos: u64,
    events: u64,
    transactions: u64,
    last_event_time: u32,
    opened: Instant,
}

impl SegmentBuilder {
    /// Starts a segment at `start` with the master's format description.
    pub fn new(fde: &RawEvent, start: GtidState, master_server_id: u32, master_file: &str) -> Self {
        let checksummed = fde.fde_checksum_alg().unwrap_or(0) == 1;
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(fde.bytes());
        buf.extend_from_slice(event::gtid_list(&start, master_server_id, checksummed).bytes());
        SegmentBuilder {
            buf,
            checksummed,
            end: start.clone(),
            start,
            domains: BTreeMap::new(),
            server_ids: BTreeSet::new(),
            master_server_id,
            server_version: fde.fde_server_version(),
            master_file: master_file.to_string(),
            first_pos: None,
            last_pos: 0,
            events: 2,
            transactions: 0,
            last_event_time: 0,
            opened: Instant::now(),
        }
    }

    /// Adds one whole transaction (its GTID event first).
    pub fn push(&mut self, gtid: Gtid, events: &[RawEvent]) {
        for e in events {
            if self.first_pos.is_none() {
                self.first_pos =
                    Some(u64::from(e.log_pos()).saturating_sub(e.bytes().len() as u64));
            }
            self.buf.extend_from_slice(e.bytes());
            self.last_pos = u64::from(e.log_pos());
        }
        self.events += events.len() as u64;
        self.transactions += 1;
        self.last_event_time = events.first().map(RawEvent::timestamp).unwrap_or(0);
        self.server_ids.insert(gtid.server);
        self.end.apply(gtid);
        let d = self
            .domains
            .entry(gtid.domain)
            .or_insert_with(|| DomainRange {
                domain: gtid.domain,
                first: gtid.to_string(),
                last: gtid.to_string(),
                transactions: 0,
            });
        d.last = gtid.to_string();
        d.transactions += 1;
    }

    /// No transaction yet.
    pub fn is_empty(&self) -> bool {
        self.transactions == 0
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Time since the segment was opened.
    pub fn age(&self) -> Duration {
        self.opened.elapsed()
    }

    /// The state after the last transaction.
    pub fn end(&self) -> &GtidState {
        &self.end
    }

    /// The master's file the segment's events come from.
    pub fn master_file(&self) -> &str {
        &self.master_file
    }

    /// The binlog file and its manifest (sizes and hashes are filled in
    /// when it is stored).
    pub fn finish(
        self,
        seq: u64,
        prev: Option<&SegmentManifest>,
        source: &str,
        archiver: &str,
    ) -> (Vec<u8>, SegmentManifest) {
        let m = SegmentManifest {
            format: SEGMENT_FORMAT.into(),
            format_version: SEGMENT_VERSION,
            seq,
            start_state: self.start.to_string(),
            end_state: self.end.to_string(),
            prev_seq: prev.map(|p| p.seq),
            prev_end_state: prev.map(|p| p.end_state.clone()),
            domains: self.domains.into_values().collect(),
            server_ids: self.server_ids.into_iter().collect(),
            master_server_id: self.master_server_id,
            server_version: self.server_version,
            master_file: self.master_file,
            first_pos: self.first_pos.unwrap_or(0),
            last_pos: self.last_pos,
            checksum_alg: if self.checksummed { "CRC32" } else { "NONE" }.into(),
            events: self.events,
            transactions: self.transactions,
            bytes_raw: 0,
            bytes_stored: 0,
            sha256_raw: String::new(),
            sha256_stored: String::new(),
            last_event_time: self.last_event_time,
            created_at: replseed_stage::now_rfc3339(),
            archiver: archiver.to_string(),
            source: source.to_string(),
            prev_digest: prev.map(digest),
            signature: None,
        };
        (self.buf, m)
    }
}

/// A segment's binlog file, from a manifest of [`Stage::segment_chain`]:
/// the stored bytes are hashed as read (one compressed segment in memory),
/// and those same bytes are decompressed, to at most the size the signed
/// manifest states, and hashed again. Nothing of a segment that fails is
/// returned.
pub async fn read_verified(stage: &Stage, seg: &SegmentManifest) -> Result<Vec<u8>, StageError> {
    let stored = stage.read_segment(seg).await?;
    let (want, sha_raw) = (seg.bytes_raw, seg.sha256_raw.clone());
    let key = segment_path(seg.seq);
    tokio::task::spawn_blocking(move || {
        let refused = |reason: String| StageError::SegmentRefused {
            key: key.clone(),
            reason,
        };
        let raw = zstd::bulk::decompress(&stored, want as usize)
            .map_err(|e| refused(format!("it does not decompress to {want} bytes: {e}")))?;
        if raw.len() as u64 != want {
            return Err(refused(format!(
                "it decompresses to {} bytes, its manifest says {want}",
                raw.len()
            )));
        }
        let sha = hex::encode(Sha256::digest(&raw));
        if sha != sha_raw {
            return Err(refused(format!(
                "its binlog's SHA-256 is {sha}, its manifest says {sha_raw}"
            )));
        }
        Ok(raw)
    })
    .await
    .map_err(|e| StageError::SegmentRefused {
        key: segment_path(seg.seq),
        reason: format!("decompressing it failed ({e})"),
    })?
}

/// Segments this process has read whole and found as their signed
/// manifests say, by sequence number and stored SHA-256: a serve checks each
/// once ahead of its dumps, not once per replica.
#[derive(Debug, Default)]
pub struct Verified(std::sync::Mutex<std::collections::HashSet<(u64, String)>>);

impl Verified {
    fn has(&self, seg: &SegmentManifest) -> bool {
        let set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.contains(&(seg.seq, seg.sha256_stored.clone()))
    }

    fn add(&self, seg: &SegmentManifest) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.insert((seg.seq, seg.sha256_stored.clone()));
    }
}

/// Reads every segment of `segs` not in `done` and checks its stored bytes
/// against its signed manifest ([`Stage::read_segment`]: size and SHA-256;
/// what they decompress to is then fixed), one at a time and keeping none:
/// the range a replica is about to be sent, checked whole before the first
/// of its events leaves, so that data altered in a later segment stops the
/// replica before it has applied any of the genuine segments ahead of it.
/// Each segment is verified again, decompressed too, as it is sent
/// ([`read_verified`]): it is read a second time, and may have changed
/// meanwhile.
pub async fn verify_ahead(
    stage: &Stage,
    segs: &[SegmentManifest],
    done: &Verified,
) -> Result<(), StageError> {
    let started = Instant::now();
    let (mut checked, mut bytes) = (0, 0);
    for seg in segs.iter().filter(|s| !done.has(s)) {
        bytes += stage.read_segment(seg).await?.len() as u64;
        done.add(seg);
        checked += 1;
    }
    if checked > 0 {
        tracing::info!(
            segments = checked,
            bytes,
            secs = format!("{:.2}", started.elapsed().as_secs_f64()),
            "archive verified ahead of the dump"
        );
    }
    Ok(())
}
