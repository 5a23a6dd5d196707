//! What a replica asks for before its dump: the user variables its IO
//! thread sets, its server_id, and the start state they imply. Filled by
//! `session.rs`, read by `dump.rs`.

use std::collections::BTreeMap;

use crate::gtid::GtidState;

/// What the replica told the session before asking for the dump.
#[derive(Debug, Default, Clone)]
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
    /// `@slave_gtid_ignore_duplicates`.
    pub ignore_duplicates: bool,
    /// `@slave_until_gtid` (`START SLAVE UNTIL master_gtid_pos=...`): the
    /// dump stops there (see `dump.rs`).
    pub until: Option<String>,
    /// Every user variable set (`SET @name = ...`), by lower-case name.
    pub user_vars: BTreeMap<String, String>,
    /// Session variables set (`SET name = ...`, `SET @@session.name = ...`).
    pub session_vars: BTreeMap<String, String>,
    /// `COM_BINLOG_DUMP`'s master file name (empty: from the first).
    pub dump_file: String,
    /// `COM_BINLOG_DUMP`'s position in that file.
    pub dump_pos: u64,
    /// `COM_BINLOG_DUMP`'s flags (`BINLOG_DUMP_NON_BLOCK` = 1).
    pub dump_flags: u16,
}

impl Requested {
    /// Records a user variable, and what it means for the dump.
    pub fn set_user_var(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "master_heartbeat_period" => self.heartbeat_ns = value.parse().unwrap_or(0),
            "mariadb_slave_capability" => self.capability = value.parse().unwrap_or(0),
            "slave_connect_state" => self.connect_state = Some(value.to_string()),
            "slave_gtid_strict_mode" => self.strict = value == "1",
            "slave_gtid_ignore_duplicates" => self.ignore_duplicates = value == "1",
            "slave_until_gtid" => self.until = Some(value.to_string()).filter(|v| !v.is_empty()),
            _ => {}
        }
        self.user_vars.insert(name, value.to_string());
    }

    /// Reads `COM_BINLOG_DUMP`'s payload (after the command byte):
    /// `u32 pos, u16 flags, u32 server_id, file name` (not NUL-terminated).
    pub fn set_dump(&mut self, payload: &[u8]) {
        self.dump_pos = payload
            .first_chunk::<4>()
            .map_or(4, |b| u64::from(u32::from_le_bytes(*b)));
        self.dump_flags = payload
            .get(4..6)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
        if let Some(id) = payload.get(6..10) {
            if self.replica_id == 0 {
                self.replica_id = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
            }
        }
        let file = payload.get(10..).unwrap_or_default();
        let file = file.strip_suffix(&[0]).unwrap_or(file);
        self.dump_file = String::from_utf8_lossy(file).into_owned();
    }

    /// Whether the client asked for the dump to end at the archive's head
    /// (`BINLOG_DUMP_NON_BLOCK`) rather than wait for more.
    pub fn non_blocking(&self) -> bool {
        self.dump_flags & 1 != 0
    }
}

/// The GTID state the replica asked to start from.
pub fn requested_state(req: &Requested) -> Result<GtidState, String> {
    match &req.connect_state {
        Some(s) => GtidState::parse(s),
        None => Err("replseed serve serves GTID replication only: use CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos".into()),
    }
}
