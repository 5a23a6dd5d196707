//! Transient faults: which errors are worth trying again, and how long to
//! wait between tries.
//!
//! A lost or refused connection (a network cut, a server restarting, a
//! session killed by `wait_timeout`), a deadlock and a lock wait timeout are
//! transient: the same work succeeds once the cause is gone. Everything else
//! (a denied privilege, a bad value, a missing table) fails the same way
//! every time and is reported at once.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Server errors that a retry can cure: lock wait timeout, deadlock, too
/// many connections, shutdown in progress, server gone away, lost
/// connection. Not 1927 (`KILL` of the session): that is an operator's
/// decision, and the run stops.
const TRANSIENT_CODES: &[u16] = &[1205, 1213, 1040, 1053, 2006, 2013];

/// Whether retrying can cure this driver error.
pub fn is_transient(e: &mysql_async::Error) -> bool {
    use mysql_async::{DriverError, Error};
    match e {
        // A certificate that does not pass is not cured by waiting.
        Error::Io(io) => !io.to_string().contains("certificate"),
        Error::Server(s) => TRANSIENT_CODES.contains(&s.code),
        Error::Driver(d) => matches!(
            d,
            DriverError::ConnectionClosed | DriverError::PoolDisconnected
        ),
        _ => false,
    }
}

/// Whether the error says the session is gone (as opposed to a lock
/// conflict, after which the session is still usable).
pub fn is_connection_lost(code: Option<u16>) -> bool {
    !matches!(code, Some(1205) | Some(1213) | Some(1040))
}

/// The waits between tries of one piece of work: exponential from 250 ms to
/// 10 s, with jitter, about two minutes in all (a server restart with crash
/// recovery fits in it), then the error is reported.
pub fn backoff() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(10))
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(16)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let waits: Vec<Duration> = backoff().collect();
        assert_eq!(waits.len(), 16);
        let total: Duration = waits.iter().sum();
        assert!(
            total > Duration::from_secs(60) && total < Duration::from_secs(400),
            "{total:?}"
        );
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(20)));
    }
}
