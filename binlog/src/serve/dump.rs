//! `COM_BINLOG_DUMP` from the archive: pick the segment the replica's GTID
//! state starts in, skip the groups it has, and stream the rest verbatim;
//! at the archive's head, wait for new segments and send heartbeats.
//!
//! Per master file the replica gets what a master sends: a made-up rotate
//! naming the original file, then the file's format description (its
//! creation time zeroed, so the replica's SQL thread does not take it for
//! a master restart). Errors the replica must not retry are 1236, with
//! MariaDB's own texts.

use std::time::{Duration, Instant};

use replseed_stage::archive::SegmentManifest;
use tracing::{debug, info, warn};

use super::packet::Packets;
use super::session::{requested_state, Requested};
use super::Shared;
use crate::event::{self, types, RawEvent, HEADER_LEN, MAGIC};
use crate::gtid::GtidState;

const NOT_FOUND: &str = "Could not find GTID state requested by slave in any binlog files. Probably the slave state is too old and required binlog files have been purged.";

fn state(s: &str) -> GtidState {
    GtidState::parse(s).unwrap_or_default()
}

/// Whether a stage error means the archive must not be served (a signature,
/// a link of the chain or a manifest is wrong), not that reading it failed.
fn refused(e: &replseed_stage::StageError) -> bool {
    use replseed_stage::StageError as E;
    matches!(
        e,
        E::SegmentRefused { .. } | E::BadSignature { .. } | E::BadManifest { .. }
    )
}

/// The segment to start from: the newest whose start the request covers.
pub fn start_segment(segments: &[SegmentManifest], want: &GtidState) -> Option<usize> {
    segments
        .iter()
        .rposition(|s| want.covers(&state(&s.start_state)))
}

/// Splits a segment's binlog file into its events.
fn events(raw: &[u8], checksummed_after_fde: &mut bool) -> Result<Vec<RawEvent>, String> {
    if raw.get(..4) != Some(&MAGIC[..]) {
        return Err("not a binlog file".into());
    }
    let mut out = Vec::new();
    let mut at = 4;
    while at < raw.len() {
        let len = raw
            .get(at + 9..at + 13)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or("truncated event header")?;
        let bytes = raw.get(at..at + len).ok_or("truncated event")?.to_vec();
        let is_fde = bytes.get(4) == Some(&types::FORMAT_DESCRIPTION);
        let e =
            RawEvent::new(bytes, is_fde || *checksummed_after_fde).map_err(|e| e.to_string())?;
        if is_fde {
            *checksummed_after_fde = e.fde_checksum_alg().map_err(|e| e.to_string())? == 1;
        }
        out.push(e);
        at += len;
    }
    Ok(out)
}

/// The format description as sent to a replica: not in use, no creation
/// time, checksum recomputed.
fn fde_for_replica(fde: &RawEvent) -> RawEvent {
    let mut b = fde.bytes().to_vec();
    let flags = u16::from_le_bytes([b[17], b[18]]) & !event::FLAG_IN_USE;
    b[17..19].copy_from_slice(&flags.to_le_bytes());
    let created = HEADER_LEN + 2 + 50;
    b[created..created + 4].copy_from_slice(&[0; 4]);
    let n = b.len();
    let crc = crc32fast::hash(&b[..n - 4]);
    b[n - 4..].copy_from_slice(&crc.to_le_bytes());
    RawEvent::new(b, true).expect("a valid format description stays valid")
}

async fn send(pk: &mut Packets, e: &RawEvent) -> std::io::Result<()> {
    let mut p = Vec::with_capacity(e.bytes().len() + 1);
    p.push(0);
    p.extend_from_slice(e.bytes());
    pk.write(&p).await
}

