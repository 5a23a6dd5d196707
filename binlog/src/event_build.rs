//! Events replseed makes up from scratch (not provisioning-specific): a
//! GTID event, a Query event with its session context in status
//! variables, an XID event. Layouts are MariaDB 10.11's
//! (`Gtid_log_event::write`, `Query_log_event::write`, `Xid_log_event`).

use crate::event::{build, types, RawEvent};
use crate::gtid::Gtid;

/// GTID flag: the group is one statement without BEGIN (DDL).
pub const FL_STANDALONE: u8 = 0x01;
/// GTID flag: the group is transactional (InnoDB rows).
pub const FL_TRANSACTIONAL: u8 = 0x04;
/// GTID flag: the group may be applied in parallel with others.
pub const FL_ALLOW_PARALLEL: u8 = 0x08;
/// GTID flag: the group is DDL.
pub const FL_DDL: u8 = 0x20;

/// `OPTION_NO_FOREIGN_KEY_CHECKS` in a Query event's `flags2`.
pub const OPTION_NO_FOREIGN_KEY_CHECKS: u32 = 1 << 26;

/// A GTID event opening the group of `g` (its server id is `g.server`).
pub fn gtid(g: &Gtid, flags: u8, checksummed: bool) -> RawEvent {
    let mut body = Vec::with_capacity(19);
    body.extend_from_slice(&g.seq.to_le_bytes());
    body.extend_from_slice(&g.domain.to_le_bytes());
    body.push(flags);
    body.extend_from_slice(&[0; 6]);
    build(types::GTID, g.server, 0, &body, checksummed)
}

/// An XID event committing a transaction.
pub fn xid(server_id: u32, xid: u64, checksummed: bool) -> RawEvent {
    build(types::XID, server_id, 0, &xid.to_le_bytes(), checksummed)
}

/// The session a Query event's statement runs in on the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryContext {
    /// `flags2` (e.g. [`OPTION_NO_FOREIGN_KEY_CHECKS`]).
    pub flags2: u32,
    /// `sql_mode` as MariaDB's bit mask ([`sql_mode_bits`]).
    pub sql_mode: u64,
    /// Collation ids of `character_set_client`, `collation_connection`
    /// and `collation_server`.
    pub charset: [u16; 3],
    /// `time_zone`, when not the replica's.
    pub time_zone: Option<String>,
}

/// `utf8mb4_general_ci`.
pub const UTF8MB4_GENERAL_CI: u16 = 45;

impl Default for QueryContext {
    /// `SET NAMES utf8mb4`, foreign key checks off, sql_mode empty.
    fn default() -> Self {
        QueryContext {
            flags2: OPTION_NO_FOREIGN_KEY_CHECKS,
            sql_mode: 0,
            charset: [UTF8MB4_GENERAL_CI; 3],
            time_zone: None,
        }
    }
}

/// MariaDB's `sql_mode` names in bit order (`sql_mode_names`, sys_vars.cc).
const SQL_MODE_NAMES: &[&str] = &[
    "REAL_AS_FLOAT",
    "PIPES_AS_CONCAT",
    "ANSI_QUOTES",
    "IGNORE_SPACE",
    "IGNORE_BAD_TABLE_OPTIONS",
    "ONLY_FULL_GROUP_BY",
    "NO_UNSIGNED_SUBTRACTION",
    "NO_DIR_IN_CREATE",
    "POSTGRESQL",
    "ORACLE",
    "MSSQL",
    "DB2",
    "MAXDB",
    "NO_KEY_OPTIONS",
    "NO_TABLE_OPTIONS",
    "NO_FIELD_OPTIONS",
    "MYSQL323",
    "MYSQL40",
    "ANSI",
    "NO_AUTO_VALUE_ON_ZERO",
    "NO_BACKSLASH_ESCAPES",
    "STRICT_TRANS_TABLES",
    "STRICT_ALL_TABLES",
    "NO_ZERO_IN_DATE",
    "NO_ZERO_DATE",
    "ALLOW_INVALID_DATES",
    "ERROR_FOR_DIVISION_BY_ZERO",
    "TRADITIONAL",
    "NO_AUTO_CREATE_USER",
    "HIGH_NOT_PRECEDENCE",
    "NO_ENGINE_SUBSTITUTION",
    "PAD_CHAR_TO_FULL_LENGTH",
    "EMPTY_STRING_IS_NULL",
    "SIMULTANEOUS_ASSIGNMENT",
    "TIME_ROUND_FRACTIONAL",
];

/// A `sql_mode` text (`A,B,...`, as `@@sql_mode` prints it) as the bit mask
/// a Query event carries; `Err` names a mode this table does not know.
pub fn sql_mode_bits(modes: &str) -> Result<u64, String> {
    let mut bits = 0u64;
    for m in modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let i = SQL_MODE_NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(m))
            .ok_or_else(|| format!("unknown sql_mode `{m}`"))?;
        bits |= 1 << i;
    }
    Ok(bits)
}

