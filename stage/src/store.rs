//! [`Stage`]: where snapshots live (a local directory or an S3 prefix), and
//! the operations on them: publish, list, read, verify, delete, and chunk I/O.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutMode, PutOptions, PutPayload,
};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;

use crate::error::StageError;
use crate::layout;
use crate::manifest::{Chunk, Manifest, StagedFile, FORMAT_NAME, FORMAT_VERSION};

/// A stage: the root under which snapshots are stored.
#[derive(Debug, Clone)]
pub struct Stage {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
    local_root: Option<PathBuf>,
    key: Option<crate::signing::StageKey>,
    /// Read signed manifests without a key (unverified, with a warning).
    allow_unsigned: bool,
    /// Aborts of unfinished uploads, spawned when a chunk writer is dropped.
    aborts: Aborts,
}

use crate::upload::{Aborts, UploadSink};

/// State of a snapshot id in a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotState {
    /// Manifest present.
    Published,
    /// Objects but no manifest.
    Incomplete,
    /// Nothing under the prefix.
    Absent,
}

/// One entry of [`Stage::list`].
#[derive(Debug, Clone)]
pub struct SnapshotEntry {
    /// Snapshot id.
    pub id: String,
    /// The manifest, if published and readable.
    pub manifest: Option<Manifest>,
    /// Why the manifest could not be used (unreadable or newer format).
    pub problem: Option<String>,
}

/// Result of [`Stage::verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Chunks checked.
    pub chunks: u64,
    /// Rows counted.
    pub rows: u64,
    /// Bytes read.
    pub bytes: u64,
    /// One line per bad chunk (key and reason).
    pub bad: Vec<String>,
    /// Objects under the snapshot not named by the manifest.
    pub unexpected: Vec<String>,
}

/// Where a stage URL points.
enum Location {
    S3 { parsed: url::Url, prefix: Path },
    Local(PathBuf),
}

/// Parses a stage URL: `file:///dir`, a plain path, or `s3://bucket/prefix`.
fn locate(url: &str) -> Result<Location, StageError> {
    let bad = |reason: &str| StageError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    if url.is_empty() {
        return Err(bad("empty"));
    }
    // A plain path is a local directory; anything else is a URL that
    // object_store parses (scheme, bucket, prefix).
    let parsed = if url.contains("://") {
        url::Url::parse(url).map_err(|e| bad(&e.to_string()))?
    } else {
        let abs = std::path::absolute(url).map_err(|e| bad(&e.to_string()))?;
        url::Url::from_file_path(&abs).map_err(|_| bad("not a usable path"))?
    };
    let unsupported = "supported stages are file:///path, a plain path, and s3://bucket/prefix";
    let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(|_| bad(unsupported))?;
    match scheme {
        ObjectStoreScheme::AmazonS3 if matches!(parsed.scheme(), "s3" | "s3a") => {
            if parsed.host_str().unwrap_or_default().is_empty() {
                return Err(bad("no bucket name; use s3://bucket/prefix"));
            }
            Ok(Location::S3 { parsed, prefix })
        }
        ObjectStoreScheme::Local => {
            let absolute = "file URLs need an absolute path: file:///path/to/stage";
            if parsed.host_str().is_some_and(|h| !h.is_empty()) {
                return Err(bad(absolute));
            }
            let dir = parsed.to_file_path().map_err(|_| bad(absolute))?;
            Ok(Location::Local(dir))
        }
        _ => Err(bad(unsupported)),
    }
}

impl Stage {
    /// Opens an existing stage from `file:///dir`, a plain path, or
    /// `s3://bucket/prefix` (endpoint and credentials from the `AWS_*`
    /// environment variables), for commands that read it: a local directory
    /// that does not exist is an error naming it, and nothing is created.
    pub fn open(url: &str) -> Result<Stage, StageError> {
        Self::open_with(url, false)
    }

    /// Opens a stage for a command that writes to it (extract, archive): a
    /// missing local directory is created, owner-only (0700).
    pub fn create(url: &str) -> Result<Stage, StageError> {
        Self::open_with(url, true)
    }

