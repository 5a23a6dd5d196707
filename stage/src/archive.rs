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
//! Each manifest names the end state of the one before it, so the chain can
//! be checked for gaps. The folder name starts with `.`, which no snapshot id
//! can.

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::StageError;
use crate::store::Stage;

/// `format` of a segment manifest.
pub const SEGMENT_FORMAT: &str = "replseed-binlog-segment";
/// Version of the segment format.
pub const SEGMENT_VERSION: u32 = 1;
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
}

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
            out.push(seg);
        }
        out.sort_by_key(|s| s.seq);
        Ok(out)
    }

    /// Stores a segment: its data, then its manifest (create-only: a
    /// sequence number another archiver took is refused). Fills in the
    /// sizes and hashes of `manifest`.
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
        let data = segment_path(manifest.seq);
        self.store()
            .put(&self.object_path(&data), PutPayload::from(stored))
            .await
            .map_err(|e| self.store_err(&data, e))?;
        let key = segment_manifest_path(manifest.seq);
        let body = serde_json::to_vec_pretty(manifest).expect("segment manifest serializes");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store()
            .put_opts(&self.object_path(&key), PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(StageError::SegmentExists {
                seq: manifest.seq,
                url: self.url().to_string(),
            }),
            Err(e) => Err(self.store_err(&key, e)),
        }
    }

    /// Reads a segment's stored bytes and checks them against its manifest.
    pub async fn read_segment(&self, seg: &SegmentManifest) -> Result<Vec<u8>, StageError> {
        let key = segment_path(seg.seq);
        let bytes = self
            .store()
            .get(&self.object_path(&key))
            .await
            .map_err(|e| self.store_err(&key, e))?
            .bytes()
            .await
            .map_err(|e| self.store_err(&key, e))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != seg.sha256_stored {
            return Err(StageError::ChunkCorrupt {
                key,
                reason: format!("SHA-256 is {sha}, the manifest says {}", seg.sha256_stored),
            });
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

/// Checks that `segments` (by sequence number) form one chain: each starts
/// where the one before ended, and its manifest names that segment and that
/// end state as its predecessor. Returns one line per break.
pub fn chain_breaks(segments: &[SegmentManifest]) -> Vec<String> {
    let mut out = Vec::new();
    for w in segments.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if b.prev_seq != Some(a.seq)
            || b.start_state != a.end_state
            || b.prev_end_state.as_deref() != Some(a.end_state.as_str())
        {
            out.push(format!(
                "segment {} does not follow segment {} (it starts at '{}' after segment {} ending at '{}'; segment {} ends at '{}')",
                b.seq,
                a.seq,
                b.start_state,
                b.prev_seq.map_or("none".into(), |p| p.to_string()),
                b.prev_end_state.as_deref().unwrap_or(""),
                a.seq,
                a.end_state
            ));
        }
    }
    out
}
