//! One replica's session: the handshake (mysql_native_password), the
//! queries its IO thread sends on connect, `COM_REGISTER_SLAVE`, and
//! `COM_BINLOG_DUMP`, which hands over to `dump.rs`. What is answered and
//! why is in `docs/design/binlog-server.md`.

use sha1::{Digest, Sha1};
use tokio::net::TcpStream;
use tracing::{debug, info};

use super::dump;
use super::packet::{get_lenenc_int, Packets};
use super::Shared;
use crate::gtid::GtidState;

/// The version a 10.11 replica needs to see to use GTIDs (`5.5.5-` is
/// stripped by the client, the major version must be 10 or more).
const VERSION: &str = "5.5.5-10.11.99-MariaDB-replseed";

const CAPS: u32 = 0x1 // LONG_PASSWORD
    | 0x4 // LONG_FLAG
    | 0x8 // CONNECT_WITH_DB
    | 0x200 // PROTOCOL_41
    | 0x2000 // TRANSACTIONS
    | 0x8000 // SECURE_CONNECTION
    | 0x8_0000 // PLUGIN_AUTH
    | 0x10_0000 // CONNECT_ATTRS
    | 0x20_0000; // PLUGIN_AUTH_LENENC_CLIENT_DATA

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
}

fn scramble() -> [u8; 20] {
    let mut s = [0u8; 20];
    getrandom::fill(&mut s).expect("OS randomness");
    // Printable, never NUL, as MariaDB's own.
    for b in s.iter_mut() {
        *b = 33 + *b % 94;
    }
    s
}

/// `SHA1(pw) XOR SHA1(scramble ‖ SHA1(SHA1(pw)))`, what the client sends.
fn native_reply(scramble: &[u8], password: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1: [u8; 20] = Sha1::digest(password).into();
    let stage2: [u8; 20] = Sha1::digest(stage1).into();
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(stage2);
    let mix: [u8; 20] = h.finalize().into();
    stage1.iter().zip(mix).map(|(a, b)| a ^ b).collect()
}

fn greeting(conn_id: u32, scramble: &[u8; 20]) -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(VERSION.as_bytes());
    p.push(0);
    p.extend_from_slice(&conn_id.to_le_bytes());
    p.extend_from_slice(&scramble[..8]);
    p.push(0);
    p.extend_from_slice(&(CAPS as u16).to_le_bytes());
    p.push(33);
    p.extend_from_slice(&2u16.to_le_bytes()); // autocommit
    p.extend_from_slice(&((CAPS >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0u8; 10]);
    p.extend_from_slice(&scramble[8..]);
    p.push(0);
    p.extend_from_slice(b"mysql_native_password\0");
    p
}

/// User name and auth reply from a HandshakeResponse41.
fn parse_response(p: &[u8]) -> Option<(String, Vec<u8>)> {
    let flags = u32::from_le_bytes(p.get(..4)?.try_into().ok()?);
    let mut at = 32;
    let end = at + p.get(at..)?.iter().position(|b| *b == 0)?;
    let user = String::from_utf8_lossy(&p[at..end]).into_owned();
    at = end + 1;
    let auth = if flags & 0x20_0000 != 0 {
        let n = get_lenenc_int(p, &mut at)? as usize;
        p.get(at..at + n)?.to_vec()
    } else if flags & 0x8000 != 0 {
        let n = *p.get(at)? as usize;
        p.get(at + 1..at + 1 + n)?.to_vec()
    } else {
        let n = p.get(at..)?.iter().position(|b| *b == 0)?;
        p[at..at + n].to_vec()
    };
    Some((user, auth))
}

fn unquote(v: &str) -> String {
    v.trim().trim_matches(|c| c == '\'' || c == '"').to_string()
}

/// Runs one session to its end.
pub async fn run(
    stream: TcpStream,
    conn_id: u32,
    shared: std::sync::Arc<Shared>,
) -> std::io::Result<()> {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut pk = Packets::new(stream);
    let nonce = scramble();
    pk.write(&greeting(conn_id, &nonce)).await?;
    pk.flush().await?;
    let Some(resp) = pk.read().await? else {
        return Ok(());
    };
    if resp.len() == 32 {
        pk.err(1045, "28000", "replseed serve does not offer TLS")
            .await?;
        return Ok(());
    }
    let ok = match parse_response(&resp) {
        Some((user, reply)) => {
            let want = native_reply(&nonce, shared.password.as_bytes());
            // Constant time: every byte is looked at.
            let same = reply.len() == want.len()
                && reply
                    .iter()
                    .zip(&want)
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            user == shared.user && same
        }
        None => false,
    };
    if !ok {
        pk.err(1045, "28000", "Access denied (replseed serve)")
            .await?;
        return Ok(());
    }
    pk.ok().await?;
    debug!(%peer, "replica connected");

    let mut req = Requested::default();
    loop {
        pk.reset();
        let Some(cmd) = pk.read().await? else {
            return Ok(());
        };
        match cmd.first() {
            Some(0x01) => return Ok(()),  // COM_QUIT
            Some(0x0e) => pk.ok().await?, // COM_PING
            Some(0x03) => {
                let q = String::from_utf8_lossy(&cmd[1..]).into_owned();
                query(&mut pk, &q, &mut req, &shared).await?;
            }
            Some(0x15) => {
                // COM_REGISTER_SLAVE: the replica's server_id.
                req.replica_id = cmd
                    .get(1..5)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .unwrap_or(0);
                pk.ok().await?;
            }
            Some(0x12) => {
                info!(%peer, replica = req.replica_id, state = ?req.connect_state, "binlog dump requested");
                return dump::run(&mut pk, &req, &shared).await;
            }
            _ => pk.err(1047, "08S01", "Unknown command").await?,
        }
    }
}

