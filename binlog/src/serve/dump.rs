//! `COM_BINLOG_DUMP` from the archive: find, as a master does, where the
//! replica's GTID state is in the archive, send everything after it
//! verbatim, and at the archive's head wait for new segments (each checked
//! to continue the chain) and send heartbeats.
//!
//! The start is found by GTID, never by comparing sequence numbers (with
//! `gtid_strict_mode=OFF` a domain's numbers may go down): per domain of the
//! connect state, the segment holding that very GTID (from the manifests'
//! start states and per-domain ranges, else by reading the segments), then
//! within it the domain's groups are skipped up to and including that GTID.
//!
//! Per master file the replica gets what a master sends: a made-up rotate
//! naming the original file, then the file's format description (its
//! creation time zeroed, so the replica's SQL thread does not take it for
//! a master restart). Errors the replica must not retry are 1236, with
//! MariaDB's own texts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use replseed_stage::archive::{chain_breaks, SegmentManifest};
use tracing::{debug, info, warn};

use super::packet::Packets;
use super::request::{requested_state, Requested};
use super::Shared;
use crate::event::{self, types, RawEvent, HEADER_LEN, MAGIC};
use crate::gtid::{Gtid, GtidState};

const NOT_FOUND: &str = "Could not find GTID state requested by slave in any binlog files. Probably the slave state is too old and required binlog files have been purged.";

/// MariaDB's ER_GTID_POSITION_NOT_FOUND_IN_BINLOG.
fn not_in_binlog(g: &Gtid) -> String {
    format!("Error: connecting slave requested to start from GTID {g}, which is not in the master's binlog")
}

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

/// Where the replica is in one domain of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainStart {
    /// The segment (by sequence number) its position is at or in.
    pub seq: u64,
    /// `Some(g)`: `g` is in that segment, and the domain's groups up to and
    /// including it are the replica's; `None`: the position is the
    /// segment's start.
    pub inside: Option<Gtid>,
}

/// Finds `g` from the manifests alone: the newest segment starting right
/// after it, else the newest whose range of the domain begins or ends
/// with it.
pub fn locate_by_manifest(segments: &[SegmentManifest], g: &Gtid) -> Option<DomainStart> {
    if let Some(s) = segments
        .iter()
        .rev()
        .find(|s| state(&s.start_state).get(g.domain) == Some(g))
    {
        return Some(DomainStart {
            seq: s.seq,
            inside: None,
        });
    }
    let is = |t: &str| t.parse::<Gtid>().ok().as_ref() == Some(g);
    segments
        .iter()
        .rev()
        .find(|s| {
            s.domains
                .iter()
                .any(|r| r.domain == g.domain && (is(&r.first) || is(&r.last)))
        })
        .map(|s| DomainStart {
            seq: s.seq,
            inside: Some(*g),
        })
}

/// Whether the archive ever has `domain`.
fn has_domain(segments: &[SegmentManifest], domain: u32) -> bool {
    segments.iter().any(|s| {
        state(&s.start_state).get(domain).is_some() || s.domains.iter().any(|r| r.domain == domain)
    })
}

/// Why a replica cannot be served from the archive (the 1236 text).
fn missing(segments: &[SegmentManifest], g: &Gtid) -> String {
    let older = segments
        .first()
        .and_then(|s| state(&s.start_state).get(g.domain).copied())
        .is_none_or(|first| first.seq > g.seq);
    if older {
        NOT_FOUND.into()
    } else {
        not_in_binlog(g)
    }
}

/// Splits a segment's binlog file into its events, each checked: its
/// length within the file, its CRC32 where the format description says.
fn events(raw: &[u8], checksummed_after_fde: &mut bool) -> Result<Vec<RawEvent>, String> {
    if raw.get(..4) != Some(&MAGIC[..]) {
        return Err("not a binlog file".into());
    }
    let mut out = Vec::new();
    let mut at = 4;
    while at < raw.len() {
        let len = raw
            .get(at + 9..at + 13)
            .and_then(|b| b.first_chunk::<4>())
            .map(|b| u32::from_le_bytes(*b) as usize)
            .ok_or_else(|| format!("truncated event header at offset {at}"))?;
        if len < HEADER_LEN {
            return Err(format!("bad event length {len} at offset {at}"));
        }
        let bytes = raw
            .get(at..at.saturating_add(len))
            .ok_or_else(|| format!("truncated event at offset {at}"))?
            .to_vec();
        let is_fde = bytes.get(4) == Some(&types::FORMAT_DESCRIPTION);
        let e = RawEvent::new(bytes, is_fde || *checksummed_after_fde)
            .map_err(|e| format!("event at offset {at}: {e}"))?;
        let checksummed = if is_fde {
            *checksummed_after_fde = e.fde_checksum_alg().map_err(|e| e.to_string())? == 1;
            *checksummed_after_fde
        } else {
            *checksummed_after_fde
        };
        if checksummed && !e.checksum_ok() {
            return Err(format!("CRC32 mismatch in the event at offset {at}"));
        }
        out.push(e);
        at += len;
    }
    Ok(out)
}

