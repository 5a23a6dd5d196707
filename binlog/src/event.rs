//! MariaDB binlog events as bytes: the common header, the few event bodies
//! replseed reads (GTID, GTID list, rotate, query, format description), the
//! events it writes itself (GTID list, rotate, heartbeat), and CRC32.
//!
//! Every other event (rows, table maps, compressed events, types newer
//! servers add) is kept as opaque bytes: the archive stores what the master
//! sent, and only a server replaying it to a replica needs to frame it.
//! Layouts are MariaDB's `sql/log_event.h`.

use crate::gtid::{Gtid, GtidState};

/// `fe 'bin'`: the first four bytes of every binlog file.
pub const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];
/// Length of the common event header.
pub const HEADER_LEN: usize = 19;

/// Event types replseed looks at.
pub mod types {
    /// QUERY_EVENT.
    pub const QUERY: u8 = 2;
    /// ROTATE_EVENT.
    pub const ROTATE: u8 = 4;
    /// FORMAT_DESCRIPTION_EVENT.
    pub const FORMAT_DESCRIPTION: u8 = 15;
    /// XID_EVENT: the commit of an InnoDB transaction.
    pub const XID: u8 = 16;
    /// HEARTBEAT_LOG_EVENT.
    pub const HEARTBEAT: u8 = 27;
    /// ANNOTATE_ROWS_EVENT.
    pub const ANNOTATE_ROWS: u8 = 160;
    /// BINLOG_CHECKPOINT_EVENT.
    pub const BINLOG_CHECKPOINT: u8 = 161;
    /// GTID_EVENT: starts an event group.
    pub const GTID: u8 = 162;
    /// GTID_LIST_EVENT.
    pub const GTID_LIST: u8 = 163;
    /// START_ENCRYPTION_EVENT.
    pub const START_ENCRYPTION: u8 = 164;
    /// QUERY_COMPRESSED_EVENT.
    pub const QUERY_COMPRESSED: u8 = 165;
}

/// Header flag: the binlog file is in use (not closed properly).
pub const FLAG_IN_USE: u16 = 0x0001;
/// Header flag: an event the master made up (fake rotate, fake GTID list).
pub const FLAG_ARTIFICIAL: u16 = 0x0020;
/// GTID flag: the group is one statement without BEGIN/COMMIT (DDL).
pub const FL_STANDALONE: u8 = 0x01;

/// A failure to make sense of an event's bytes.
#[derive(Debug, thiserror::Error)]
#[error("binlog event: {0}")]
pub struct EventError(pub String);

