//! What a replica asks for before its dump: the user variables its IO
//! thread sets, its server_id, and the start state they imply. Filled by
//! `session.rs`, read by `dump.rs`.

use crate::gtid::GtidState;

/// What the replica told the session before asking for the dump.
#[derive(Debug, Default)]
pub struct Requested {
    /// `@slave_connect_state`.
    pub connect_state: Option<String>,
    /// `@mariadb_slave_capability`.
    pub capability: u32,
    /// `@master_heartbeat_period`, in nanoseconds.
    pub heartbeat_ns: u64,
    /// `@slave_gtid_strict_mode`.
    pub strict: bool,
    /// `SET skip_replication=1`: events flagged to skip are not sent.
    pub skip_replication: bool,
    /// The replica's server_id from `COM_REGISTER_SLAVE`.
    pub replica_id: u32,
    /// `@slave_until_gtid` (`START SLAVE UNTIL master_gtid_pos=...`): the
    /// dump stops there (see `dump.rs`).
    pub until: Option<String>,
}

/// The GTID state the replica asked to start from.
pub fn requested_state(req: &Requested) -> Result<GtidState, String> {
    match &req.connect_state {
        Some(s) => GtidState::parse(s),
        None => Err("replseed serve serves GTID replication only: use CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos".into()),
    }
}
