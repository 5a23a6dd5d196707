//! One replica's session: the handshake (mysql_native_password, over TLS
//! when the client asks for it and `serve` has a certificate), the
//! queries its IO thread sends on connect, `COM_REGISTER_SLAVE`, and
//! `COM_BINLOG_DUMP`, which hands over to `dump.rs`. What is answered and
//! why is in `docs/design/binlog-server.md`. Before the login the client
//! gets the handshake timeout and packets of `MAX_PACKET_BEFORE_AUTH`;
//! after it, the idle timeout per command and `MAX_PACKET_AFTER_AUTH`.

use std::net::SocketAddr;
use std::time::Duration;

use sha1::{Digest, Sha1};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::dump;
use super::limits::{MAX_PACKET_AFTER_AUTH, MAX_PACKET_BEFORE_AUTH};
use super::packet::{get_lenenc_int, is_too_large, Packets};
use super::query::{self, VERSION};
use super::request::Requested;
use super::tls::{CLIENT_SSL, PLAIN_REFUSED};
use super::Shared;

const CAPS: u32 = 0x1 // LONG_PASSWORD
    | 0x4 // LONG_FLAG
    | 0x8 // CONNECT_WITH_DB
    | 0x200 // PROTOCOL_41
    | 0x2000 // TRANSACTIONS
    | 0x8000 // SECURE_CONNECTION
    | 0x8_0000 // PLUGIN_AUTH
    | 0x10_0000 // CONNECT_ATTRS
    | 0x20_0000; // PLUGIN_AUTH_LENENC_CLIENT_DATA

fn scramble() -> std::io::Result<[u8; 20]> {
    let mut s = [0u8; 20];
    getrandom::fill(&mut s).map_err(|e| std::io::Error::other(format!("no OS randomness: {e}")))?;
    // Printable, never NUL, as MariaDB's own.
    for b in s.iter_mut() {
        *b = 33 + *b % 94;
    }
    Ok(s)
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

/// The greeting; `tls`: `CLIENT_SSL` is offered.
fn greeting(conn_id: u32, scramble: &[u8; 20], tls: bool) -> Vec<u8> {
    let caps = if tls { CAPS | CLIENT_SSL } else { CAPS };
    let mut p = vec![10];
    p.extend_from_slice(VERSION.as_bytes());
    p.push(0);
    p.extend_from_slice(&conn_id.to_le_bytes());
    p.extend_from_slice(&scramble[..8]);
    p.push(0);
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(33);
    p.extend_from_slice(&2u16.to_le_bytes()); // autocommit
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
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
        let n = usize::try_from(get_lenenc_int(p, &mut at)?).ok()?;
        p.get(at..at.checked_add(n)?)?.to_vec()
    } else if flags & 0x8000 != 0 {
        let n = *p.get(at)? as usize;
        p.get(at + 1..at + 1 + n)?.to_vec()
    } else {
        let n = p.get(at..)?.iter().position(|b| *b == 0)?;
        p[at..at + n].to_vec()
    };
    Some((user, auth))
}

/// A user name as logged: what the client sent, escaped and cut short.
fn loggable(user: &str) -> String {
    let cut: String = user.chars().take(64).collect();
    format!("{cut:?}")
}

/// How a session ends early, for the log.
fn ended(peer: SocketAddr, what: &str, limit: Duration) -> std::io::Error {
    debug!(%peer, "{what}: closing the connection after {} s", limit.as_secs_f64());
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out"))
}

/// Runs one session to its end.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    conn_id: u32,
    shared: std::sync::Arc<Shared>,
) -> std::io::Result<()> {
    let mut pk = Packets::new(stream, MAX_PACKET_BEFORE_AUTH);
    let limits = &shared.limits;
    if let Some(left) = shared.logins.blocked(peer.ip()) {
        // As MariaDB's blocked hosts: refused before any password is looked at.
        return pk
            .err(
                1129,
                "HY000",
                &format!(
                    "Host '{}' is blocked because of {} failed logins; try again in {} s",
                    peer.ip(),
                    limits.max_login_failures,
                    left.as_secs() + 1
                ),
            )
            .await;
    }
    let logged_in = match tokio::time::timeout(
        limits.handshake_timeout,
        login(&mut pk, peer, conn_id, &shared),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => return Err(ended(peer, "login", limits.handshake_timeout)),
    };
    match logged_in {
        Ok(true) => {}
        Ok(false) => return Ok(()),
        Err(e) => return Err(dropped(peer, e)),
    }
    pk.set_cap(MAX_PACKET_AFTER_AUTH);
    debug!(%peer, "replica connected");

    let mut req = Requested::default();
    loop {
        pk.reset();
        let next = tokio::time::timeout(limits.idle_timeout, command(&mut pk, &mut req, &shared))
            .await
            .map_err(|_| ended(peer, "idle session", limits.idle_timeout))?
            .map_err(|e| dropped(peer, e))?;
        match next {
            Next::More => {}
            Next::Quit => return Ok(()),
            Next::Dump => {
                info!(%peer, replica = req.replica_id, state = ?req.connect_state, "binlog dump requested");
                return match &shared.provision {
                    Some(p) => super::provision::run(&mut pk, &req, &shared, p).await,
                    None => dump::run(&mut pk, &req, &shared).await,
                };
            }
        }
    }
}