    /// Checks that `url` is a stage URL this tool understands, without
    /// opening it (for argument parsing).
    pub fn check_url(url: &str) -> Result<(), StageError> {
        locate(url).map(|_| ())
    }

    fn open_with(url: &str, create: bool) -> Result<Stage, StageError> {
        let bad = |reason: &str| StageError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        match locate(url)? {
            Location::S3 { parsed, prefix } => {
                let bucket = parsed.host_str().unwrap_or_default();
                // S3 verifies a SHA-256 of every upload (unless
                // AWS_CHECKSUM_ALGORITHM says otherwise); server-side
                // encryption comes from AWS_SERVER_SIDE_ENCRYPTION,
                // AWS_SSE_KMS_KEY_ID and AWS_SSE_BUCKET_KEY_ENABLED.
                let mut builder = AmazonS3Builder::from_env();
                if std::env::var_os("AWS_CHECKSUM_ALGORITHM").is_none() {
                    builder = builder.with_checksum_algorithm(object_store::aws::Checksum::SHA256);
                }
                let store = builder
                    .with_url(parsed.as_str())
                    .with_retry(object_store::RetryConfig {
                        backoff: Default::default(),
                        max_retries: 4,
                        retry_timeout: Duration::from_secs(60),
                    })
                    .build()
                    .map_err(|e| bad(&e.to_string()))?;
                Ok(Stage {
                    store: Arc::new(store),
                    url: format!("s3://{bucket}/{prefix}")
                        .trim_end_matches('/')
                        .to_string(),
                    root: prefix,
                    local_root: None,
                    key: None,
                    allow_unsigned: false,
                    aborts: Aborts::default(),
                })
            }
            Location::Local(dir) => Self::open_dir(url, dir, create),
        }
    }

    /// A local directory stage, created if missing and `create`.
    fn open_dir(url: &str, dir: PathBuf, create: bool) -> Result<Stage, StageError> {
        if !dir.exists() {
            if !create {
                return Err(StageError::Unreachable {
                    url: url.to_string(),
                    reason: format!(
                        "the directory {} does not exist; check --stage (an extract or an archive creates a stage)",
                        dir.display()
                    ),
                });
            }
            std::fs::create_dir_all(&dir).map_err(|e| StageError::Unreachable {
                url: url.to_string(),
                reason: format!("cannot create directory {}: {e}", dir.display()),
            })?;
            // A stage holds data and password hashes: owner only.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        if !dir.is_dir() {
            return Err(StageError::Unreachable {
                url: url.to_string(),
                reason: format!("{} is not a directory; check --stage", dir.display()),
            });
        }
        let dir = dir.canonicalize().map_err(|e| StageError::Unreachable {
            url: url.to_string(),
            reason: format!("{}: {e}", dir.display()),
        })?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| StageError::InvalidUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?
            .with_automatic_cleanup(true);
        Ok(Stage {
            store: Arc::new(store),
            root: Path::default(),
            url: format!("file://{}", dir.display()),
            local_root: Some(dir),
            key: None,
            allow_unsigned: false,
            aborts: Aborts::default(),
        })
    }

    /// The same stage with a key: manifests published are signed, and
    /// manifests read must carry a valid signature.
    pub fn with_key(mut self, key: Option<crate::signing::StageKey>) -> Stage {
        self.key = key;
        self
    }

    /// The same stage read without a key even where manifests are signed
    /// (`--allow-unsigned`): they are then used unverified, with a warning.
    /// Without it, a keyless reader refuses a signed manifest.
    pub fn allow_unsigned(mut self, allow: bool) -> Stage {
        self.allow_unsigned = allow;
        self
    }

    /// Whether a stage key was given (what is published is signed).
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// The stage key, if one was given.
    pub(crate) fn key(&self) -> Option<&crate::signing::StageKey> {
        self.key.as_ref()
    }

