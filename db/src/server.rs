//! [`Server`]: how every stage opens a session to a MariaDB server.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use secrecy::SecretString;

use crate::DbError;

/// A MariaDB server given as `mysql://user:password@host:port`.
#[derive(Clone)]
pub struct Server {
    /// Role in messages: `source`, `target`, ...
    pub role: String,
    opts: Opts,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.role, self.addr())
    }
}

impl Server {
    /// Parses a `mysql://` URL.
    pub fn parse(role: &str, url: &str) -> Result<Server, DbError> {
        let opts = Opts::from_url(url).map_err(|e| DbError {
            server: role.to_string(),
            what: "parsing the URL".into(),
            // The driver's message may quote the URL, password included.
            message: format!(
                "{}; expected mysql://user:password@host:port",
                crate::mask_passwords(&e.to_string()).replace(url, "<url>")
            ),
            code: None,
        })?;
        Ok(Server {
            role: role.to_string(),
            opts,
        })
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.opts.ip_or_hostname(), self.opts.tcp_port())
    }

    /// Host name or address.
    pub fn host(&self) -> String {
        self.opts.ip_or_hostname().to_string()
    }

    /// TCP port.
    pub fn port(&self) -> u16 {
        self.opts.tcp_port()
    }

    /// User name.
    pub fn user(&self) -> String {
        self.opts.user().unwrap_or("").to_string()
    }

    /// Password, kept out of `Debug` and logs.
    pub fn password(&self) -> SecretString {
        SecretString::from(self.opts.pass().unwrap_or(""))
    }

    /// `source 127.0.0.1:3306`, for messages.
    pub fn name(&self) -> String {
        format!("{} {}", self.role, self.addr())
    }

    /// An error about this server.
    pub fn err(&self, what: impl Into<String>, e: &mysql_async::Error) -> DbError {
        let (message, code) = crate::describe(e);
        DbError {
            server: self.name(),
            what: what.into(),
            message,
            code,
        }
    }

    /// An error about this server with a message of ours.
    pub fn fail(&self, what: impl Into<String>, message: impl Into<String>) -> DbError {
        DbError {
            server: self.name(),
            what: what.into(),
            message: message.into(),
            code: None,
        }
    }

    /// Opens a session. `setup` statements run right after connecting.
    pub async fn connect(&self, setup: &[&str]) -> Result<Conn, DbError> {
        let opts = OptsBuilder::from_opts(self.opts.clone())
            .max_allowed_packet(Some(1 << 30))
            .wait_timeout(Some(28_800))
            .tcp_nodelay(true)
            .stmt_cache_size(64);
        let conn = tokio::time::timeout(Duration::from_secs(30), Conn::new(opts)).await;
        let mut conn = match conn {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(self.err("connecting", &e)),
            Err(_) => {
                return Err(self.fail(
                    "connecting",
                    "no answer within 30 s; check the host, port and firewall",
                ))
            }
        };
        for s in setup {
            conn.query_drop(*s)
                .await
                .map_err(|e| self.err(format!("running `{s}`"), &e))?;
        }
        Ok(conn)
    }
}
