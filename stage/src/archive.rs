//! The binlog archive in a stage: the master's binary log after a
//! snapshot's position, so that a snapshot can still be caught up once the
//! master has purged it.
//!
//! ```text
//! <stage root>/.binlog/segments/<seq:012>.bin.zst   a self-contained binlog file, zstd
//! <stage root>/.binlog/segments/<seq:012>.json      its manifest, written last
//! ```
//!
//! A segment is a valid binlog file (magic, the master's format description,
//! a GTID list of its start state, whole transactions only). Its manifest is
//! written with a create-only put after the data: a segment without a
//! manifest does not exist, and a sequence number is never written twice.
//! Each manifest names the end state of the one before it and the SHA-256
//! of its manifest (`prev_digest`), and with a stage key it is signed
//! (HMAC-SHA256, as snapshot manifests are, [`crate::signing`]): a segment
//! altered, inserted, removed or reordered breaks a signature or a link and
//! is refused before any of its bytes are used ([`Stage::segment_chain`],
//! [`chain_breaks`], [`Stage::read_segment`]). The folder name starts with
//! `.`, which no snapshot id can.

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::StageError;
use crate::store::Stage;

/// `format` of a segment manifest.
pub const SEGMENT_FORMAT: &str = "replseed-binlog-segment";
/// Version of the segment format (2: `prev_digest` and `signature`).
pub const SEGMENT_VERSION: u32 = 2;
const SEGMENTS: &str = ".binlog/segments";

/// Path of a segment's data, relative to the stage root.
pub fn segment_path(seq: u64) -> String {
    format!("{SEGMENTS}/{seq:012}.bin.zst")
}

/// Path of a segment's manifest, relative to the stage root.
pub fn segment_manifest_path(seq: u64) -> String {
    format!("{SEGMENTS}/{seq:012}.json")
}

/// The first and last GTID of one domain in a segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DomainRange {
    /// Replication domain.
    pub domain: u32,
    /// First GTID of the domain in the segment.
    pub first: String,
    /// Last GTID of the domain in the segment.
    pub last: String,
    /// Transactions of the domain in the segment.
    pub transactions: u64,
}

/// The manifest of one archived segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentManifest {
    /// Always [`SEGMENT_FORMAT`].
    pub format: String,
    /// [`SEGMENT_VERSION`].
    pub format_version: u32,
    /// Sequence number (from 1), the order of segments.
    pub seq: u64,
    /// GTID state before the segment's first transaction (every domain).
    pub start_state: String,
    /// GTID state after its last transaction.
    pub end_state: String,
    /// The previous segment's number and end state (must equal
    /// `start_state`); `None` for the first segment.
    pub prev_seq: Option<u64>,
    /// End state of the previous segment.
    pub prev_end_state: Option<String>,
    /// Per domain: first and last GTID.
    pub domains: Vec<DomainRange>,
    /// Server ids that wrote the segment's transactions.
    pub server_ids: Vec<u32>,
    /// The master's `server_id` (whose stream this is).
    pub master_server_id: u32,
    /// The master's version (from its format description).
    pub server_version: String,
    /// The master's binlog file the events came from.
    pub master_file: String,
    /// `log_pos` of the first and last event in that file (informative).
    pub first_pos: u64,
    /// `log_pos` after the last event.
    pub last_pos: u64,
    /// `CRC32` or `NONE`.
    pub checksum_alg: String,
    /// Events, the segment's own header events included.
    pub events: u64,
    /// Transactions (event groups).
    pub transactions: u64,
    /// Size of the binlog file.
    pub bytes_raw: u64,
    /// Size of the stored (compressed) object.
    pub bytes_stored: u64,
    /// SHA-256 of the binlog file, hex.
    pub sha256_raw: String,
    /// SHA-256 of the stored object, hex.
    pub sha256_stored: String,
    /// Timestamp of the last transaction's first event (seconds).
    pub last_event_time: u32,
    /// When the segment was written.
    pub created_at: String,
    /// Who wrote it (`host-pid-random`).
    pub archiver: String,
    /// Where the stream came from (`host:port`).
    pub source: String,
    /// [`digest`] of the previous segment's manifest (signature included);
    /// `None` for the first segment (and in version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_digest: Option<String>,
    /// `hmac-sha256:<hex>` of the manifest without this field, under the
    /// stage key; `None` when the archive was written without a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// The digest the next segment's `prev_digest` names: SHA-256 (hex) of the