    /// A signed object (`key`, part of `what`) read without a stage key:
    /// refused, or with `--allow-unsigned` used unverified (warned once).
    pub(crate) fn unverified(&self, key: &str, what: &str) -> Result<(), StageError> {
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !self.allow_unsigned {
            return Err(StageError::BadSignature {
                key: key.to_string(),
                reason: format!("the {what} in {} is signed and no stage key was given: set REPLSEED_STAGE_KEY or --stage-key-file to verify it, or pass --allow-unsigned to use it unverified", self.url),
            });
        }
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(key, "the {what} in {} is signed but no stage key was given: using it UNVERIFIED (--allow-unsigned)", self.url);
        }
        Ok(())
    }

    /// The canonical URL of the stage.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The local directory of a `file://` stage.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    /// The object-store path of a path relative to the stage root.
    pub fn object_path(&self, rel: &str) -> Path {
        let mut p = self.root.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    /// The object store behind the stage.
    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub(crate) fn store_err(&self, key: &str, e: object_store::Error) -> StageError {
        match e {
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                StageError::Unreachable {
                    url: self.url.clone(),
                    reason: format!("access denied on `{key}` ({e}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy"),
                }
            }
            other => StageError::Store {
                url: self.url.clone(),
                key: key.to_string(),
                source: other,
            },
        }
    }

    /// Checks that the stage can be listed (bucket exists, credentials work).
    pub async fn check_access(&self) -> Result<(), StageError> {
        match self.store.list_with_delimiter(Some(&self.root)).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotFound { .. }) if self.local_root.is_some() => Ok(()),
            Err(e) => Err(StageError::Unreachable {
                url: self.url.clone(),
                reason: format!(
                    "{e}; check that the bucket exists, and AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"
                ),
            }),
        }
    }

    /// Whether a snapshot id is published, incomplete or absent.
    pub async fn state(&self, id: &str) -> Result<SnapshotState, StageError> {
        layout::validate_snapshot_id(id)?;
        let key = layout::manifest_path(id);
        match self.store.head(&self.object_path(&key)).await {
            Ok(_) => return Ok(SnapshotState::Published),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.store_err(&key, e)),
        }
        let prefix = self.object_path(id);
        let mut list = self.store.list(Some(&prefix));
        match list.next().await {
            None => Ok(SnapshotState::Absent),
            Some(Ok(_)) => Ok(SnapshotState::Incomplete),
            Some(Err(object_store::Error::NotFound { .. })) => Ok(SnapshotState::Absent),
            Some(Err(e)) => Err(self.store_err(id, e)),
        }
    }

    /// Lists snapshot folders: published ones with their manifest, and
    /// incomplete ones (no manifest), sorted by id.
    pub async fn list(&self) -> Result<Vec<SnapshotEntry>, StageError> {
        self.check_access().await?;
        let listing = match self.store.list_with_delimiter(Some(&self.root)).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(self.store_err("", e)),
        };
        let mut out = Vec::new();
        for p in listing.common_prefixes {
            let Some(id) = p.filename().map(|s| s.to_string()) else {
                continue;
            };
            if layout::validate_snapshot_id(&id).is_err() {
                continue;
            }
            match self.read_manifest(&id).await {
                Ok(m) => out.push(SnapshotEntry {
                    id,
                    manifest: Some(m),
                    problem: None,
                }),
                Err(StageError::SnapshotNotFound { .. }) => out.push(SnapshotEntry {
                    id,
                    manifest: None,
                    problem: None,
                }),
                Err(e) => out.push(SnapshotEntry {
                    id,
                    manifest: None,
                    problem: Some(e.to_string()),
                }),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Reads and checks a published manifest.
    pub async fn read_manifest(&self, id: &str) -> Result<Manifest, StageError> {
        layout::validate_snapshot_id(id)?;
        let key = layout::manifest_path(id);
        let bytes = match self.store.get(&self.object_path(&key)).await {
            Ok(r) => r.bytes().await.map_err(|e| self.store_err(&key, e))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StageError::SnapshotNotFound {
                    id: id.to_string(),
                    url: self.url.clone(),
                })
            }
            Err(e) => return Err(self.store_err(&key, e)),
        };
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| StageError::BadManifest {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        if m.format != FORMAT_NAME {
            return Err(StageError::BadManifest {
                key,
                reason: format!("format is `{}`, not {FORMAT_NAME}", m.format),
            });
        }
        if m.format_version > FORMAT_VERSION {
            return Err(StageError::BadManifest {
                key,
                reason: format!(
                    "format version {} is newer than this replseed reads ({FORMAT_VERSION}); upgrade replseed",
                    m.format_version
                ),
            });
        }
        if m.snapshot != id {
            return Err(StageError::BadManifest {
                key,
                reason: format!("it names snapshot `{}`", m.snapshot),
            });
        }
        match &self.key {
            Some(k) => k.verify(&m, &key)?,
            None if m.signature.is_some() => self.unverified(&key, "snapshot")?,
            None => {}
        }
        Ok(m)
    }

    /// Reads the manifest of `id`, or of the most recent published snapshot
    /// when `id` is `latest` (by `finished_at`, then id).
    pub async fn resolve(&self, id: &str) -> Result<Manifest, StageError> {
        if id != "latest" {
            return self.read_manifest(id).await;
        }
        let mut best: Option<Manifest> = None;
        for e in self.list().await? {
            if let Some(m) = e.manifest {
                let newer = match &best {
                    None => true,
                    Some(b) => {
                        (m.finished_at.as_str(), m.snapshot.as_str())
                            > (b.finished_at.as_str(), b.snapshot.as_str())
                    }
                };
                if newer {
                    best = Some(m);
                }
            }
        }
        best.ok_or_else(|| StageError::NoSnapshots {
            url: self.url.clone(),
        })
    }

    /// Publishes a manifest: the commit point of a snapshot. The put is
    /// create-only, so an existing snapshot is never overwritten.
    pub async fn publish(&self, manifest: &Manifest) -> Result<(), StageError> {
        let key = layout::manifest_path(&manifest.snapshot);
        let mut signed;
        let manifest = match &self.key {
            Some(k) => {
                signed = manifest.clone();
                k.sign(&mut signed);
                &signed
            }
            None => manifest,
        };
        let body = serde_json::to_vec_pretty(manifest).map_err(|e| StageError::BadManifest {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.object_path(&key), PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(StageError::SnapshotExists {
                id: manifest.snapshot.clone(),
                url: self.url.clone(),
            }),
            Err(e) => Err(self.store_err(&key, e)),
        }
    }

    /// Writes a small object of a snapshot (before it is published) and
    /// describes it for the manifest.
    pub async fn put_file(
        &self,
        rel: &str,
        bytes: Vec<u8>,
        count: u64,
    ) -> Result<StagedFile, StageError> {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let n = bytes.len() as u64;
        self.store
            .put(&self.object_path(rel), PutPayload::from(bytes))
            .await
            .map_err(|e| self.store_err(rel, e))?;
        Ok(StagedFile {
            path: rel.to_string(),
            bytes: n,
            sha256,
            count,
        })
    }

    /// Reads a small object of a snapshot and checks it against the manifest.
    pub async fn read_file(&self, f: &StagedFile) -> Result<Vec<u8>, StageError> {
        let r = self
            .store
            .get(&self.object_path(&f.path))
            .await
            .map_err(|e| self.store_err(&f.path, e))?;
        let bytes = r.bytes().await.map_err(|e| self.store_err(&f.path, e))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != f.sha256 {
            return Err(StageError::ChunkCorrupt {
                key: f.path.clone(),
                reason: format!("SHA-256 is {sha}, the manifest says {}", f.sha256),
            });
        }
        Ok(bytes.to_vec())
    }

    /// Deletes a snapshot: the manifest first (so it turns invisible at
    /// once), then every object under its prefix. Returns the objects deleted.
    /// Refused while the snapshot has a live lease ([`crate::lease`]).
    pub async fn delete(&self, id: &str) -> Result<u64, StageError> {
        self.remove(id, true).await
    }

    /// Removes an unpublished snapshot that the caller itself was writing
    /// (its own lease does not stop it).
    pub async fn discard(&self, id: &str) -> Result<u64, StageError> {
        self.remove(id, false).await
    }

    async fn remove(&self, id: &str, leased: bool) -> Result<u64, StageError> {
        layout::validate_snapshot_id(id)?;
        if self.state(id).await? == SnapshotState::Absent {
            return Err(StageError::SnapshotNotFound {
                id: id.to_string(),
                url: self.url.clone(),
            });
        }
        // Not while a load reads it or an extract writes it.
        if leased {
            self.check_unleased(id).await?;
        }
        let mkey = layout::manifest_path(id);
        let mpath = self.object_path(&mkey);
        let manifest = match self.store.get(&mpath).await {
            Ok(r) => Some(r.bytes().await.map_err(|e| self.store_err(&mkey, e))?),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(self.store_err(&mkey, e)),
        };
        let mut n = 0;
        match self.store.delete(&mpath).await {
            Ok(()) => n += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.store_err(&mkey, e)),
        }
        // A load that took its lease while the manifest was still there may
        // be reading it: put the manifest back and leave the snapshot alone.
        if let Err(in_use) = match leased {
            true => self.check_unleased(id).await,
            false => Ok(()),
        } {
            if let Some(body) = manifest {
                self.store
                    .put(&mpath, PutPayload::from(body))
                    .await
                    .map_err(|e| self.store_err(&mkey, e))?;
            }
            return Err(in_use);
        }
        let prefix = self.object_path(id);
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.store_err(id, e))?;
        for m in metas {
            match self.store.delete(&m.location).await {
                Ok(()) => n += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_err(m.location.as_ref(), e)),
            }
        }
        if let Some(root) = &self.local_root {
            let _ = std::fs::remove_dir_all(root.join(id));
        }
        Ok(n)
    }

    /// Starts writing a chunk file at `rel` (relative to the stage root).
    pub fn chunk_writer(
        &self,
        rel: &str,
        schema: SchemaRef,
        props: &ChunkProps,
    ) -> Result<ChunkWriter, StageError> {
        let sink = HashingWriter {
            inner: UploadSink::new(
                self.store.clone(),
                self.object_path(rel),
                self.aborts.clone(),
            ),
            state: Arc::new(Mutex::new((Sha256::new(), 0))),
        };
        let state = sink.state.clone();
        let writer =
            AsyncArrowWriter::try_new(sink, schema.clone(), Some(props.writer_properties(&schema)))
                .map_err(|e| StageError::Parquet {
                    key: rel.to_string(),
                    source: e,
                })?;
        Ok(ChunkWriter {
            writer,
            rel: rel.to_string(),
            rows: 0,
            state,
        })
    }

    /// Waits until the uploads of dropped, unfinished chunk writers are
    /// aborted (a failed or interrupted extract leaves no multipart upload
    /// behind, which S3 would keep and bill without listing it).
    pub async fn settle_uploads(&self) {
        let mut quiet_rounds = 0;
        while quiet_rounds < 3 {
            let pending: Vec<_> = std::mem::take(&mut *self.aborts.lock().expect("aborts"));
            if pending.is_empty() {
                quiet_rounds += 1;
                // Workers being cancelled drop their writers a moment later.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            quiet_rounds = 0;
            for h in pending {
                let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
            }
        }
    }

    /// Reads a chunk's bytes into a private file in `spool`, hashing them on
    /// the way, and checks size and SHA-256 against the manifest: the file
    /// returned holds exactly the bytes hashed. A `file://` stage's chunk is
    /// copied too, not used in place: whoever can write to the stage could
    /// change it between the hash and the load.
    pub async fn fetch_chunk(
        &self,
        chunk: &Chunk,
        spool: &std::path::Path,
    ) -> Result<LocalChunk, StageError> {
        let key = chunk.path.clone();
        let io = |what: &str, e: std::io::Error| {
            match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => StageError::Io {
                what: format!(
                    "{what} for chunk `{key}`: the spool directory {} is full (a chunk of {} bytes did not fit); free space there or give --spool-dir a larger disk, then run the same load again (it resumes)",
                    spool.display(),
                    chunk.bytes
                ),
                source: e,
            },
            _ => StageError::Io {
                what: format!("{what} for chunk `{key}`"),
                source: e,
            },
        }
        };
        let tmp = tempfile::Builder::new()
            .prefix("replseed-chunk-")
            .suffix(".parquet")
            .tempfile_in(spool)
            .map_err(|e| io("creating spool file", e))?;
        let spooled = tmp.reopen().map_err(|e| io("opening spool file", e))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        if let Some(root) = &self.local_root {
            let path = root.join(&chunk.path);
            let (h, n) = tokio::task::spawn_blocking(move || -> std::io::Result<(Sha256, u64)> {
                use std::io::{Read, Write};
                let mut f = std::fs::File::open(&path)?;
                let mut out = spooled;
                let mut h = Sha256::new();
                let mut n = 0u64;
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let r = f.read(&mut buf)?;
                    if r == 0 {
                        break;
                    }
                    h.update(&buf[..r]);
                    out.write_all(&buf[..r])?;
                    n += r as u64;
                }
                out.flush()?;
                Ok((h, n))
            })
            .await
            .expect("copy task")
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    StageError::ChunkCorrupt {
                        key: key.clone(),
                        reason: "the file is missing".into(),
                    }
                } else {
                    io("copying", e)
                }
            })?;
            hasher = h;
            size = n;
        } else {
            let mut file = tokio::fs::File::from_std(spooled);
            let obj = self.object_path(&chunk.path);
            let got = match self.store.get(&obj).await {
                Ok(g) => g,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(StageError::ChunkCorrupt {
                        key,
                        reason: "the object is missing".into(),
                    })
                }
                Err(e) => return Err(self.store_err(&key, e)),
            };
            let mut stream = got.into_stream();
            use tokio::io::AsyncWriteExt;
            while let Some(part) = stream.next().await {
                let part = part.map_err(|e| self.store_err(&key, e))?;
                hasher.update(&part);
                size += part.len() as u64;
                file.write_all(&part)
                    .await
                    .map_err(|e| io("writing spool file", e))?;
            }
            file.flush()
                .await
                .map_err(|e| io("writing spool file", e))?;
        }
        let local = LocalChunk {
            path: tmp.path().to_path_buf(),
            _tmp: tmp,
        };
        if size != chunk.bytes {
            return Err(StageError::ChunkCorrupt {
                key,
                reason: format!("{size} bytes, the manifest says {}", chunk.bytes),
            });
        }
        let digest = hex::encode(hasher.finalize());
        if digest != chunk.sha256 {
            return Err(StageError::ChunkCorrupt {
                key,
                reason: format!("SHA-256 is {digest}, the manifest says {}", chunk.sha256),
            });
        }
        Ok(local)
    }

    /// Re-reads every chunk of a snapshot: size, SHA-256, and a full decode
    /// counting rows. Bad chunks are listed in the report, not raised.
    pub async fn verify(
        &self,
        manifest: &Manifest,
        spool: &std::path::Path,
    ) -> Result<VerifyReport, StageError> {
        let mut report = VerifyReport::default();
        let mut expected = std::collections::HashSet::new();
        expected.insert(layout::manifest_path(&manifest.snapshot));
        for (_, t) in manifest.tables() {
            for c in &t.chunks {
                expected.insert(c.path.clone());
                report.chunks += 1;
                match self.fetch_chunk(c, spool).await {
                    Ok(local) => {
                        let path = local.path.clone();
                        let counted = tokio::task::spawn_blocking(move || count_rows(&path))
                            .await
                            .expect("count task");
                        match counted {
                            Ok(n) if n == c.rows => {
                                report.rows += n;
                                report.bytes += c.bytes;
                            }
                            Ok(n) => report.bad.push(format!(
                                "{}: {n} rows, the manifest says {}",
                                c.path, c.rows
                            )),
                            Err(e) => report
                                .bad
                                .push(format!("{}: unreadable Parquet: {e}", c.path)),
                        }
                    }
                    Err(StageError::ChunkCorrupt { key, reason }) => {
                        report.bad.push(format!("{key}: {reason}"))
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if let Some(f) = &manifest.accounts {
            expected.insert(f.path.clone());
            match self.read_file(f).await {
                Ok(_) => report.bytes += f.bytes,
                Err(StageError::ChunkCorrupt { key, reason }) => {
                    report.bad.push(format!("{key}: {reason}"))
                }
                Err(StageError::Store { key, source, .. }) => {
                    report.bad.push(format!("{key}: {source}"))
                }
                Err(e) => return Err(e),
            }
        }
        let prefix = self.object_path(&manifest.snapshot);
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.store_err(&manifest.snapshot, e))?;
        for m in metas {
            let rel = m
                .location
                .prefix_match(&self.root)
                .map(|parts| {
                    parts
                        .map(|p| p.as_ref().to_string())
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .unwrap_or_else(|| m.location.to_string());
            if !expected.contains(&rel) {
                report.unexpected.push(rel);
            }
        }
        Ok(report)
    }
}

fn count_rows(path: &std::path::Path) -> Result<u64, parquet::errors::ParquetError> {
    let (reader, _) = open_chunk(std::fs::File::open(path)?, 8192)?;
    let mut n = 0u64;
    for b in reader {
        n += b?.num_rows() as u64;
    }
    Ok(n)
}

/// Decoded bytes a reader of a chunk holds in one batch.
const READ_BATCH_BYTES: u64 = 8 << 20;

/// How wide a chunk's rows are, from its Parquet metadata, so that readers
/// size their batches in bytes: a batch of 4096 rows of 600 KiB blobs
/// would hold 2.4 GB.
#[derive(Debug, Clone, Copy)]
pub struct ChunkRows {
    /// Uncompressed bytes per row, in its widest row group (at least 1).
    pub row_bytes: u64,
}

/// Opens a chunk file for reading in batches of about 8 MiB decoded (at
/// most `max_rows` rows each); every reader of chunk files opens them here.
pub fn open_chunk(
    file: std::fs::File,
    max_rows: usize,
) -> Result<
    (
        parquet::arrow::arrow_reader::ParquetRecordBatchReader,
        ChunkRows,
    ),
    parquet::errors::ParquetError,
> {
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?;
    let width = ChunkRows::of(builder.metadata());
    let reader = builder
        .with_batch_size(width.batch_rows(max_rows))
        .build()?;
    Ok((reader, width))
}

impl ChunkRows {
    /// From a chunk file's metadata.
    fn of(meta: &parquet::file::metadata::ParquetMetaData) -> ChunkRows {
        let row_bytes = meta
            .row_groups()
            .iter()
            .filter(|g| g.num_rows() > 0)
            .map(|g| g.total_byte_size().max(0) as u64 / g.num_rows() as u64)
            .max()
            .unwrap_or(0)
            .max(1);
        ChunkRows { row_bytes }
    }

    /// Rows per decoded batch: about 8 MiB, at most `max`, at least 1.
    fn batch_rows(&self, max: usize) -> usize {
        ((READ_BATCH_BYTES / self.row_bytes) as usize).clamp(1, max.max(1))
    }
}

/// A chunk copied into the spool directory (deleted on drop).
#[derive(Debug)]
pub struct LocalChunk {
    /// Path of the Parquet file.
    pub path: PathBuf,
    _tmp: tempfile::NamedTempFile,
}

/// Parquet settings for chunks.
#[derive(Debug, Clone)]
pub struct ChunkProps {
    /// zstd level.
    pub zstd_level: i32,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Bytes per row group at most: a writer holds one row group in memory.
    pub row_group_bytes: usize,
}

impl Default for ChunkProps {
    fn default() -> Self {
        ChunkProps {
            zstd_level: 1,
            row_group_rows: 128 * 1024,
            row_group_bytes: 64 << 20,
        }
    }
}

impl ChunkProps {
    /// Row groups sized for `writers` writers at once: together they hold
    /// at most 64 MiB (8 to 32 MiB each), so that memory does not grow with
    /// the thread count (a loader reads one row group at a time too).
    pub fn for_writers(mut self, writers: usize) -> Self {
        self.row_group_bytes = ((64usize << 20) / writers.max(1)).clamp(8 << 20, 32 << 20);
        self
    }

    /// The compression as recorded in the manifest.
    pub fn compression_name(&self) -> String {
        format!("zstd({})", self.zstd_level)
    }

    fn writer_properties(&self, schema: &arrow::datatypes::Schema) -> WriterProperties {
        let mut b = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(self.zstd_level).unwrap_or_default(),
            ))
            .set_max_row_group_row_count(Some(self.row_group_rows))
            .set_max_row_group_bytes(Some(self.row_group_bytes))
            // Dictionary pages pay off for low-cardinality columns only (for
            // high-cardinality ones they cost time and, measured on
            // sysbench data, 3% more bytes).
            .set_dictionary_enabled(false)
            // Pages of 256 KiB instead of parquet's 1 MiB: their buffers stay
            // under MMAP_THRESHOLD. Measured on 4M sysbench rows: extract CPU
            // 9.5 -> 8.2 s (system time 1.9 -> 0.9 s), 0.4% more bytes.
            .set_data_page_size_limit(crate::MMAP_THRESHOLD / 4)
            .set_created_by(format!("replseed {}", env!("CARGO_PKG_VERSION")));
        for f in schema.fields() {
            let kind = f
                .metadata()
                .get(crate::types::META_KIND)
                .map(|s| s.as_str());
            if matches!(kind, Some("enum" | "set" | "year" | "bit")) {
                b = b.set_column_dictionary_enabled(
                    parquet::schema::types::ColumnPath::from(f.name().as_str()),
                    true,
                );
            }
        }
        b.build()
    }
}

/// Writes one chunk file, hashing its bytes on the way to the store.
pub struct ChunkWriter {
    writer: AsyncArrowWriter<HashingWriter>,
    rel: String,
    rows: u64,
    state: Arc<Mutex<(Sha256, u64)>>,
}

impl std::fmt::Debug for ChunkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkWriter")
            .field("path", &self.rel)
            .field("rows", &self.rows)
            .finish()
    }
}

impl ChunkWriter {
    /// Appends a batch.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), StageError> {
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .await
            .map_err(|e| StageError::Parquet {
                key: self.rel.clone(),
                source: e,
            })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes written so far, the buffered row group included (approximate).
    pub fn bytes(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    /// Finishes the file and returns its manifest entry (without key range).
    pub async fn finish(self) -> Result<Chunk, StageError> {
        let rel = self.rel.clone();
        self.writer.close().await.map_err(|e| StageError::Parquet {
            key: rel.clone(),
            source: e,
        })?;
        let (hasher, n) = {
            let mut g = self.state.lock().expect("hash state");
            std::mem::replace(&mut *g, (Sha256::new(), 0))
        };
        Ok(Chunk {
            path: rel,
            rows: self.rows,
            bytes: n,
            sha256: hex::encode(hasher.finalize()),
            key_range: None,
        })
    }
}

/// AsyncWrite adapter that hashes and counts what it passes on.
struct HashingWriter {
    inner: UploadSink,
    state: Arc<Mutex<(Sha256, u64)>>,
}

impl AsyncWrite for HashingWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                let mut g = this.state.lock().expect("hash state");
                g.0.update(&buf[..n]);
                g.1 += n as u64;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