/// Answers one of the queries a replica's IO thread sends on connect.
async fn query(
    pk: &mut Packets,
    q: &str,
    req: &mut Requested,
    shared: &Shared,
) -> std::io::Result<()> {
    let norm = q.split_whitespace().collect::<Vec<_>>().join(" ");
    let upper = norm.to_ascii_uppercase();
    let set_value = |name: &str| -> Option<String> {
        let u = upper.strip_prefix("SET ")?;
        let rest = u.strip_prefix(name)?.trim_start();
        let rest = rest.strip_prefix('=')?;
        let at = norm.len() - rest.len();
        Some(norm[at..].trim().to_string())
    };
    if upper == "SELECT UNIX_TIMESTAMP()" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return pk
            .result_set(&["UNIX_TIMESTAMP()"], &[vec![now.to_string()]])
            .await;
    }
    if upper == "SHOW VARIABLES LIKE 'SERVER_ID'" {
        return pk
            .result_set(
                &["Variable_name", "Value"],
                &[vec!["server_id".into(), shared.server_id.to_string()]],
            )
            .await;
    }
    if upper.starts_with("SHOW VARIABLES LIKE") {
        // rpl_semi_sync_master_enabled and the like: not here.
        return pk.result_set(&["Variable_name", "Value"], &[]).await;
    }
    if upper == "SELECT @MASTER_BINLOG_CHECKSUM" {
        return pk
            .result_set(&["@master_binlog_checksum"], &[vec!["CRC32".into()]])
            .await;
    }
    if upper == "SELECT @@GLOBAL.GTID_DOMAIN_ID" {
        return pk
            .result_set(&["@@GLOBAL.gtid_domain_id"], &[vec!["0".into()]])
            .await;
    }
    if upper.starts_with("SELECT @@VERSION") {
        return pk
            .result_set(&["@@version"], &[vec![VERSION[6..].to_string()]])
            .await;
    }
    if let Some(v) = set_value("@MASTER_HEARTBEAT_PERIOD") {
        req.heartbeat_ns = v.parse().unwrap_or(0);
        return pk.ok().await;
    }
    if let Some(v) = set_value("@MARIADB_SLAVE_CAPABILITY") {
        req.capability = v.parse().unwrap_or(0);
        return pk.ok().await;
    }
    if let Some(v) = set_value("@SLAVE_CONNECT_STATE") {
        req.connect_state = Some(unquote(&v));
        return pk.ok().await;
    }
    if let Some(v) = set_value("@SLAVE_GTID_STRICT_MODE") {
        req.strict = v == "1";
        return pk.ok().await;
    }
    if let Some(v) = set_value("SKIP_REPLICATION") {
        req.skip_replication = v == "1";
        return pk.ok().await;
    }
    if upper.starts_with("SET ") || upper.starts_with("KILL ") {
        // @master_binlog_checksum (answered CRC32 above),
        // @slave_gtid_ignore_duplicates, @slave_until_gtid, ...
        return pk.ok().await;
    }
    pk.err(
        1064,
        "42000",
        &format!(
            "replseed serve does not answer `{}`",
            norm.chars().take(80).collect::<String>()
        ),
    )
    .await
}

/// Parses the requested state, for `dump.rs`.
pub fn requested_state(req: &Requested) -> Result<GtidState, String> {
    match &req.connect_state {
        Some(s) => GtidState::parse(s),
        None => Err("replseed serve serves GTID replication only: use CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_native_reply_matches_the_clients() {
        let nonce = b"0123456789abcdefghij";
        let ours = native_reply(nonce, b"secret");
        // Computed with Python's hashlib from the formula.
        assert_eq!(
            hex::encode(ours),
            "f5cac3f3b3df2133feb57db682c71e6ed433a988"
        );
        assert!(native_reply(nonce, b"").is_empty());
    }
}
