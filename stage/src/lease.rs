//! Leases: who is reading (a load) or writing (an extract) a snapshot, so
//! that `snapshots delete` and `prune` do not remove it under them.
//!
//! A lease is a small object `.leases/<snapshot>/<holder>.json` holding its
//! holder, what it is doing and when it expires. The holder renews it while
//! it works and removes it when done; a holder that dies (SIGKILL, a lost
//! machine) leaves a lease that expires by itself, so nothing is blocked for
//! longer than [`TTL`]. Expiry is judged against the reader's clock, so the
//! TTL is long against clock skew between hosts.
//!
//! Deleting checks the leases before and after the manifest is removed: a
//! load that took its lease in between finds the manifest restored, and the
//! delete is refused (see [`crate::Stage::delete`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::error::StageError;
use crate::layout;
use crate::store::Stage;

/// How long a lease lives without being renewed.
pub const TTL: Duration = Duration::from_secs(600);
/// How often a holder renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(60);

/// The body of a lease object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseInfo {
    /// `host-pid-random`: unique per holder.
    pub holder: String,
    /// What the holder does, for messages (`load into 10.0.0.5:3306`).
    pub purpose: String,
    /// Seconds since the Unix epoch after which the lease is void.
    pub expires_at: u64,
}

impl LeaseInfo {
    /// Seconds left, or `None` once expired.
    pub fn remaining(&self) -> Option<u64> {
        self.expires_at.checked_sub(now()).filter(|s| *s > 0)
    }

    /// `load into 10.0.0.5:3306 (host-123-ab12cd, 540 s left)`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {} s left)",
            self.purpose,
            self.holder,
            self.remaining().unwrap_or(0)
        )
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `host-pid-random`: names a process in leases and archive segments.
pub fn holder_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        h.finish() & 0xff_ffff
    )
}

/// A lease held on a snapshot: renewed in the background until
/// [`Lease::release`] (or dropped, after which it expires).
#[derive(Debug)]
pub struct Lease {
    stage: Stage,
    key: String,
    renew: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// The lease object's key, relative to the stage root.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Stops renewing and removes the lease.
    pub async fn release(self) {
        self.renew.abort();
        let path = self.stage.object_path(&self.key);
        if let Err(e) = self.stage.store().delete(&path).await {
            if !matches!(e, object_store::Error::NotFound { .. }) {
                warn!(key = %self.key, error = %e, "could not remove the lease; it expires by itself");
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

impl Stage {
    async fn put_lease(&self, key: &str, info: &LeaseInfo) -> Result<(), StageError> {
        let body = serde_json::to_vec(info).expect("lease serializes");
        self.store()
            .put(&self.object_path(key), PutPayload::from(body))
            .await
            .map_err(|e| self.store_err(key, e))?;
        Ok(())
    }

    /// Takes a lease on `snapshot` for `purpose`, renewed every minute until
    /// released.
    pub async fn take_lease(&self, snapshot: &str, purpose: &str) -> Result<Lease, StageError> {
        layout::validate_snapshot_id(snapshot)?;
        let holder = holder_id();
        let key = layout::lease_path(snapshot, &holder);
        let info = LeaseInfo {
            holder,
            purpose: purpose.to_string(),
            expires_at: now() + TTL.as_secs(),
        };
        self.put_lease(&key, &info).await?;
        debug!(%key, "lease taken");
        let stage = self.clone();
        let k = key.clone();
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let info = LeaseInfo {
                    expires_at: now() + TTL.as_secs(),
                    ..info.clone()
                };
                if let Err(e) = stage.put_lease(&k, &info).await {
                    warn!(key = %k, error = %e, "could not renew the lease; trying again in a minute");
                }
            }
        });
        Ok(Lease {
            stage: self.clone(),
            key,
            renew,
        })
    }

    /// The leases on `snapshot` that have not expired.
    pub async fn leases(&self, snapshot: &str) -> Result<Vec<LeaseInfo>, StageError> {
        layout::validate_snapshot_id(snapshot)?;
        let prefix = layout::leases_prefix(snapshot);
        let metas: Vec<_> = match self
            .store()
            .list(Some(&self.object_path(&prefix)))
            .try_collect()
            .await
        {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(self.store_err(&prefix, e)),
        };
        let mut out = Vec::new();
        for m in metas {
            let body = match self.store().get(&m.location).await {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            };
            match body {
                Ok(b) => match serde_json::from_slice::<LeaseInfo>(&b) {
                    Ok(info) if info.remaining().is_some() => out.push(info),
                    Ok(_) => {
                        // Expired: its holder is gone. Tidy it away.
                        let _ = self.store().delete(&m.location).await;
                    }
                    Err(e) => {
                        warn!(key = %m.location, error = %e, "ignoring an unreadable lease")
                    }
                },
                // Released between the listing and the read.
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_err(m.location.as_ref(), e)),
            }
        }
        out.sort_by(|a, b| a.holder.cmp(&b.holder));
        Ok(out)
    }

    /// Fails with [`StageError::SnapshotInUse`] while `snapshot` has a live lease.
    pub async fn check_unleased(&self, snapshot: &str) -> Result<(), StageError> {
        let leases = self.leases(snapshot).await?;
        if leases.is_empty() {
            return Ok(());
        }
        Err(StageError::SnapshotInUse {
            id: snapshot.to_string(),
            url: self.url().to_string(),
            holders: leases.iter().map(LeaseInfo::describe).collect(),
        })
    }
}