/// Streams the archive to one replica until it goes away.
pub async fn run(pk: &mut Packets, req: &Requested, shared: &Shared) -> std::io::Result<()> {
    let want = match requested_state(req) {
        Ok(s) => s,
        Err(m) => return pk.err(1236, "HY000", &m).await,
    };
    if req.capability < 4 {
        return pk
            .err(
                1236,
                "HY000",
                "replseed serve needs a MariaDB 10 replica using GTIDs (MASTER_USE_GTID=slave_pos)",
            )
            .await;
    }
    let segments = match shared.stage.segment_chain().await {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot serve the archive: {e}");
            let code = if refused(&e) { 1236 } else { 1105 };
            return pk.err(code, "HY000", &format!("replseed serve: {e}")).await;
        }
    };
    let Some(first) = start_segment(&segments, &want) else {
        return pk.err(1236, "HY000", NOT_FOUND).await;
    };
    if let Some(last) = segments.last() {
        let end = state(&last.end_state);
        for g in want.iter() {
            if end.get(g.domain).is_some_and(|e| e.seq < g.seq) {
                return pk
                    .err(1236, "HY000", &format!("Error: connecting slave requested to start from GTID {g}, which is not in the master's binlog"))
                    .await;
            }
        }
    }
    let mut s = Stream {
        skip: want,
        file: String::new(),
        checksummed: true, // as answered to SELECT @master_binlog_checksum
        sent: 0,
    };
    let mut next_seq = segments[first].seq;
    let mut pending: Vec<SegmentManifest> = segments[first..].to_vec();
    let heartbeat = Duration::from_nanos(req.heartbeat_ns);
    let mut last_sent = Instant::now();
    loop {
        for seg in pending.drain(..) {
            if let Err(m) = s.segment(pk, shared, &seg, req.skip_replication).await? {
                return pk.err(1236, "HY000", &m).await;
            }
            next_seq = seg.seq + 1;
            last_sent = Instant::now();
        }
        pk.flush().await?;
        // At the head: new segments, or a heartbeat.
        tokio::time::sleep(shared.poll).await;
        match shared.stage.segment_chain().await {
            Ok(all) => pending = all.into_iter().filter(|m| m.seq >= next_seq).collect(),
            Err(e) if refused(&e) => {
                warn!("stopping a replica: {e}");
                return pk.err(1236, "HY000", &format!("replseed serve: {e}")).await;
            }
            Err(e) => debug!("listing the archive: {e}"),
        }
        if pending.is_empty()
            && !heartbeat.is_zero()
            && last_sent.elapsed() >= heartbeat
            && !s.file.is_empty()
        {
            let mut hb = event::heartbeat(&s.file, shared.server_id, s.checksummed);
            hb.set_log_pos(u32::MAX);
            send(pk, &hb).await?;
            pk.flush().await?;
            last_sent = Instant::now();
        }
    }
}

struct Stream {
    /// Groups the replica has: not sent.
    skip: GtidState,
    /// The master file last announced with a rotate.
    file: String,
    /// Whether events made up now carry a CRC32 (the last format description's).
    checksummed: bool,
    /// Groups sent.
    sent: u64,
}

impl Stream {
    /// Sends one segment; `Err(message)` for a reason to stop the replica.
    async fn segment(
        &mut self,
        pk: &mut Packets,
        shared: &Shared,
        seg: &SegmentManifest,
        skip_replication: bool,
    ) -> std::io::Result<Result<(), String>> {
        let raw = match crate::segment::read_verified(&shared.stage, seg).await {
            Ok(r) => r,
            Err(e) => {
                warn!("stopping a replica: {e}");
                return Ok(Err(format!("replseed serve: {e}")));
            }
        };
        let mut crc = false;
        let evs = match events(&raw, &mut crc) {
            Ok(e) => e,
            Err(m) => return Ok(Err(format!("replseed serve: segment {}: {m}", seg.seq))),
        };
        // The segment's own header: its format description and GTID list.
        let Some(fde) = evs
            .first()
            .filter(|e| e.kind() == types::FORMAT_DESCRIPTION)
        else {
            return Ok(Err(format!(
                "replseed serve: segment {} has no format description",
                seg.seq
            )));
        };
        if seg.master_file != self.file {
            let rotate =
                event::fake_rotate(&seg.master_file, 4, shared.server_id, self.checksummed);
            send(pk, &rotate).await?;
            send(pk, &fde_for_replica(fde)).await?;
            self.file = seg.master_file.clone();
            self.checksummed = crc;
        }
        let mut skipping = false;
        for e in &evs[2..] {
            if e.kind() == types::GTID {
                let (g, _) = e.gtid().map_err(std::io::Error::other)?;
                skipping = self.skip.contains(&g);
                if !skipping {
                    self.sent += 1;
                }
            }
            if skipping || (skip_replication && e.flags() & 0x8000 != 0) {
                continue;
            }
            send(pk, e).await?;
        }
        info!(seq = seg.seq, groups = self.sent, "segment sent");
        Ok(Ok(()))
    }
}
