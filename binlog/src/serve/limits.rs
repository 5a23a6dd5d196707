//! What `replseed serve` grants a client before and after it has logged
//! in: the largest packet it may send, how many connections are served at
//! once, how long a client may take to log in or sit idle, and how many
//! wrong passwords an address may try before it is refused unheard.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The largest packet read before authentication. The only packet a client
/// sends then is the handshake response: 32 fixed bytes, a user name (at
/// most 128 characters, 512 bytes of UTF-8), an auth reply (at most 255), a
/// database name (64 characters), a plugin name and connection attributes
/// (a 10.11 IO thread sends about 150 bytes of them, the `mariadb` client
/// about 120). 16 KiB holds all of that many times over, and a flood of
/// unauthenticated connections at the connection limit holds at most
/// 16 KiB each.
pub const MAX_PACKET_BEFORE_AUTH: usize = 16 << 10;

/// The largest packet read once logged in. A replica sends `COM_QUERY`
/// (the longest is `SET @slave_connect_state=...`: about 40 bytes per
/// replication domain), `COM_REGISTER_SLAVE` (under 1 KiB) and
/// `COM_BINLOG_DUMP` (a dozen bytes and a file name): 64 KiB holds the
/// state of some 1,500 domains.
pub const MAX_PACKET_AFTER_AUTH: usize = 64 << 10;

/// Limits on clients (flags of `replseed serve`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; the excess gets ER_CON_COUNT_ERROR (1040).
    pub max_connections: usize,
    /// Time from accept to a successful login.
    pub handshake_timeout: Duration,
    /// Time a logged-in client that is not dumping may take per command.
    pub idle_timeout: Duration,
    /// Failed logins from one address, within `login_block`, after which
    /// it is refused (1129) without a password check for `login_block`;
    /// 0 turns this off.
    pub max_login_failures: u32,
    /// The window failures are counted in and how long an address stays blocked.
    pub login_block: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            // MariaDB's own default max_connections.
            max_connections: 151,
            // MariaDB's connect_timeout.
            handshake_timeout: Duration::from_secs(10),
            // A replica asks for the dump within a second of logging in.
            idle_timeout: Duration::from_secs(60),
            max_login_failures: 5,
            login_block: Duration::from_secs(60),
        }
    }
}

/// Addresses tracked at most; a flood from more addresses within one
/// window leaves the new ones untracked (their passwords still checked).
const TRACKED: usize = 65_536;

#[derive(Debug)]
struct Failures {
    since: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

/// Failed logins per client address.
#[derive(Debug)]
pub struct Logins {
    max_failures: u32,
    window: Duration,
    by_ip: Mutex<HashMap<IpAddr, Failures>>,
}

impl Logins {
    /// Tracks failures as `limits` says.
    pub fn new(limits: &Limits) -> Logins {
        Logins {
            max_failures: limits.max_login_failures,
            window: limits.login_block,
            by_ip: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.by_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How much longer `ip` is blocked, if it is.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let until = self.map().get(&ip)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a failed login from `ip`; `true` when that blocks it.
    pub fn failed(&self, ip: IpAddr) -> bool {
        if self.max_failures == 0 {
            return false;
        }
        let now = Instant::now();
        let window = self.window;
        let mut map = self.map();
        if map.len() >= TRACKED && !map.contains_key(&ip) {
            map.retain(|_, f| f.blocked_until.is_some_and(|u| u > now) || now - f.since < window);
            if map.len() >= TRACKED {
                return false;
            }
        }
        let f = map.entry(ip).or_insert(Failures {
            since: now,
            count: 0,
            blocked_until: None,
        });
        if now - f.since >= window || f.blocked_until.is_some_and(|u| u <= now) {
            *f = Failures {
                since: now,
                count: 0,
                blocked_until: None,
            };
        }
        f.count += 1;
        if f.count >= self.max_failures && f.blocked_until.is_none() {
            f.blocked_until = Some(now + window);
            return true;
        }
        false
    }

    /// A successful login from `ip` forgets its failures (as MariaDB does).
    pub fn succeeded(&self, ip: IpAddr) {
        self.map().remove(&ip);
    }
}

/// Logs the first of a burst of like events and how many followed.
#[derive(Debug, Default)]
pub struct Burst {
    count: u64,
}

impl Burst {
    /// Counts one; `true` for the first of a burst (the one to log).
    pub fn note(&mut self) -> bool {
        self.count += 1;
        self.count == 1
    }

    /// Ends the burst; how many it had.
    pub fn end(&mut self) -> u64 {
        std::mem::take(&mut self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_failures_and_released_after_the_window() {
        let limits = Limits {
            max_login_failures: 3,
            login_block: Duration::from_millis(200),
            ..Limits::default()
        };
        let logins = Logins::new(&limits);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(!logins.failed(ip));
        assert!(!logins.failed(ip));
        assert!(logins.blocked(ip).is_none());
        assert!(logins.failed(ip), "the third failure blocks");
        assert!(logins.blocked(ip).is_some());
        assert!(logins.blocked(other).is_none(), "per address");
        std::thread::sleep(Duration::from_millis(250));
        assert!(logins.blocked(ip).is_none(), "released after the window");
        assert!(!logins.failed(ip), "counting starts afresh");
        logins.succeeded(ip);
        assert!(!logins.failed(ip) && !logins.failed(ip));
    }
}