/// The format description as sent to a replica: not in use, no creation
/// time, checksum recomputed. Its length was checked by `events`
/// (`fde_checksum_alg`), so the fields written here are inside it.
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
    let skip = match find_start(shared, &segments, &want).await {
        Ok(Ok(s)) => s,
        Ok(Err(m)) => return pk.err(1236, "HY000", &m).await,
        Err(m) => return pk.err(1236, "HY000", &m).await,
    };
    let first = skip.values().map(|d| d.seq).min().unwrap_or(0);
    debug!(state = %want, from = first, "dump start found");
    let mut s = Stream {
        skip,
        file: String::new(),
        checksummed: true, // as answered to SELECT @master_binlog_checksum
        sent: 0,
    };
    let mut last: Option<SegmentManifest> = None;
    let mut pending: Vec<SegmentManifest> =
        segments.into_iter().filter(|m| m.seq >= first).collect();
    // The whole range to the head verified before the first event is sent.
    if let Err(e) = crate::segment::verify_ahead(&shared.stage, &pending).await {
        warn!("stopping a replica: {e}");
        let code = if refused(&e) { 1236 } else { 1105 };
        return pk.err(code, "HY000", &format!("replseed serve: {e}")).await;
    }
    let heartbeat = Duration::from_nanos(req.heartbeat_ns);
    let mut last_sent = Instant::now();
    loop {
        for seg in pending.drain(..) {
            // Each segment must continue the chain of what was sent.
            if let Some(prev) = &last {
                let breaks = chain_breaks(&[prev.clone(), seg.clone()]);
                if !breaks.is_empty() {
                    warn!("the archive's chain breaks: {}", breaks.join("; "));
                    return pk
                        .err(
                            1236,
                            "HY000",
                            &format!(
                                "replseed serve: the binlog archive's chain breaks after segment {}: {}",
                                prev.seq,
                                breaks.join("; ")
                            ),
                        )
                        .await;
                }
            }
            if let Err(m) = s.segment(pk, shared, &seg, req.skip_replication).await? {
                return pk.err(1236, "HY000", &m).await;
            }
            last = Some(seg);
            last_sent = Instant::now();
        }
        pk.flush().await?;
        // At the head: new segments, or a heartbeat.
        tokio::time::sleep(shared.poll).await;
        let next_seq = last.as_ref().map_or(first, |l| l.seq + 1);
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

/// Where each domain of the archive starts for a replica at `want`:
/// `Err` is the 1236 text. Domains the archive never had are the
/// replica's own business; a domain of the archive the replica has no
/// GTID of is sent from its first group, which the archive must hold.
async fn find_start(
    shared: &Shared,
    segments: &[SegmentManifest],
    want: &GtidState,
) -> Result<Result<BTreeMap<u32, DomainStart>, String>, String> {
    let mut out = BTreeMap::new();
    let Some(oldest) = segments.first() else {
        return Ok(Ok(out));
    };
    // Domains the replica has nothing of: from their first group on.
    let mut domains: Vec<u32> = segments
        .iter()
        .flat_map(|s| s.domains.iter().map(|r| r.domain))
        .collect();
    domains.extend(state(&oldest.start_state).iter().map(|g| g.domain));
    domains.sort_unstable();
    domains.dedup();
    for d in domains.into_iter().filter(|d| want.get(*d).is_none()) {
        if state(&oldest.start_state).get(d).is_some() {
            return Ok(Err(NOT_FOUND.into()));
        }
        let seq = segments
            .iter()
            .find(|s| s.domains.iter().any(|r| r.domain == d))
            .map_or(oldest.seq, |s| s.seq);
        out.insert(d, DomainStart { seq, inside: None });
    }
    for g in want.iter().filter(|g| has_domain(segments, g.domain)) {
        let found = match locate_by_manifest(segments, g) {
            Some(f) => Some(f),
            None => scan(shared, segments, g).await?,
        };
        match found {
            Some(f) => {
                out.insert(g.domain, f);
            }
            None => return Ok(Err(missing(segments, g))),
        }
    }
    Ok(Ok(out))
}

/// Reads the segments that have `g`'s domain, newest first, for `g`.
async fn scan(
    shared: &Shared,
    segments: &[SegmentManifest],
    g: &Gtid,
) -> Result<Option<DomainStart>, String> {
    for seg in segments
        .iter()
        .rev()
        .filter(|s| s.domains.iter().any(|r| r.domain == g.domain))
    {
        let (evs, _) = load(shared, seg).await?;
        for e in evs.iter().filter(|e| e.kind() == types::GTID) {
            let (h, _) = e
                .gtid()
                .map_err(|m| format!("replseed serve: segment {}: {m}", seg.seq))?;
            if h == *g {
                return Ok(Some(DomainStart {
                    seq: seg.seq,
                    inside: Some(*g),
                }));
            }
        }
    }
    Ok(None)
}

/// A segment's events and whether they carry a CRC32; `Err` names the
/// segment's object key and what is wrong with it, so the replica's
/// Last_IO_Error says which object to look at.
async fn load(shared: &Shared, seg: &SegmentManifest) -> Result<(Vec<RawEvent>, bool), String> {
    let key = replseed_stage::archive::segment_path(seg.seq);
    let damaged = |m: &str| format!("replseed serve: segment {key} is damaged: {m}");
    // Hashed as stored, decompressed no further than the signed manifest's
    // size and hashed again: a short, overlong or altered segment is
    // refused before any of it is sent, and memory stays within it.
    let raw = crate::segment::read_verified(&shared.stage, seg)
        .await
        .map_err(|e| {
            warn!("stopping a replica: {e}");
            format!("replseed serve: {e}")
        })?;
    let mut crc = false;
    let evs = events(&raw, &mut crc).map_err(|m| damaged(&m))?;
    // The segment's own header: its format description and GTID list.
    if evs.first().map(RawEvent::kind) != Some(types::FORMAT_DESCRIPTION) || evs.len() < 2 {
        return Err(damaged("it has no format description"));
    }
    for e in evs.iter().skip(2).filter(|e| e.kind() == types::GTID) {
        e.gtid()
            .map_err(|m| damaged(&format!("a GTID event: {m}")))?;
    }
    Ok((evs, crc))
}

struct Stream {
    /// Per domain, what of the archive the replica has: not sent.
    skip: BTreeMap<u32, DomainStart>,
    /// The master file last announced with a rotate.
    file: String,
    /// Whether events made up now carry a CRC32 (the last format description's).
    checksummed: bool,
    /// Groups sent.
    sent: u64,
}

impl Stream {
    /// Whether the group of `g` in segment `seq` is the replica's already.
    fn has(&mut self, seq: u64, g: &Gtid) -> bool {
        let Some(at) = self.skip.get(&g.domain).copied() else {
            return false;
        };
        if seq < at.seq {
            return true;
        }
        match at.inside {
            Some(last) if seq == at.seq => {
                if last == *g {
                    // The replica's last group of the domain: sent from the next on.
                    self.skip.remove(&g.domain);
                }
                true
            }
            _ => {
                self.skip.remove(&g.domain);
                false
            }
        }
    }

    /// Sends one segment; `Err(message)` for a reason to stop the replica.
    async fn segment(
        &mut self,
        pk: &mut Packets,
        shared: &Shared,
        seg: &SegmentManifest,
        skip_replication: bool,
    ) -> std::io::Result<Result<(), String>> {
        let (evs, crc) = match load(shared, seg).await {
            Ok(l) => l,
            Err(m) => return Ok(Err(m)),
        };
        // The segment's own header: its format description and GTID list.
        if seg.master_file != self.file {
            let rotate =
                event::fake_rotate(&seg.master_file, 4, shared.server_id, self.checksummed);
            send(pk, &rotate).await?;
            send(pk, &fde_for_replica(&evs[0])).await?;
            self.file = seg.master_file.clone();
            self.checksummed = crc;
        }
        let mut skipping = false;
        for e in evs.iter().skip(2) {
            if e.kind() == types::GTID {
                let (g, _) = e.gtid().map_err(std::io::Error::other)?;
                skipping = self.has(seg.seq, &g);
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
