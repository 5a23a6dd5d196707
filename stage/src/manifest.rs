//! The snapshot manifest: the one document that makes a snapshot exist.
//!
//! It is written last, with a create-only put (see [`crate::Stage::publish`]);
//! a snapshot prefix without it is incomplete and invisible to `load`.
//! `docs/FORMAT.md` documents every field.

use serde::{Deserialize, Serialize};

use crate::types::ColumnSpec;

/// Name of the format, stored in every manifest.
pub const FORMAT_NAME: &str = "replseed-snapshot";
/// Version of the format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A published snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Format version; readers refuse versions they do not know.
    pub format_version: u32,
    /// Snapshot id (the folder name under the stage root).
    pub snapshot: String,
    /// The replseed version that wrote it.
    pub tool_version: String,
    /// When the consistent snapshot was opened (RFC 3339, UTC).
    pub started_at: String,
    /// When the manifest was written (RFC 3339, UTC).
    pub finished_at: String,
    /// The master the snapshot was taken from.
    pub source: SourceInfo,
    /// The binlog position and GTID that match the data exactly.
    pub position: Position,
    /// How consistency was obtained, and what it cost the master.
    pub consistency: Consistency,
    /// Writer settings.
    pub settings: Settings,
    /// Databases in creation order, each with its objects.
    pub databases: Vec<Database>,
    /// The databases the extract was limited to (`--databases`): a replica
    /// of such a subset replicates only them (replication filters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<Vec<String>>,
    /// The master's accounts, roles and grants, staged in their own object
    /// (absent when the extract ran with `--no-accounts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<StagedFile>,
    /// Totals.
    pub totals: Totals,
    /// `hmac-sha256:<hex>` of the manifest without this field, when the
    /// extract had a stage key (see `signing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// A staged object other than a chunk, checked like one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StagedFile {
    /// Path relative to the stage root.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// How many entries it holds (accounts and roles).
    pub count: u64,
}

/// The source server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceInfo {
    /// `SELECT VERSION()`.
    pub version: String,
    /// `@@server_id`.
    pub server_id: u32,
    /// `@@hostname`.
    pub hostname: String,
    /// `@@port`.
    pub port: u16,
    /// `@@gtid_domain_id`.
    pub gtid_domain_id: u32,
    /// `@@lower_case_table_names`.
    pub lower_case_table_names: u32,
    /// `@@sql_mode` of the server (global).
    pub sql_mode: String,
    /// `@@character_set_server` / `@@collation_server`.
    pub charset: String,
    /// Collation of the server.
    pub collation: String,
    /// Where the snapshot was taken: `None` on a master; on a replica, the
    /// `host:port` of each master it replicates from. The position's GTID is
    /// then the replica's `gtid_slave_pos` (the master's transactions it
    /// had applied), and catch-up connects to the master by GTID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<Vec<String>>,
}

/// Replication coordinates of the snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Position {
    /// `Binlog_snapshot_file` of every worker's snapshot.
    pub binlog_file: String,
    /// `Binlog_snapshot_position` of every worker's snapshot.
    pub binlog_pos: u64,
    /// `BINLOG_GTID_POS(binlog_file, binlog_pos)`: the GTID position to
    /// replicate from (`gtid_slave_pos` on the replica). Empty when the
    /// master has never written a GTID. For a snapshot taken from a replica:
    /// the replica's `gtid_slave_pos` at the cut (`binlog_file`/`binlog_pos`
    /// are then the replica's own, possibly empty).
    pub gtid: String,
    /// How `gtid` was obtained, and why that source (see FORMAT.md).
    pub gtid_source: String,
    /// `@@gtid_binlog_state` read while the snapshot was being opened (informative).
    pub gtid_binlog_state: String,
}

/// Consistency evidence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Consistency {
    /// `lock-free` (workers agreed without blocking commits) or `ftwrl`.
    pub method: String,
    /// How many attempts the lock-free snapshot open needed.
    pub attempts: u32,
    /// Number of worker snapshots; all reported the same position.
    pub workers: u32,
    /// Every worker's `file:pos`, all equal (the proof of one cut).
    pub worker_positions: Vec<String>,
    /// Milliseconds commits were blocked on the master (0 for lock-free).
    pub commit_blocked_ms: u64,
    /// Milliseconds DDL (and writes to non-transactional tables) were
    /// blocked by `BACKUP STAGE BLOCK_DDL`: the whole extract.
    pub ddl_blocked_ms: u64,
    /// Non-transactional tables (`db.table (engine)`), copied while their
    /// writes were blocked.
    pub non_transactional_tables: Vec<String>,
}

