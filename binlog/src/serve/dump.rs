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
pub fn events(raw: &[u8], checksummed_after_fde: &mut bool) -> Result<Vec<RawEvent>, String> {
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
pub(super) fn fde_for_replica(fde: &RawEvent) -> RawEvent {
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

/// Where an archived event starts in the master's file.
fn start_of(e: &RawEvent) -> u64 {
    u64::from(e.log_pos()).saturating_sub(e.bytes().len() as u64)
}

pub(super) async fn send(pk: &mut Packets, e: &RawEvent) -> std::io::Result<()> {
    let mut p = Vec::with_capacity(e.bytes().len() + 1);
    p.push(0);
    p.extend_from_slice(e.bytes());
    pk.write(&p).await
}

/// Streams the archive to one replica until it goes away.
pub async fn run(pk: &mut Packets, req: &Requested, shared: &Shared) -> std::io::Result<()> {
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
    let (skip, at) = if req.connect_state.is_some() {
        let want = match requested_state(req) {
            Ok(s) => s,
            Err(m) => return pk.err(1236, "HY000", &m).await,
        };
        let skip = match find_start(shared, &segments, &want).await {
            Ok(Ok(s)) => s,
            Ok(Err(m)) | Err(m) => return pk.err(1236, "HY000", &m).await,
        };
        debug!(state = %want, "dump start found");
        (skip, None)
    } else {
        match file_start(&segments, &req.dump_file, req.dump_pos) {
            Ok(at) => (BTreeMap::new(), Some(at)),
            Err(m) => return pk.err(1236, "HY000", &m).await,
        }
    };
    let first = match &at {
        Some(a) => a.seq,
        None => skip.values().map(|d| d.seq).min().unwrap_or(0),
    };
    let until = match req.until.as_deref().map(GtidState::parse) {
        Some(Ok(u)) => Some(u),
        Some(Err(m)) => {
            return pk
                .err(1236, "HY000", &format!("@slave_until_gtid: {m}"))
                .await
        }
        None => None,
    };
    let mut s = Stream {
        skip,
        at,
        file: String::new(),
        // As the client set @master_binlog_checksum (a replica: CRC32, as
        // answered for @@global.binlog_checksum; mariadb-binlog: NONE),
        // until the first format description says.
        checksummed: !req
            .user_vars
            .get("master_binlog_checksum")
            .is_some_and(|v| v.eq_ignore_ascii_case("NONE")),
        sent: 0,
        until,
        reached: req
            .connect_state
            .as_ref()
            .and_then(|_| requested_state(req).ok())
            .unwrap_or_default(),
    };
    if s.until_reached(pk, shared).await? {
        return Ok(());
    }
    let mut last: Option<SegmentManifest> = None;
    let mut pending: Vec<SegmentManifest> =
        segments.into_iter().filter(|m| m.seq >= first).collect();
    // The whole range to the head verified before the first event is sent.
    if let Err(e) = crate::segment::verify_ahead(&shared.stage, &pending, &shared.verified).await {
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
            match s.segment(pk, shared, &seg, req.skip_replication).await? {
                Err(m) => return pk.err(1236, "HY000", &m).await,
                Ok(Sent::UntilReached) => return Ok(()),
                Ok(Sent::All) => {}
            }
            last = Some(seg);
            last_sent = Instant::now();
        }
        pk.flush().await?;
        if req.non_blocking() {
            // BINLOG_DUMP_NON_BLOCK (mariadb-binlog without --stop-never):
            // an EOF packet at the archive's head, as a master at its end.
            pk.write(&[0xfe, 0, 0, 0x02, 0]).await?;
            return pk.flush().await;
        }
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

/// Where a dump by file name and position starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStart {
    /// The segment holding the first event to send (or the next segment
    /// to come, at the archive's head).
    pub seq: u64,
    /// The master's file named in the first rotate.
    pub file: String,
    /// The position asked for: events of segment `seq` starting before it
    /// are not sent.
    pub pos: u64,
}

/// MariaDB's text when the file asked for is not in the binlog index.
const NO_SUCH_FILE: &str = "Could not find first log file name in binary log index file";

/// Where `file`:`pos` is in the archive (an empty `file`: its first).
/// The archive keeps the master's positions, so a position on the master
/// is one here; a file older than the archive, or unknown, is refused.
pub fn file_start(segments: &[SegmentManifest], file: &str, pos: u64) -> Result<FileStart, String> {
    let Some(oldest) = segments.first() else {
        return Err(format!("{NO_SUCH_FILE} (the archive is empty)"));
    };
    if file.is_empty() {
        return Ok(FileStart {
            seq: oldest.seq,
            file: oldest.master_file.clone(),
            pos: 4,
        });
    }
    let of_file: Vec<&SegmentManifest> =
        segments.iter().filter(|s| s.master_file == file).collect();
    let Some(last) = of_file.last() else {
        return Err(format!(
            "{NO_SUCH_FILE}: the archive has {} to {}, not '{file}'",
            oldest.master_file,
            segments.last().map_or("", |s| s.master_file.as_str())
        ));
    };
    if pos > last.last_pos {
        return Err(format!(
            "Client requested master to start replication from impossible position; the first event '{file}' at {pos}, the last event read from '{file}' at {}, the last byte read from '{file}' at {}.",
            last.last_pos, last.last_pos
        ));
    }
    let seq = of_file
        .iter()
        .find(|s| s.last_pos > pos)
        .map_or(last.seq + 1, |s| s.seq);
    Ok(FileStart {
        seq,
        file: file.to_string(),
        pos,
    })
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
pub(super) async fn load(
    shared: &Shared,
    seg: &SegmentManifest,
) -> Result<(Vec<RawEvent>, bool), String> {
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
    /// A dump by file and position: where it starts, until the first
    /// rotate is sent.
    at: Option<FileStart>,
    /// The master file last announced with a rotate.
    file: String,
    /// Whether events made up now carry a CRC32 (the last format description's).
    checksummed: bool,
    /// Groups sent.
    sent: u64,
    /// `@slave_until_gtid`: nothing of a domain past it is sent, and the
    /// dump ends once every one of its domains is reached.
    until: Option<GtidState>,
    /// The replica's state as of what was sent.
    reached: GtidState,
}

/// How a segment was sent.
enum Sent {
    /// All of it (what the replica wants of it).
    All,
    /// Up to `@slave_until_gtid`, and the dump is over.
    UntilReached,
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

    /// Whether the replica reached `@slave_until_gtid`; if so the dump
    /// ends as a master's does: a GTID list flagged UNTIL_REACHED, then EOF.
    async fn until_reached(&self, pk: &mut Packets, shared: &Shared) -> std::io::Result<bool> {
        let Some(until) = &self.until else {
            return Ok(false);
        };
        if !self.reached.covers(until) {
            return Ok(false);
        }
        let mut e = event::gtid_list(until, shared.server_id, self.checksummed)
            .bytes()
            .to_vec();
        // The count's high 4 bits are flags: 1 = UNTIL_REACHED.
        e[HEADER_LEN + 3] |= 0x10;
        if self.checksummed {
            let n = e.len();
            let crc = crc32fast::hash(&e[..n - 4]);
            e[n - 4..].copy_from_slice(&crc.to_le_bytes());
        }
        let e = RawEvent::new(e, self.checksummed).map_err(std::io::Error::other)?;
        send(pk, &e).await?;
        pk.write(&[0xFE, 0, 0, 0, 0]).await?;
        pk.flush().await?;
        info!(until = %until, "@slave_until_gtid reached: dump ended");
        Ok(true)
    }

    /// Whether the group of `g` is in a domain `@slave_until_gtid` has
    /// already been reached in (not sent).
    fn past_until(&self, g: &Gtid) -> bool {
        self.until
            .as_ref()
            .and_then(|u| u.get(g.domain))
            .is_some_and(|u| {
                g.seq > u.seq && self.reached.get(g.domain).is_some_and(|a| a.seq >= u.seq)
            })
    }

    /// Sends one segment; `Err(message)` for a reason to stop the replica.
    async fn segment(
        &mut self,
        pk: &mut Packets,
        shared: &Shared,
        seg: &SegmentManifest,
        skip_replication: bool,
    ) -> std::io::Result<Result<Sent, String>> {
        let (evs, crc) = match load(shared, seg).await {
            Ok(l) => l,
            Err(m) => return Ok(Err(m)),
        };
        // Before `from` in the master's file: the client has it.
        let mut from = 0;
        let mut rotate_to = (seg.master_file.clone(), 4);
        if let Some(at) = self.at.take() {
            if at.seq == seg.seq && at.file == seg.master_file {
                from = at.pos;
                let first = seg.first_pos.max(4);
                if at.pos > first && !evs.iter().skip(2).any(|e| start_of(e) == at.pos) {
                    return Ok(Err(format!(
                        "Client requested master to start replication from impossible position; the first event '{}' at {}: no event starts there",
                        at.file, at.pos
                    )));
                }
            }
            if at.file == seg.master_file {
                rotate_to.1 = at.pos.max(4);
            }
        }
        // The segment's own header: its format description and GTID list.
        if seg.master_file != self.file {
            let rotate = event::fake_rotate(
                &rotate_to.0,
                rotate_to.1,
                shared.server_id,
                self.checksummed,
            );
            send(pk, &rotate).await?;
            let mut fde = fde_for_replica(&evs[0]);
            if rotate_to.1 > 4 {
                // As a master from inside a file: the replica keeps the
                // position it asked for.
                fde.set_log_pos(0);
            }
            send(pk, &fde).await?;
            self.file = seg.master_file.clone();
            self.checksummed = crc;
        }
        let mut skipping = false;
        for e in evs.iter().skip(2).filter(|e| start_of(e) >= from) {
            if e.kind() == types::GTID {
                if self.until_reached(pk, shared).await? {
                    return Ok(Ok(Sent::UntilReached));
                }
                let (g, _) = e.gtid().map_err(std::io::Error::other)?;
                skipping = self.has(seg.seq, &g) || self.past_until(&g);
                if !skipping {
                    self.sent += 1;
                }
                self.reached.apply(g);
            }
            if skipping || (skip_replication && e.flags() & 0x8000 != 0) {
                continue;
            }
            send(pk, e).await?;
        }
        info!(seq = seg.seq, groups = self.sent, "segment sent");
        if self.until_reached(pk, shared).await? {
            return Ok(Ok(Sent::UntilReached));
        }
        Ok(Ok(Sent::All))
    }
}
