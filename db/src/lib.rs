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

pub use error::{describe, mask_passwords, DbError};
pub use query::{exec, first, qualified, quote_ident, quote_str, rows, text};
pub use server::Server;

/// Parameters for a statement (`()` or `Vec<Value>` for none).
pub use mysql_async::Params;