/// manifest as serialized compactly, its signature included.
pub fn digest(m: &SegmentManifest) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(m).expect("segment manifest serializes"),
    ))
}

/// What a segment's signature covers: the manifest without its signature.
fn signed_body(m: &SegmentManifest) -> Vec<u8> {
    let mut unsigned = m.clone();
    unsigned.signature = None;
    serde_json::to_vec(&unsigned).expect("segment manifest serializes")
}

/// How long a segment's data may sit without its manifest before another
/// archiver takes it for the leftover of one that died between the two puts.
const ORPHAN_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Raw size a segment may claim: segments are cut at `--segment-bytes`
/// (64 MiB by default) plus one transaction.
pub const MAX_SEGMENT_RAW: u64 = 1 << 30;

impl Stage {
    /// Every published segment manifest, by sequence number.
    pub async fn segments(&self) -> Result<Vec<SegmentManifest>, StageError> {
        let prefix = self.object_path(SEGMENTS);
        let metas: Vec<_> = match self.store().list(Some(&prefix)).try_collect().await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(self.store_err(SEGMENTS, e)),
        };
        let mut out = Vec::new();
        for m in metas {
            let name = m.location.filename().unwrap_or_default();
            if !name.ends_with(".json") {
                continue;
            }
            let key = format!("{SEGMENTS}/{name}");
            let body = self
                .store()
                .get(&m.location)
                .await
                .map_err(|e| self.store_err(&key, e))?
                .bytes()
                .await
                .map_err(|e| self.store_err(&key, e))?;
            let seg: SegmentManifest =
                serde_json::from_slice(&body).map_err(|e| StageError::BadManifest {
                    key: key.clone(),
                    reason: e.to_string(),
                })?;
            if seg.format != SEGMENT_FORMAT || seg.format_version > SEGMENT_VERSION {
                return Err(StageError::BadManifest {
                    key,
                    reason: format!(
                        "format {} version {} (this replseed reads {SEGMENT_FORMAT} version {SEGMENT_VERSION})",
                        seg.format, seg.format_version
                    ),
                });
            }
            // The name is not signed, the number inside is: a manifest
            // moved to another number is a reordering.
            if key != segment_manifest_path(seg.seq) {
                return Err(StageError::SegmentRefused {
                    key,
                    reason: format!(
                        "it describes segment {}: segments were renamed or reordered",
                        seg.seq
                    ),
                });
            }
            self.check_segment_signature(&seg, &key)?;
            out.push(seg);
        }
        out.sort_by_key(|s| s.seq);
        Ok(out)
    }

    /// The signature rule of snapshots, for a segment: with a key it must be
    /// signed with it; without one, a signed segment is refused unless the
    /// reader said `--allow-unsigned`.
    fn check_segment_signature(&self, seg: &SegmentManifest, key: &str) -> Result<(), StageError> {
        match self.key() {
            Some(k) => k
                .check(&signed_body(seg), seg.signature.as_deref())
                .map_err(|reason| StageError::SegmentRefused {
                    key: key.to_string(),
                    reason: if seg.signature.is_none() {
                        format!("{reason}, and a stage key is set: only a signed archive is replayed; archive with the same REPLSEED_STAGE_KEY")
                    } else {
                        reason
                    },
                }),
            None if seg.signature.is_some() => self.unverified(key, "binlog archive"),
            None => Ok(()),
        }
    }

    /// Every segment, checked as one chain (signatures, numbers, digests
    /// and GTID states): what `serve` and `catchup` replay. A break is an
    /// error naming the first segment that does not follow.
    pub async fn segment_chain(&self) -> Result<Vec<SegmentManifest>, StageError> {
        let segments = self.segments().await?;
        if let Some((seq, reason)) = chain_links(&segments).into_iter().next() {
            return Err(StageError::SegmentRefused {
                key: segment_manifest_path(seq),
                reason,
            });
        }
        Ok(segments)
    }

    /// Stores a segment: its data, then its manifest, both create-only (a
    /// sequence number another archiver took is refused, and its data is
    /// never overwritten). Fills in the sizes and hashes of `manifest`, and
    /// signs it with the stage key.
    pub async fn put_segment(
        &self,
        raw: &[u8],
        stored: Vec<u8>,
        manifest: &mut SegmentManifest,
    ) -> Result<(), StageError> {
        manifest.bytes_raw = raw.len() as u64;
        manifest.sha256_raw = hex::encode(Sha256::digest(raw));
        manifest.bytes_stored = stored.len() as u64;
        manifest.sha256_stored = hex::encode(Sha256::digest(&stored));
        manifest.signature = None;
        if let Some(k) = self.key() {
            manifest.signature = Some(k.tag(&signed_body(manifest)));
        }
        let create = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let exists = || StageError::SegmentExists {
            seq: manifest.seq,
            url: self.url().to_string(),
        };
        let data = segment_path(manifest.seq);
        let data_path = self.object_path(&data);
        let payload = PutPayload::from(stored);
        loop {
            match self
                .store()
                .put_opts(&data_path, payload.clone(), create())
                .await
            {
                Ok(_) => break,
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(self.store_err(&data, e)),
            }
            // Data without a manifest: an archiver writing this number right
            // now (it publishes, and this one is refused), or the leftover
            // of one that died between the two puts (removed once it is old).
            let key = segment_manifest_path(manifest.seq);
            match self.store().head(&self.object_path(&key)).await {
                Ok(_) => return Err(exists()),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_err(&key, e)),
            }
            let (meta, bytes) = match self.store().get(&data_path).await {
                Ok(r) => {
                    let meta = r.meta.clone();
                    match r.bytes().await {
                        Ok(b) => (meta, b),
                        Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(self.store_err(&data, e)),
                    }
                }
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(self.store_err(&data, e)),
            };
            // This very segment, stored by a publish of this archiver that
            // was cut short before its manifest: only the manifest is missing.
            if hex::encode(Sha256::digest(&bytes)) == manifest.sha256_stored {
                break;
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let age = std::time::Duration::from_secs(
                now.saturating_sub(meta.last_modified.timestamp()).max(0) as u64,
            );
            if age >= ORPHAN_AFTER {
                tracing::warn!(key = %data, "removing segment data that has had no manifest for {} s (left by an archiver that stopped)", age.as_secs());
                match self.store().delete(&data_path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.store_err(&data, e)),
                }
            } else {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
        let key = segment_manifest_path(manifest.seq);
        let body = serde_json::to_vec_pretty(manifest).expect("segment manifest serializes");
        match self
            .store()
            .put_opts(&self.object_path(&key), PutPayload::from(body), create())
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(exists()),
            Err(e) => Err(self.store_err(&key, e)),
        }
    }

    /// Reads a segment's stored bytes (one compressed segment in memory) and
    /// checks them against its manifest: the bytes returned are the bytes
    /// hashed. Pass a manifest from [`Stage::segment_chain`].
    pub async fn read_segment(&self, seg: &SegmentManifest) -> Result<Vec<u8>, StageError> {
        let key = segment_path(seg.seq);
        let refused = |reason: String| StageError::SegmentRefused {
            key: key.clone(),
            reason,
        };
        if seg.bytes_raw > MAX_SEGMENT_RAW || seg.bytes_stored > MAX_SEGMENT_RAW {
            return Err(refused(format!(
                "its manifest claims {} bytes ({} stored), more than a segment holds",
                seg.bytes_raw, seg.bytes_stored
            )));
        }
        let bytes = self
            .store()
            .get(&self.object_path(&key))
            .await
            .map_err(|e| self.store_err(&key, e))?
            .bytes()
            .await
            .map_err(|e| self.store_err(&key, e))?;
        if bytes.len() as u64 != seg.bytes_stored {
            return Err(refused(format!(
                "{} bytes, its manifest says {}",
                bytes.len(),
                seg.bytes_stored
            )));
        }
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != seg.sha256_stored {
            return Err(refused(format!(
                "SHA-256 is {sha}, its manifest says {}",
                seg.sha256_stored
            )));
        }
        Ok(bytes.to_vec())
    }

    /// Removes a segment (manifest first).
    pub async fn delete_segment(&self, seq: u64) -> Result<(), StageError> {
        for key in [segment_manifest_path(seq), segment_path(seq)] {
            match self.store().delete(&self.object_path(&key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_err(&key, e)),
            }
        }
        Ok(())
    }
}

