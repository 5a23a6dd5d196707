//! [`Stage`]: where snapshots live (a local directory or an S3 prefix), and
//! opening it: parsing the stage URL, setting up the object store, the stage
//! key, and the object paths under the root. The operations on snapshots are
//! in [`snapshots`] (publish, list, read, verify, delete), those on chunk
//! files in [`chunks`] (writer, reader, Parquet settings, fetch).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreScheme};

use crate::error::StageError;

pub mod chunks;
pub mod snapshots;

pub use chunks::{open_chunk, ChunkProps, ChunkRows, ChunkWriter, LocalChunk};
pub use snapshots::{SnapshotEntry, SnapshotState, VerifyReport};

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

use crate::upload::Aborts;

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
}