/// One event's bytes, header to checksum included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    bytes: Vec<u8>,
    /// Whether the last four bytes are a CRC32.
    checksummed: bool,
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl RawEvent {
    /// Wraps an event's bytes. `checksummed`: its format description says
    /// CRC32 (a format description event always ends in its algorithm byte
    /// and a checksum).
    pub fn new(bytes: Vec<u8>, checksummed: bool) -> Result<RawEvent, EventError> {
        if bytes.len() < HEADER_LEN + if checksummed { 4 } else { 0 } {
            return Err(EventError(format!("{} bytes is too short", bytes.len())));
        }
        let declared = u32le(&bytes, 9) as usize;
        if declared != bytes.len() {
            return Err(EventError(format!(
                "event_size says {declared} bytes, {} arrived",
                bytes.len()
            )));
        }
        Ok(RawEvent { bytes, checksummed })
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Event type.
    pub fn kind(&self) -> u8 {
        self.bytes[4]
    }

    /// `timestamp` of the header (seconds).
    pub fn timestamp(&self) -> u32 {
        u32le(&self.bytes, 0)
    }

    /// `server_id` of the header.
    pub fn server_id(&self) -> u32 {
        u32le(&self.bytes, 5)
    }

    /// `log_pos` of the header: where the next event starts in the
    /// master's file (0 for some made-up events; informative only).
    pub fn log_pos(&self) -> u32 {
        u32le(&self.bytes, 13)
    }

    /// Header flags.
    pub fn flags(&self) -> u16 {
        u16le(&self.bytes, 17)
    }

    /// Whether the master made this event up.
    pub fn is_artificial(&self) -> bool {
        self.flags() & FLAG_ARTIFICIAL != 0
    }

    /// Sets the header's `log_pos` (and the checksum with it).
    pub fn set_log_pos(&mut self, pos: u32) {
        self.bytes[13..17].copy_from_slice(&pos.to_le_bytes());
        if self.checksummed {
            let n = self.bytes.len();
            let crc = crc32fast::hash(&self.bytes[..n - 4]);
            self.bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
        }
    }

    /// The body, between the header and the checksum.
    pub fn body(&self) -> &[u8] {
        let end = self.bytes.len() - if self.checksummed { 4 } else { 0 };
        &self.bytes[HEADER_LEN..end]
    }

    /// Whether the stored CRC32 matches the bytes (true without a checksum).
    pub fn checksum_ok(&self) -> bool {
        if !self.checksummed {
            return true;
        }
        let n = self.bytes.len();
        crc32fast::hash(&self.bytes[..n - 4]) == u32le(&self.bytes, n - 4)
    }

    /// A GTID event's GTID and flags.
    pub fn gtid(&self) -> Result<(Gtid, u8), EventError> {
        let b = self.body();
        if self.kind() != types::GTID || b.len() < 13 {
            return Err(EventError("not a GTID event".into()));
        }
        Ok((
            Gtid {
                domain: u32le(b, 8),
                server: self.server_id(),
                seq: u64le(b, 0),
            },
            b[12],
        ))
    }

    /// A GTID list event's GTIDs.
    pub fn gtid_list(&self) -> Result<Vec<Gtid>, EventError> {
        let b = self.body();
        if self.kind() != types::GTID_LIST || b.len() < 4 {
            return Err(EventError("not a GTID list event".into()));
        }
        let n = (u32le(b, 0) & 0x0fff_ffff) as usize;
        if b.len() < 4 + n * 16 {
            return Err(EventError(format!("GTID list of {n} is truncated")));
        }
        Ok((0..n)
            .map(|i| {
                let at = 4 + i * 16;
                Gtid {
                    domain: u32le(b, at),
                    server: u32le(b, at + 4),
                    seq: u64le(b, at + 8),
                }
            })
            .collect())
    }

    /// A rotate event's next file name and position.
    pub fn rotate(&self) -> Result<(String, u64), EventError> {
        let b = self.body();
        if self.kind() != types::ROTATE || b.len() < 8 {
            return Err(EventError("not a rotate event".into()));
        }
        Ok((String::from_utf8_lossy(&b[8..]).into_owned(), u64le(b, 0)))
    }

    /// A query event's statement text (`None` for a compressed one).
    pub fn query_text(&self) -> Option<&[u8]> {
        let b = self.body();
        if self.kind() != types::QUERY || b.len() < 13 {
            return None;
        }
        let db_len = b[8] as usize;
        let status_len = u16le(b, 11) as usize;
        let start = 13 + status_len + db_len + 1;
        b.get(start..)
    }

    /// A format description's checksum algorithm (0 off, 1 CRC32).
    pub fn fde_checksum_alg(&self) -> Result<u8, EventError> {
        if self.kind() != types::FORMAT_DESCRIPTION {
            return Err(EventError("not a format description event".into()));
        }
        // The algorithm byte stands just before the (always present) checksum.
        let n = self.bytes.len();
        if n < HEADER_LEN + 57 + 5 {
            return Err(EventError("format description is truncated".into()));
        }
        Ok(self.bytes[n - 5])
    }

    /// A format description's server version string.
    pub fn fde_server_version(&self) -> String {
        let b = &self.bytes[HEADER_LEN..];
        let v = b.get(2..52).unwrap_or_default();
        let end = v.iter().position(|c| *c == 0).unwrap_or(v.len());
        String::from_utf8_lossy(&v[..end]).into_owned()
    }

    /// What makes two format descriptions equivalent: everything but the
    /// header and the creation time.
    pub fn fde_identity(&self) -> Vec<u8> {
        let b = &self.bytes[HEADER_LEN..self.bytes.len() - 4];
        let mut id = b[..b.len().min(52)].to_vec();
        id.extend_from_slice(b.get(56..).unwrap_or_default());
        id
    }
}

/// Builds an event: header, `body`, and a CRC32 when `checksummed`.
pub fn build(kind: u8, server_id: u32, flags: u16, body: &[u8], checksummed: bool) -> RawEvent {
    let len = HEADER_LEN + body.len() + if checksummed { 4 } else { 0 };
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&0u32.to_le_bytes()); // timestamp
    b.push(kind);
    b.extend_from_slice(&server_id.to_le_bytes());
    b.extend_from_slice(&(len as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // log_pos
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(body);
    if checksummed {
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
    }
    RawEvent {
        bytes: b,
        checksummed,
    }
}

/// A GTID list event holding `state` (the state a segment starts from).
pub fn gtid_list(state: &GtidState, server_id: u32, checksummed: bool) -> RawEvent {
    let gtids: Vec<&Gtid> = state.iter().collect();
    let mut body = Vec::with_capacity(4 + gtids.len() * 16);
    body.extend_from_slice(&(gtids.len() as u32).to_le_bytes());
    for g in gtids {
        body.extend_from_slice(&g.domain.to_le_bytes());
        body.extend_from_slice(&g.server.to_le_bytes());
        body.extend_from_slice(&g.seq.to_le_bytes());
    }
    build(types::GTID_LIST, server_id, 0, &body, checksummed)
}

/// A made-up rotate event naming `file` at `pos` (what a master sends first).
pub fn fake_rotate(file: &str, pos: u64, server_id: u32, checksummed: bool) -> RawEvent {
    let mut body = pos.to_le_bytes().to_vec();
    body.extend_from_slice(file.as_bytes());
    build(
        types::ROTATE,
        server_id,
        FLAG_ARTIFICIAL,
        &body,
        checksummed,
    )
}

/// A heartbeat naming the current file (what a master sends while idle).
pub fn heartbeat(file: &str, server_id: u32, checksummed: bool) -> RawEvent {
    build(
        types::HEARTBEAT,
        server_id,
        FLAG_ARTIFICIAL,
        file.as_bytes(),
        checksummed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_events_read_back() {
        let state = GtidState::parse("0-1-10,7-3-2").unwrap();
        let e = gtid_list(&state, 1, true);
        assert!(e.checksum_ok());
        let again = RawEvent::new(e.bytes().to_vec(), true).unwrap();
        assert_eq!(again.gtid_list().unwrap().len(), 2);
        assert_eq!(again.gtid_list().unwrap()[1].to_string(), "7-3-2");
        let r = fake_rotate("m-bin.000007", 4, 1, false);
        assert_eq!(r.rotate().unwrap(), ("m-bin.000007".to_string(), 4));
        assert!(r.is_artificial());
        let mut bad = e.bytes().to_vec();
        bad[20] ^= 1;
        assert!(!RawEvent::new(bad, true).unwrap().checksum_ok());
        assert!(RawEvent::new(vec![0; 10], false).is_err());
    }

    #[test]
    fn gtid_events_parse() {
        let mut body = 42u64.to_le_bytes().to_vec();
        body.extend_from_slice(&3u32.to_le_bytes());
        body.push(FL_STANDALONE);
        let e = build(types::GTID, 9, 0, &body, true);
        let (g, flags) = e.gtid().unwrap();
        assert_eq!(g.to_string(), "3-9-42");
        assert_eq!(flags & FL_STANDALONE, FL_STANDALONE);
    }
}