/// Settings the extract ran with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    /// Maximum rows per chunk file.
    pub chunk_rows: u64,
    /// Maximum compressed bytes per chunk file (approximate).
    pub chunk_bytes: u64,
    /// Parquet compression, e.g. `zstd(1)`.
    pub compression: String,
    /// Worker count.
    pub threads: u32,
}

/// Totals over the snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    /// Number of tables with data (sequences excluded).
    pub tables: u64,
    /// Rows over all tables (history rows of versioned tables included).
    pub rows: u64,
    /// Bytes of all chunk files.
    pub bytes: u64,
    /// Number of chunk files.
    pub chunks: u64,
}

/// One database and its objects.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Database {
    /// Name.
    pub name: String,
    /// `SHOW CREATE DATABASE` output.
    pub create_sql: String,
    /// Default character set.
    pub charset: String,
    /// Default collation.
    pub collation: String,
    /// Base tables (system-versioned included), in name order.
    pub tables: Vec<Table>,
    /// Sequences with their state.
    pub sequences: Vec<Sequence>,
    /// Views, in name order (the loader creates them in rounds until every
    /// view's dependencies exist).
    pub views: Vec<Object>,
    /// Triggers (created after the data).
    pub triggers: Vec<Object>,
    /// Stored procedures and functions.
    pub routines: Vec<Object>,
    /// Events.
    pub events: Vec<Object>,
}

/// A schema object created from its DDL.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Object {
    /// Object name.
    pub name: String,
    /// Kind: `view`, `trigger`, `procedure`, `function`, `event`.
    pub kind: String,
    /// `SHOW CREATE ...` output, the object definition. Read with binary
    /// results: these are the bytes the object was created with, in its
    /// `character_set_client`. When they are not valid UTF-8 (a latin1
    /// client, say), this is a lossy rendering for people and the bytes are
    /// in `create_sql_hex`.
    pub create_sql: String,
    /// The definition's bytes, hex, when they are not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_sql_hex: Option<String>,
    /// `sql_mode` the object was created with (triggers, routines, events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_mode: Option<String>,
    /// Client character set the object was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub character_set_client: Option<String>,
    /// Connection collation the object was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation_connection: Option<String>,
    /// Database collation the object was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_collation: Option<String>,
    /// For triggers: the table they are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// For events: the time zone they were created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// A sequence and its state (the row of the sequence table).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sequence {
    /// Name.
    pub name: String,
    /// `SHOW CREATE SEQUENCE` output.
    pub create_sql: String,
    /// The sequence row: `next_not_cached_value, minimum_value, maximum_value,
    /// start_value, increment, cache_size, cycle_option, cycle_count` as text.
    pub row: Vec<String>,
}

/// A table with data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Table {
    /// Name.
    pub name: String,
    /// Storage engine.
    pub engine: String,
    /// Whether the engine is transactional (InnoDB); others were copied
    /// while writes to them were blocked.
    pub transactional: bool,
    /// `SHOW CREATE TABLE` output, unchanged.
    pub create_sql: String,
    /// Whether the table is system-versioned (history rows are included).
    pub system_versioned: bool,
    /// Columns stored in the chunks, in chunk-column order. Generated
    /// columns are not stored (the replica recomputes them).
    pub columns: Vec<ColumnSpec>,
    /// Every column of the table in table order, generated ones included.
    pub all_columns: Vec<String>,
    /// Primary-key columns (empty if none).
    pub primary_key: Vec<String>,
    /// Whether the table takes part in a foreign key (as child or parent).
    pub has_foreign_keys: bool,
    /// Rows in the snapshot.
    pub rows: u64,
    /// Bytes over all chunks.
    pub bytes: u64,
    /// Chunk files in key order.
    pub chunks: Vec<Chunk>,
}