/// Logs a connection dropped for a packet over the cap.
fn dropped(peer: SocketAddr, e: std::io::Error) -> std::io::Error {
    if is_too_large(&e) {
        warn!(%peer, "dropping the connection: {e}");
    }
    e
}

/// The greeting, the client's response and the password check; `false`
/// when the client was refused (and told so).
async fn login(
    pk: &mut Packets,
    peer: SocketAddr,
    conn_id: u32,
    shared: &Shared,
) -> std::io::Result<bool> {
    let nonce = scramble()?;
    pk.write(&greeting(conn_id, &nonce, shared.tls.is_some()))
        .await?;
    pk.flush().await?;
    let Some(mut resp) = pk.read().await? else {
        return Ok(false);
    };
    // An SSLRequest: the response's first 32 bytes, with CLIENT_SSL.
    if resp.len() == 32 {
        let flags = u32::from_le_bytes(resp[..4].try_into().expect("4 bytes"));
        let Some(tls) = shared.tls.as_ref().filter(|_| flags & CLIENT_SSL != 0) else {
            pk.err(1045, "28000", "replseed serve does not offer TLS")
                .await?;
            return Ok(false);
        };
        pk.upgrade(tls).await?;
        let (version, cipher) = pk.tls_params().unwrap_or_default();
        info!(%peer, %version, %cipher, "TLS session");
        let Some(r) = pk.read().await? else {
            return Ok(false);
        };
        resp = r;
    } else if shared.tls.as_ref().is_some_and(|t| t.require) {
        // Refused before the password is looked at: no guessing in plain.
        let user = parse_response(&resp)
            .map(|r| loggable(&r.0))
            .unwrap_or_default();
        warn!(%peer, %user, "plain login refused: TLS is required");
        let (code, state, text) = PLAIN_REFUSED;
        pk.err(code, state, text).await?;
        return Ok(false);
    }
    let (user, ok) = match parse_response(&resp) {
        Some((user, reply)) => {
            let want = native_reply(&nonce, shared.password.as_bytes());
            // Constant time: every byte is looked at.
            let same = reply.len() == want.len()
                && reply
                    .iter()
                    .zip(&want)
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            let ok = user == shared.user && same;
            (user, ok)
        }
        None => (String::new(), false),
    };
    if !ok {
        let user = loggable(&user);
        warn!(%peer, %user, "failed login to replseed serve");
        if shared.logins.failed(peer.ip()) {
            warn!(
                %peer,
                failures = shared.limits.max_login_failures,
                seconds = shared.limits.login_block.as_secs(),
                "blocking the address after repeated failed logins"
            );
        }
        pk.err(1045, "28000", "Access denied (replseed serve)")
            .await?;
        return Ok(false);
    }
    shared.logins.succeeded(peer.ip());
    pk.ok().await?;
    Ok(true)
}

enum Next {
    More,
    Quit,
    Dump,
}

/// Reads and answers one command before the dump.
async fn command(pk: &mut Packets, req: &mut Requested, shared: &Shared) -> std::io::Result<Next> {
    let Some(cmd) = pk.read().await? else {
        return Ok(Next::Quit);
    };
    match cmd.split_first() {
        Some((0x01, _)) => return Ok(Next::Quit), // COM_QUIT
        Some((0x0e, _)) => pk.ok().await?,        // COM_PING
        Some((0x03, q)) => {
            let q = String::from_utf8_lossy(q).into_owned();
            query::answer(pk, &q, req, shared).await?;
        }
        Some((0x15, rest)) => {
            // COM_REGISTER_SLAVE: the replica's server_id.
            req.replica_id = rest
                .first_chunk::<4>()
                .map(|b| u32::from_le_bytes(*b))
                .unwrap_or(0);
            pk.ok().await?;
        }
        Some((0x02, _)) => pk.ok().await?, // COM_INIT_DB: no databases to use
        Some((0x12, rest)) => {
            req.set_dump(rest);
            return Ok(Next::Dump);
        }
        _ => pk.err(1047, "08S01", "Unknown command").await?,
    }
    Ok(Next::More)
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
