//! Object names inside a stage. No other crate builds object paths.
//!
//! ```text
//! <stage root>/<snapshot>/manifest.json
//! <stage root>/<snapshot>/accounts.json      (users, roles and grants; optional)
//! <stage root>/<snapshot>/data/<database>/<table>/<job>-<part>.parquet
//! <stage root>/.leases/<snapshot>/<holder>.json (who is reading or writing it)
//! ```
//!
//! Leases live beside the snapshots, not in them (a published snapshot does
//! not change), under a name no snapshot id can take (ids cannot start with
//! `.`).
//!
//! Database and table names are encoded so that any identifier MariaDB
//! accepts gives a key that every object store and filesystem keeps as is:
//! bytes outside `[A-Za-z0-9_.-]` (and a leading `.`) become `!XX`, the
//! upper-case hex of each UTF-8 byte (`!` is on S3's list of safe characters).

use crate::error::StageError;

/// File name of the manifest inside a snapshot folder.
pub const MANIFEST: &str = "manifest.json";

/// Checks a snapshot id: 1-128 characters of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn validate_snapshot_id(id: &str) -> Result<(), StageError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !id.starts_with('.')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(StageError::InvalidSnapshotId { id: id.to_string() })
    }
}

/// Encodes one identifier as a path segment.
pub fn encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("!{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('!');
    }
    out
}

/// Path of a snapshot's manifest, relative to the stage root.
pub fn manifest_path(snapshot: &str) -> String {
    format!("{snapshot}/{MANIFEST}")
}

/// Path of a snapshot's accounts (users, roles, grants), relative to the
/// stage root: an object of its own, so the data can be shared without it.
pub fn accounts_path(snapshot: &str) -> String {
    format!("{snapshot}/accounts.json")
}

/// Path of a chunk file, relative to the stage root. `job` orders the key
/// ranges of a table, `part` the files one job rolled over.
pub fn chunk_path(snapshot: &str, database: &str, table: &str, job: u32, part: u32) -> String {
    format!(
        "{snapshot}/data/{}/{}/{job:05}-{part:05}.parquet",
        encode_segment(database),
        encode_segment(table)
    )
}

/// Folder of a snapshot's leases, relative to the stage root.
pub fn leases_prefix(snapshot: &str) -> String {
    format!(".leases/{snapshot}")
}

/// Path of one lease on a snapshot, relative to the stage root.
pub fn lease_path(snapshot: &str, holder: &str) -> String {
    format!(".leases/{snapshot}/{}.json", encode_segment(holder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_snapshot_id("20261124T101500Z").is_ok());
        assert!(validate_snapshot_id("nightly-2026.11.24_a").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "-x", "a b", "é"] {
            assert!(validate_snapshot_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_encode_safely() {
        assert_eq!(encode_segment("orders"), "orders");
        assert_eq!(encode_segment("my table/x"), "my!20table!2Fx");
        assert_eq!(encode_segment(".x"), "!2Ex");
        assert_eq!(encode_segment("é"), "!C3!A9");
        assert_eq!(
            chunk_path("s1", "db", "t", 3, 1),
            "s1/data/db/t/00003-00001.parquet"
        );
    }
}