/// One Parquet chunk file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Chunk {
    /// Path relative to the stage root, e.g.
    /// `SNAP/data/shop/orders/000001.parquet`.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// SHA-256 of the file bytes, hex.
    pub sha256: String,
    /// First and last primary-key values in the file, if the table has a
    /// key: each value as Arrow displays it (the raw sidecar text for a
    /// zero date), `null` for NULL. Informative; the loader does not use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_range: Option<KeyRange>,
}

/// Key range of a chunk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRange {
    /// Key of the first row.
    pub first: Vec<Option<String>>,
    /// Key of the last row.
    pub last: Vec<Option<String>>,
}

impl Object {
    /// The definition's bytes, exactly as the master has them.
    pub fn create_bytes(&self) -> Result<Vec<u8>, String> {
        match &self.create_sql_hex {
            Some(h) => hex::decode(h).map_err(|e| {
                format!("the manifest's create_sql_hex of {} {} is not hex ({e}); the snapshot is damaged", self.kind, self.name)
            }),
            None => Ok(self.create_sql.as_bytes().to_vec()),
        }
    }

    /// Sets the definition from its bytes (see [`Object::create_sql`]).
    pub fn set_create_bytes(&mut self, bytes: Vec<u8>) {
        match String::from_utf8(bytes) {
            Ok(text) => {
                self.create_sql = text;
                self.create_sql_hex = None;
            }
            Err(e) => {
                let bytes = e.into_bytes();
                self.create_sql = String::from_utf8_lossy(&bytes).into_owned();
                self.create_sql_hex = Some(hex::encode(&bytes));
            }
        }
    }
}

impl Manifest {
    /// Whether `d` is a database outside the subset (`--databases`): only its
    /// definition, routines and events are staged, no tables, views,
    /// triggers or sequences. A subset replica holds it so that the
    /// statements the master logs about its routines, events and itself
    /// apply: MariaDB's table filters pass them by (see catchup's
    /// `filters.rs`).
    pub fn outside_subset(&self, d: &Database) -> bool {
        self.subset.as_ref().is_some_and(|s| !s.contains(&d.name))
    }

    /// Iterates over every table of every database.
    pub fn tables(&self) -> impl Iterator<Item = (&Database, &Table)> {
        self.databases
            .iter()
            .flat_map(|d| d.tables.iter().map(move |t| (d, t)))
    }
}

/// An enabled event's `SHOW CREATE EVENT` text with its status made
/// `DISABLE ON SLAVE`, as MariaDB's replication marks the events it
/// replicates: a replica must not run the master's events itself, not even
/// between its creation and an `ALTER`. The status follows `ON COMPLETION
/// [NOT] PRESERVE`, which `SHOW CREATE EVENT` always prints.
pub fn disable_on_slave(mut sql: Vec<u8>) -> Vec<u8> {
    let needle = b" PRESERVE ENABLE";
    if let Some(at) = sql.windows(needle.len()).position(|w| w == needle) {
        let end = at + needle.len();
        sql.splice(
            at + b" PRESERVE ".len()..end,
            b"DISABLE ON SLAVE".iter().copied(),
        );
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_events_are_created_disabled_on_the_replica() {
        let sql = b"CREATE DEFINER=`root`@`localhost` EVENT `e` ON SCHEDULE EVERY 1 HOUR STARTS '2026-01-01 00:00:00' ON COMPLETION NOT PRESERVE ENABLE COMMENT ' PRESERVE ENABLE' DO SELECT 1".to_vec();
        let out = String::from_utf8(disable_on_slave(sql)).unwrap();
        assert_eq!(out, "CREATE DEFINER=`root`@`localhost` EVENT `e` ON SCHEDULE EVERY 1 HOUR STARTS '2026-01-01 00:00:00' ON COMPLETION NOT PRESERVE DISABLE ON SLAVE COMMENT ' PRESERVE ENABLE' DO SELECT 1");
        let off = b"CREATE EVENT `e` ON SCHEDULE AT '2026-01-01 00:00:00' ON COMPLETION PRESERVE DISABLE DO SELECT 1".to_vec();
        assert_eq!(disable_on_slave(off.clone()), off);
    }
}