/// Checks that `segments` (by sequence number) form one chain: each names
/// the one before it (number and manifest digest) and starts where it
/// ended. Returns one line per break.
pub fn chain_breaks(segments: &[SegmentManifest]) -> Vec<String> {
    chain_links(segments)
        .into_iter()
        .map(|(seq, reason)| format!("segment {seq} ({}): {reason}", segment_manifest_path(seq)))
        .collect()
}

/// The breaks of the chain: the segment that does not follow, and why. The
/// first segment listed is where the chain is checked from (its own
/// signature covers its predecessor's digest, which pruning removed).
fn chain_links(segments: &[SegmentManifest]) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for w in segments.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let why = if b.prev_seq != Some(a.seq) {
            format!(
                "it follows segment {}, not segment {}: a segment was removed or inserted",
                b.prev_seq.map_or("none".to_string(), |s| s.to_string()),
                a.seq
            )
        } else if b.start_state != a.end_state || b.prev_end_state.as_ref() != Some(&a.end_state) {
            format!(
                "it starts at '{}', segment {} ends at '{}'",
                b.start_state, a.seq, a.end_state
            )
        } else if b.format_version >= 2 && b.prev_digest.as_deref() != Some(digest(a).as_str()) {
            format!(
                "it names another manifest as segment {}: a segment was replaced or reordered",
                a.seq
            )
        } else {
            continue;
        };
        out.push((b.seq, why));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::StageKey;

    fn manifest(seq: u64, prev: Option<&SegmentManifest>) -> SegmentManifest {
        SegmentManifest {
            format: SEGMENT_FORMAT.into(),
            format_version: SEGMENT_VERSION,
            seq,
            start_state: format!("0-1-{}", seq - 1),
            end_state: format!("0-1-{seq}"),
            prev_seq: prev.map(|p| p.seq),
            prev_end_state: prev.map(|p| p.end_state.clone()),
            domains: Vec::new(),
            server_ids: vec![1],
            master_server_id: 1,
            server_version: "10.11".into(),
            master_file: "bin.000001".into(),
            first_pos: 4,
            last_pos: 100,
            checksum_alg: "CRC32".into(),
            events: 3,
            transactions: 1,
            bytes_raw: 0,
            bytes_stored: 0,
            sha256_raw: String::new(),
            sha256_stored: String::new(),
            last_event_time: 0,
            created_at: String::new(),
            archiver: "test".into(),
            source: "m:3306".into(),
            prev_digest: prev.map(digest),
            signature: None,
        }
    }

    /// A keyed stage in a temporary directory holding segments 1..=n.
    async fn archive(n: u64) -> (tempfile::TempDir, Stage) {
        let dir = tempfile::tempdir().unwrap();
        let key = StageKey::new("0123456789abcdef-unit".to_string().into()).unwrap();
        let stage = Stage::open(dir.path().to_str().unwrap())
            .unwrap()
            .with_key(Some(key));
        let mut prev: Option<SegmentManifest> = None;
        for seq in 1..=n {
            let mut m = manifest(seq, prev.as_ref());
            let raw = format!("binlog {seq}").into_bytes();
            stage.put_segment(&raw, raw.clone(), &mut m).await.unwrap();
            prev = Some(m);
        }
        (dir, stage)
    }

    fn refused_key(e: StageError) -> String {
        match e {
            StageError::SegmentRefused { key, .. } | StageError::BadSignature { key, .. } => key,
            other => panic!("not a refusal: {other}"),
        }
    }

    #[tokio::test]
    async fn a_signed_chain_verifies_from_its_first_remaining_segment() {
        let (_dir, stage) = archive(4).await;
        let segs = stage.segment_chain().await.unwrap();
        assert_eq!(segs.len(), 4);
        assert!(segs.iter().all(|s| s.signature.is_some()));
        assert_eq!(
            segs[1].prev_digest.as_deref(),
            Some(digest(&segs[0]).as_str())
        );
        // Pruned from the front: what is left still verifies.
        stage.delete_segment(1).await.unwrap();
        stage.delete_segment(2).await.unwrap();
        assert_eq!(stage.segment_chain().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_removed_segment_breaks_the_chain_at_the_next() {
        let (_dir, stage) = archive(4).await;
        stage.delete_segment(2).await.unwrap();
        let e = stage.segment_chain().await.unwrap_err();
        assert_eq!(refused_key(e), segment_manifest_path(3));
    }

    #[tokio::test]
    async fn an_edited_forged_or_unsigned_manifest_is_refused() {
        let (dir, stage) = archive(3).await;
        let path = dir.path().join(segment_manifest_path(2));
        let good = std::fs::read(&path).unwrap();
        let mut m: SegmentManifest = serde_json::from_slice(&good).unwrap();
        // Edited, links intact: the signature catches it.
        m.transactions += 1;
        std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
        let e = stage.segment_chain().await.unwrap_err();
        assert!(e.to_string().contains("signature does not match"), "{e}");
        assert_eq!(refused_key(e), segment_manifest_path(2));
        // Unsigned.
        m.signature = None;
        std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
        let e = stage.segment_chain().await.unwrap_err();
        assert!(e.to_string().contains("not signed"), "{e}");
        // Without a key: refused unless allowed.
        std::fs::write(&path, &good).unwrap();
        let keyless = Stage::open(dir.path().to_str().unwrap()).unwrap();
        let e = keyless.segment_chain().await.unwrap_err();
        assert!(e.to_string().contains("--allow-unsigned"), "{e}");
        assert_eq!(
            keyless
                .allow_unsigned(true)
                .segment_chain()
                .await
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn links_name_the_segment_that_does_not_follow() {
        let a = manifest(1, None);
        let b = manifest(2, Some(&a));
        let c = manifest(3, Some(&b));
        assert!(chain_links(&[a.clone(), b.clone(), c.clone()]).is_empty());
        // Reordered.
        assert_eq!(chain_links(&[a.clone(), c.clone(), b.clone()])[0].0, 3);
        // The predecessor replaced by another with the same number and states.
        let mut other = b.clone();
        other.archiver = "someone else".into();
        let links = chain_links(&[a.clone(), other, c.clone()]);
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].0, 3);
        assert!(links[0].1.contains("another manifest"), "{}", links[0].1);
        // A GTID gap.
        let mut gap = c.clone();
        gap.start_state = "0-1-9".into();
        assert_eq!(chain_links(&[a, b, gap])[0].0, 3);
    }

    #[tokio::test]
    async fn segment_data_is_never_overwritten() {
        let (dir, stage) = archive(1).await;
        let data = dir.path().join(segment_path(1));
        let before = std::fs::read(&data).unwrap();
        let mut again = manifest(1, None);
        let e = stage
            .put_segment(b"other", b"other".to_vec(), &mut again)
            .await
            .unwrap_err();
        assert!(matches!(e, StageError::SegmentExists { seq: 1, .. }), "{e}");
        assert_eq!(std::fs::read(&data).unwrap(), before);
    }
}
