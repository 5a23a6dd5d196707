//! Errors of the stage crate: each variant is a decision for the caller, and
//! its message names the thing (stage URL, snapshot, object key) and what to do.

/// An error accessing or interpreting a stage.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The `--stage` value could not be understood.
    #[error("invalid stage URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The stage (directory or bucket) cannot be reached or read.
    #[error("cannot access stage `{url}`: {reason}")]
    Unreachable {
        /// The stage URL.
        url: String,
        /// Cause and advice.
        reason: String,
    },
    /// A snapshot id with characters that are not allowed.
    #[error("invalid snapshot id `{id}`: use 1-128 characters of A-Z a-z 0-9 . _ - (not starting with . or -)")]
    InvalidSnapshotId {
        /// The id.
        id: String,
    },
    /// The snapshot is already published (create-only manifest).
    #[error("snapshot `{id}` already exists in {url}; choose another --snapshot id or delete it with `replseed snapshots delete {id}`")]
    SnapshotExists {
        /// Snapshot id.
        id: String,
        /// Stage URL.
        url: String,
    },
    /// Objects exist under the snapshot prefix but no manifest: a failed or running extract.
    #[error("snapshot `{id}` in {url} is incomplete (chunks without a manifest: an extract failed or is still running); remove it with `replseed snapshots delete {id}` or use another id")]
    SnapshotIncomplete {
        /// Snapshot id.
        id: String,
        /// Stage URL.
        url: String,
    },
    /// A load or an extract holds a lease on the snapshot.
    #[error("snapshot `{id}` in {url} is in use and was not deleted: {}; retry when it is done (a lease of a process that died expires within 10 minutes)", holders.join("; "))]
    SnapshotInUse {
        /// Snapshot id.
        id: String,
        /// Stage URL.
        url: String,
        /// Who holds it, one line each.
        holders: Vec<String>,
    },
    /// Another archiver wrote this segment number first.
    #[error("binlog segment {seq} in {url} was written by another archiver; run one `replseed archive` per stage")]
    SegmentExists {
        /// Segment number.
        seq: u64,
        /// Stage URL.
        url: String,
    },
    /// A binlog archive segment that must not be replayed: its signature,
    /// its place in the chain or its bytes do not match.
    #[error("binlog archive segment `{key}`: {reason}; it is refused, and nothing from it or after it is replayed")]
    SegmentRefused {
        /// Object key (the segment's manifest or data).
        key: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// No published snapshot with this id.
    #[error("no published snapshot `{id}` in {url}; `replseed snapshots list --stage {url}` shows what is there")]
    SnapshotNotFound {
        /// Snapshot id.
        id: String,
        /// Stage URL.
        url: String,
    },
    /// `latest` was asked for but nothing is published.
    #[error("no published snapshot in {url}; run `replseed extract` first")]
    NoSnapshots {
        /// Stage URL.
        url: String,
    },
    /// A manifest that cannot be read as this format.
    #[error("manifest `{key}` is not usable: {reason}")]
    BadManifest {
        /// Object key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A manifest's signature is missing or wrong (a stage key is set).
    #[error("manifest `{key}`: {reason}")]
    BadSignature {
        /// Object key.
        key: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A chunk whose bytes, checksum or row count do not match the manifest.
    #[error("chunk `{key}` is corrupt: {reason}; the snapshot must be re-extracted")]
    ChunkCorrupt {
        /// Object key.
        key: String,
        /// What did not match.
        reason: String,
    },
    /// An object-store operation failed.
    #[error("object `{key}` in {url}: {source}")]
    Store {
        /// Stage URL.
        url: String,
        /// Object key.
        key: String,
        /// Cause.
        #[source]
        source: object_store::Error,
    },
    /// Writing or reading Parquet failed.
    #[error("parquet `{key}`: {source}")]
    Parquet {
        /// Object key.
        key: String,
        /// Cause.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Local I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}
