//! The contract between replseed's stages.
//!
//! `extract` writes a snapshot through this crate; `load` and `catchup`
//! read it back. Nothing else builds object paths or parses manifests.
//!
//! # Layout
//! * [`layout`]: object names (snapshot folders, chunk files, manifest).
//! * [`manifest`]: the manifest, written last as the commit point.
//! * [`types`]: the MariaDB-to-Arrow type mapping, both ways.
//! * [`store`]: the [`Stage`] (local directory or S3 prefix) and chunk I/O.
//! * [`archive`]: the binlog archive (segments of the master's binlog).
//! * [`lease`]: who is loading or writing a snapshot, so it is not deleted under them.
//! * [`error`]: the [`StageError`] type.

#![warn(missing_docs)]

pub mod archive;
pub mod error;
pub mod layout;
pub mod lease;
pub mod manifest;
pub mod signing;
pub mod store;
pub mod types;
mod upload;

pub use error::StageError;
pub use manifest::Manifest;
pub use store::{
    open_chunk, ChunkProps, ChunkRows, ChunkWriter, LocalChunk, SnapshotState, Stage, VerifyReport,
};

/// The size from which glibc maps a block afresh and unmaps it when freed:
/// `main` fixes `M_MMAP_THRESHOLD` here to keep the RSS near the heap in use.
/// Buffers that hot paths allocate over and over (Parquet pages, upload
/// blocks, LOAD DATA pieces) are sized under it, so that they are reused
/// from the heap instead of faulted in page by page each time.
pub const MMAP_THRESHOLD: usize = 1 << 20;

/// Schemas a snapshot never contains: the server's own, and replseed's
/// bookkeeping on load targets.
pub const SYSTEM_SCHEMAS: &[&str] = &[
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
    "replseed",
];

#[cfg(test)]
mod tests {
    #[test]
    fn default_ids_are_valid_and_distinct() {
        let a = super::default_snapshot_id();
        let b = super::default_snapshot_id();
        assert_ne!(a, b);
        assert!(super::layout::validate_snapshot_id(&a).is_ok(), "{a}");
        assert_eq!(a.len(), "20261124T210915Z-3fa85c".len());
    }
}

/// The current time as RFC 3339 UTC with seconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// A snapshot id made from the current UTC time and a random suffix,
/// `20261124T210915Z-3fa85c`: ids sort by time, and two extracts started in
/// the same second (a retry right after a refusal, two cron jobs) do not
/// collide. The suffix comes from the standard library's per-process random
/// hash keys, mixed with the time and the process id.
pub fn default_snapshot_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let time: String = now_rfc3339()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    format!("{time}-{:06x}", h.finish() & 0xff_ffff)
}

/// What an extract reports while it writes a snapshot, so that a loader can
/// follow it (`provision` loads chunks while the extract still produces
/// them). A snapshot is only published, and only loadable on its own, after
/// [`SnapshotEvent::Published`].
#[derive(Debug, Clone)]
pub enum SnapshotEvent {
    /// The cut is taken and the schema read: the manifest as it will be
    /// published, without chunks and totals.
    Started(std::sync::Arc<Manifest>),
    /// A chunk file is complete in the stage.
    Chunk {
        /// Database.
        database: String,
        /// Table.
        table: String,
        /// The chunk, as it will appear in the manifest.
        chunk: manifest::Chunk,
    },
    /// Every chunk of a table is in the stage.
    TableDone {
        /// Database.
        database: String,
        /// Table.
        table: String,
        /// How many chunks the table has.
        chunks: usize,
    },
    /// The manifest is published.
    Published(std::sync::Arc<Manifest>),
}
