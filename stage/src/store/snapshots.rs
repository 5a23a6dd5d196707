//! The snapshot lifecycle in a [`Stage`]: its state, the listing, reading
//! and publishing manifests, the small objects a snapshot holds besides its
//! chunks, verifying, and deleting.

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};

use super::chunks::open_chunk;
use super::Stage;
use crate::error::StageError;
use crate::layout;
use crate::manifest::{Manifest, StagedFile, FORMAT_NAME, FORMAT_VERSION};

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

impl Stage {
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
