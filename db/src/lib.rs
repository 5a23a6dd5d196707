//! Talking to MariaDB, for every stage: one place to open a session, run a
//! statement with bound parameters, and quote an identifier.
//!
//! * [`Server`]: a server given as `mysql://user:password@host:port`, the
//!   one way any stage connects (TLS and credential sources plug in here).
//! * [`rows`], [`first`], [`exec`]: statements with parameters bound by
//!   the driver (`?` placeholders, the binary protocol), so that no value
//!   is pasted into SQL text. Without parameters they use the text protocol,
//!   which also runs the statements MariaDB cannot prepare.
//! * [`tls`]: `ssl-mode` and friends; [`options`]: option files.
//! * [`retry`]: which errors are transient, and the backoff between tries.
//! * [`throttle`]: a byte-rate limit and a guard that pauses work while a
//!   server is busy or its replicas lag.
//! * [`quote_ident`], [`qualified`]: identifiers, which cannot be bound.
//! * [`accounts`]: a server's accounts, roles and grants, to stage,
//!   compare and replay.
//! * [`DbError`]: a failure, naming the server and what was being done,
//!   never with a password.

#![warn(missing_docs)]

pub mod accounts;
mod error;
pub mod options;
mod query;
pub mod retry;
mod server;
pub mod throttle;
pub mod tls;

pub use error::{describe, mask_passwords, mask_server_message, DbError};
pub use query::{drop_if_exists, exec, first, qualified, quote_ident, quote_str, rows, text};
pub use server::Server;

/// Bounds the memory mysql_async keeps between packets; call it first thing
/// in `main`, before any thread starts (it sets environment variables the
/// driver reads once, when it first sends or receives a packet).
///
/// The driver copies every packet through a global pool of buffers that
/// keeps up to 128 of them, each up to 4 MiB, and hands them out oldest
/// first: a load sending 1 MiB pieces of `LOAD DATA` grew every pooled
/// buffer to that size in turn (78 MiB of a 242 MiB `provision` at 2
/// threads, by heaptrack), and large rows would do the same on the extract.
/// Kept at 16 buffers of at most 1.25 MiB (one `LOAD DATA` piece), the pool
/// holds 20 MiB at most. A variable the user set is left as it is.
pub fn bound_driver_buffers() {
    for (var, value) in [
        ("MYSQL_ASYNC_BUFFER_POOL_CAP", "16"),
        ("MYSQL_ASYNC_BUFFER_SIZE_CAP", "1310720"),
    ] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, value);
        }
    }
}

/// Parameters for a statement (`()` or `Vec<Value>` for none).
pub use mysql_async::Params;
