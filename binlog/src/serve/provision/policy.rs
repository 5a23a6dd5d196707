//! The GTID policy of a provisioning stream, in one place so it can be
//! swapped.
//!
//! A replica's IO thread takes no event group without a GTID, and its SQL
//! thread records every group's GTID in `gtid_slave_pos`. So:
//!
//! * Every made-up group (the guard, each CREATE, each chunk's rows, each
//!   object) carries a GTID in the reserved domain [`DOMAIN`], numbered
//!   1, 2, ... in stream order, with a server id derived from the snapshot
//!   id ([`server_for`]): the number of the last group the replica has
//!   committed says where a restarted stream goes on, and the server id
//!   says from which snapshot.
//! * The stream ends with one empty transaction (BEGIN, COMMIT) per GTID
//!   of the snapshot's position, carrying that very GTID: the replica's
//!   `gtid_slave_pos` then holds the snapshot's GTID in every master
//!   domain, and the dump from the archive goes on from there.
//!
//! What remains of the invented domain: one GTID, `DOMAIN-<server>-<n>`,
//! in the replica's `gtid_slave_pos` (and, with `log_slave_updates`, in
//! its binlog state). The master never writes that domain, so it is never
//! asked for again and conflicts with nothing.

use crate::gtid::{Gtid, GtidState};

/// The reserved replication domain of made-up groups ("rsed").
pub const DOMAIN: u32 = 0x7273_6564;

/// The server id of a snapshot's made-up groups: FNV-1a of its id, with
/// the top bit set so it is never a small server id a replica would have
/// (a replica drops events carrying its own server id).
pub fn server_for(snapshot: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in snapshot.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h | 0x8000_0000
}

/// The GTID of the `n`th made-up group (from 1).
pub fn made_up(snapshot: &str, n: u64) -> Gtid {
    Gtid {
        domain: DOMAIN,
        server: server_for(snapshot),
        seq: n,
    }
}

/// What a replica's connect state says about a provisioning from
/// `snapshot` whose stream has `groups` made-up groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// It has nothing of the master's domains: stream the made-up groups
    /// from number `from` (1 for a replica that has none of ours; past
    /// the last, only the snapshot's own GTIDs), then the archive.
    Stream {
        /// The first made-up group to send.
        from: u64,
    },
    /// It has some of the master's history: an ordinary dump.
    Dump,
    /// It was provisioned partly from another snapshot: the 1236 text.
    Foreign(String),
}

/// Decides from the replica's connect state.
pub fn progress(state: &GtidState, snapshot: &str, groups: u64) -> Progress {
    if state.iter().any(|g| g.domain != DOMAIN) {
        return Progress::Dump;
    }
    match state.get(DOMAIN) {
        None => Progress::Stream { from: 1 },
        Some(g) if g.server != server_for(snapshot) => Progress::Foreign(format!(
            "replseed serve: this replica was partly provisioned from another snapshot (its gtid_slave_pos has {g}); serve that snapshot again, or reset the replica"
        )),
        Some(g) if g.seq <= groups => Progress::Stream { from: g.seq + 1 },
        Some(g) => Progress::Foreign(format!(
            "replseed serve: this replica's gtid_slave_pos has {g}, past the {groups} groups of snapshot {snapshot}; reset the replica"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_states_decide() {
        let s = |t: &str| GtidState::parse(t).unwrap();
        assert_eq!(progress(&s(""), "a", 5), Progress::Stream { from: 1 });
        let mine = made_up("a", 3).to_string();
        assert_eq!(progress(&s(&mine), "a", 5), Progress::Stream { from: 4 });
        assert_eq!(progress(&s(&mine), "a", 3), Progress::Stream { from: 4 });
        assert!(matches!(progress(&s(&mine), "a", 2), Progress::Foreign(_)));
        assert!(matches!(progress(&s(&mine), "b", 5), Progress::Foreign(_)));
        assert_eq!(
            progress(&s(&format!("0-1-5,{mine}")), "a", 5),
            Progress::Dump
        );
        assert_eq!(progress(&s("0-1-5"), "a", 5), Progress::Dump);
        assert!(server_for("x") & 0x8000_0000 != 0);
    }
}
