//! The GTID of a snapshot: which GTID position a replica must start from so
//! that it applies exactly the transactions the snapshot does not contain.
//!
//! Every worker's snapshot reports the binlog offset of its cut
//! (`Binlog_snapshot_file`, `Binlog_snapshot_position`): MariaDB takes the
//! read view and that offset under one mutex, so the offset is exact. The
//! GTID is derived from that offset, not read beside it:
//!
//! * `BINLOG_GTID_POS(file, pos)` is the GTID state at exactly that offset
//!   (the master reads it from the binlog file itself). This is the choice.
//! * `@@gtid_binlog_pos`, read after the snapshots opened, would already
//!   include transactions committed after the cut: the replica would skip
//!   them.
//! * `@@gtid_current_pos` drops the GTIDs of other servers (other domains or
//!   server ids) when `log_slave_updates` is off.
//!
//! `@@gtid_binlog_state` is recorded beside it, for information only.

use mysql_async::{Conn, Value};
use replseed_db::{first, text, Server};

use crate::ExtractError;

/// The GTID position to replicate from, and the master's binlog state.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotGtid {
    /// `BINLOG_GTID_POS(file, pos)`: the replica's `gtid_slave_pos`. Empty
    /// when the master has never written a GTID.
    pub gtid: String,
    /// `@@GLOBAL.gtid_binlog_state` (informative).
    pub binlog_state: String,
}

/// Why the GTID is taken this way, recorded in the manifest.
pub const GTID_SOURCE: &str = "BINLOG_GTID_POS(Binlog_snapshot_file, Binlog_snapshot_position): the GTID state at exactly the snapshot's binlog offset. gtid_binlog_pos would be read later than the cut; gtid_current_pos drops GTIDs of other server_ids when log_slave_updates is off.";

/// The GTID of a snapshot cut at `file:pos` of `server`'s binlog.
pub async fn snapshot_gtid(
    conn: &mut Conn,
    server: &Server,
    file: &str,
    pos: u64,
) -> Result<SnapshotGtid, ExtractError> {
    let g = first(
        conn,
        server,
        "SELECT BINLOG_GTID_POS(?, ?), @@GLOBAL.gtid_binlog_state",
        (file, pos),
    )
    .await?;
    if matches!(g.first(), Some(Value::NULL) | None) {
        return Err(ExtractError::SourceConfig {
            server: server.name(),
            detail: format!("BINLOG_GTID_POS('{file}', {pos}) returned NULL: the binlog file was purged during the extract; retry"),
        });
    }
    Ok(SnapshotGtid {
        gtid: text(&g[0]),
        binlog_state: text(&g[1]),
    })
}