/// The id of a collation by name; `Err` names an unknown one.
pub fn collation_id(name: &str) -> Result<u16, String> {
    use mysql_common::collations::{Collation, CollationId};
    // MariaDB 10.6+ says utf8mb3 where the table says utf8.
    let alias = name.replacen("utf8mb3_", "utf8_", 1);
    for n in [name, alias.as_str()] {
        let id = CollationId::from(n);
        if id != CollationId::UNKNOWN_COLLATION_ID {
            return Ok(Collation::resolve(id).id() as u16);
        }
    }
    Err(format!("unknown collation `{name}`"))
}

/// The id of a character set's default collation; `Err` names an unknown one.
pub fn charset_default_collation(charset: &str) -> Result<u16, String> {
    use mysql_common::collations::{Collation, CollationId};
    let alias = if charset.eq_ignore_ascii_case("utf8mb3") {
        "utf8"
    } else {
        charset
    };
    // Ids from 255 on are MySQL 8's (its utf8mb4 default among them), not
    // MariaDB's; MariaDB's utf8mb4 default is utf8mb4_general_ci, which
    // the MySQL 8 table does not flag as default.
    (1u16..255)
        .map(|i| Collation::resolve(CollationId::from(i)))
        .find(|c| {
            c.id() != CollationId::UNKNOWN_COLLATION_ID
                && c.is_default()
                && (c.charset().eq_ignore_ascii_case(charset)
                    || c.charset().eq_ignore_ascii_case(alias))
        })
        .map(|c| c.id() as u16)
        .or_else(|| collation_id(&format!("{charset}_general_ci")).ok())
        .ok_or_else(|| format!("unknown character set `{charset}`"))
}

/// A Query event running `sql` with `db` as its default database (empty:
/// none) in the session `ctx` describes.
pub fn query(
    server_id: u32,
    db: &str,
    sql: &[u8],
    ctx: &QueryContext,
    checksummed: bool,
) -> RawEvent {
    let mut status = Vec::with_capacity(40);
    status.push(0); // Q_FLAGS2_CODE
    status.extend_from_slice(&ctx.flags2.to_le_bytes());
    status.push(1); // Q_SQL_MODE_CODE
    status.extend_from_slice(&ctx.sql_mode.to_le_bytes());
    status.push(6); // Q_CATALOG_NZ_CODE
    status.push(3);
    status.extend_from_slice(b"std");
    status.push(4); // Q_CHARSET_CODE
    for c in ctx.charset {
        status.extend_from_slice(&c.to_le_bytes());
    }
    if let Some(tz) = &ctx.time_zone {
        status.push(5); // Q_TIME_ZONE_CODE
        status.push(tz.len().min(255) as u8);
        status.extend_from_slice(&tz.as_bytes()[..tz.len().min(255)]);
    }
    let db = &db.as_bytes()[..db.len().min(255)];
    let mut body = Vec::with_capacity(13 + status.len() + db.len() + 1 + sql.len());
    body.extend_from_slice(&0u32.to_le_bytes()); // thread id
    body.extend_from_slice(&0u32.to_le_bytes()); // exec time
    body.push(db.len() as u8);
    body.extend_from_slice(&0u16.to_le_bytes()); // error code
    body.extend_from_slice(&(status.len() as u16).to_le_bytes());
    body.extend_from_slice(&status);
    body.extend_from_slice(db);
    body.push(0);
    body.extend_from_slice(sql);
    build(types::QUERY, server_id, 0, &body, checksummed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_events_read_back() {
        let g = Gtid {
            domain: 7,
            server: 3,
            seq: 42,
        };
        let e = gtid(&g, FL_STANDALONE | FL_DDL, true);
        assert_eq!(e.gtid().unwrap(), (g, FL_STANDALONE | FL_DDL));
        let q = query(
            3,
            "d",
            b"CREATE TABLE t (a INT)",
            &QueryContext::default(),
            true,
        );
        assert!(q.checksum_ok());
        assert_eq!(q.query_text().unwrap(), b"CREATE TABLE t (a INT)");
        assert_eq!(
            sql_mode_bits("NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION").unwrap(),
            (1 << 19) | (1 << 30)
        );
        assert!(sql_mode_bits("NOPE").is_err());
        assert_eq!(collation_id("utf8mb4_general_ci").unwrap(), 45);
        assert_eq!(collation_id("latin1_swedish_ci").unwrap(), 8);
        assert_eq!(collation_id("utf8mb3_general_ci").unwrap(), 33);
        assert_eq!(charset_default_collation("latin1").unwrap(), 8);
        assert_eq!(charset_default_collation("utf8mb3").unwrap(), 33);
        assert_eq!(charset_default_collation("binary").unwrap(), 63);
        assert_eq!(charset_default_collation("utf8mb4").unwrap(), 45);
    }
}
