//! [`Server`]: how every stage opens a session to a MariaDB server.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use secrecy::{ExposeSecret, SecretString};

use crate::tls::{Tls, TlsMode};
use crate::DbError;

/// A MariaDB server given as `mysql://user[:password]@host:port[?ssl-mode=...]`.
#[derive(Clone)]
pub struct Server {
    /// Role in messages: `source`, `target`, ...
    pub role: String,
    opts: Opts,
    tls: Tls,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.role, self.addr())
    }
}

impl Server {
    /// Parses a `mysql://` URL; `ssl-*` parameters set the TLS (see
    /// [`crate::tls`]), the others go to the driver.
    pub fn parse(role: &str, url: &str) -> Result<Server, DbError> {
        let bad = |message: String| DbError {
            server: role.to_string(),
            what: "parsing the URL".into(),
            message,
            code: None,
            transient: false,
        };
        let mut parsed = url::Url::parse(url).map_err(|e| {
            bad(format!(
                "{e}; expected mysql://user:password@host:port (the URL is not repeated here: it may hold a password)"
            ))
        })?;
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let is_tls = |k: &str| crate::tls::PARAMS.contains(&k.replace('_', "-").as_str());
        let tls = Tls::from_params(
            pairs
                .iter()
                .filter(|(k, _)| is_tls(k))
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .map_err(bad)?;
        let rest: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| !is_tls(k)).collect();
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
        let opts = Opts::from_url(parsed.as_str()).map_err(|e| {
            bad(format!(
                "{}; expected mysql://user:password@host:port",
                crate::mask_passwords(&e.to_string()).replace(parsed.as_str(), "<url>")
            ))
        })?;
        Ok(Server {
            role: role.to_string(),
            opts,
            tls,
        })
    }

    /// The same server with this password (from a password file, the
    /// environment or an option file), unless the URL carries one.
    pub fn with_password(mut self, password: Option<&SecretString>) -> Server {
        if self.opts.pass().is_none() {
            if let Some(p) = password {
                self.opts = OptsBuilder::from_opts(self.opts)
                    .pass(Some(p.expose_secret().to_string()))
                    .into();
            }
        }
        self
    }

    /// The same server with this user, unless the URL names one.
    pub fn with_user(mut self, user: Option<&str>) -> Server {
        if self.opts.user().is_none() {
            if let Some(u) = user {
                self.opts = OptsBuilder::from_opts(self.opts).user(Some(u)).into();
            }
        }
        self
    }

    /// The TLS settings.
    pub fn tls(&self) -> &Tls {
        &self.tls
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
            transient: crate::retry::is_transient(e),
        }
    }

    /// An error about this server with a message of ours.
    pub fn fail(&self, what: impl Into<String>, message: impl Into<String>) -> DbError {
        DbError {
            server: self.name(),
            what: what.into(),
            message: message.into(),
            code: None,
            transient: false,
        }
    }

    /// `name`: the name the server's certificate must carry, when it is not
    /// the host connected to (see [`certified_name`]).
    async fn open(&self, tls: bool, name: Option<String>) -> Result<Conn, DbError> {
        let ssl = if tls { self.tls.ssl_opts() } else { None };
        let ssl = ssl.map(|o| o.with_danger_tls_hostname_override(name));
        let opts = OptsBuilder::from_opts(self.opts.clone())
            .max_allowed_packet(Some(1 << 30))
            .wait_timeout(Some(28_800))
            .tcp_nodelay(true)
            // Keepalives, so that an idle session (the extract's control
            // connection holding the backup lock) is not cut by a firewall.
            .tcp_keepalive(Some(Duration::from_secs(60)))
            .stmt_cache_size(64)
            // When TLS is asked for, stay on TCP: the driver would otherwise
            // switch a local connection to the Unix socket, without TLS. A
            // URL's `prefer_socket=false` keeps a local connection on TCP too
            // (a proxy or port forward in front of the server).
            .prefer_socket(
                self.opts.prefer_socket()
                    && !matches!(
                        self.tls.mode,
                        TlsMode::Required | TlsMode::VerifyCa | TlsMode::VerifyIdentity
                    ),
            )
            .ssl_opts(ssl);
        match tokio::time::timeout(Duration::from_secs(30), Conn::new(opts)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(self.connect_error(&e)),
            Err(_) => Err(DbError {
                transient: true,
                ..self.fail(
                    "connecting",
                    "no answer within 30 s; check the host, port and firewall",
                )
            }),
        }
    }

    fn connect_error(&self, e: &mysql_async::Error) -> DbError {
        let mut err = self.err("connecting", e);
        let text = e.to_string();
        if let mysql_async::Error::Driver(mysql_async::DriverError::UnknownAuthPlugin { name }) = e
        {
            err.message = format!(
                "the account `{}` authenticates with the plugin `{name}`, which replseed does not support (mysql_native_password and ed25519 are); give replseed an account with one of those",
                self.user()
            );
        } else if matches!(
            e,
            mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)
        ) {
            err.message = "the server does not offer TLS, but ssl-mode asks for it; enable TLS on the server or use ssl-mode=preferred".into();
        } else if text.contains("certificate")
            || text.contains("Certificate")
            || text.contains("tls")
        {
            err.message = format!(
                "{text}; the server's certificate did not pass ssl-mode={:?} (check ssl-ca, and that the certificate names this host)",
                self.tls.mode
            );
        }
        err
    }

    /// Opens a session. `setup` statements run right after connecting.
    pub async fn connect(&self, setup: &[&str]) -> Result<Conn, DbError> {
        let mut conn = match self.open(true, None).await {
            Err(e)
                if self.tls.mode == TlsMode::Preferred
                    && e.message.starts_with("the server does not offer TLS") =>
            {
                self.open(false, None).await?
            }
            Err(e) if self.tls.mode == TlsMode::VerifyCa => match certified_name(&e.message) {
                // The chain passed (rustls checks it before the name): connect
                // again, checking the certificate fully for the name it carries.
                Some(name) => self.open(true, Some(name)).await?,
                None => return Err(e),
            },
            r => r?,
        };
        for s in setup {
            conn.query_drop(*s)
                .await
                .map_err(|e| self.err(format!("running `{s}`"), &e))?;
        }
        Ok(conn)
    }
}

/// For `verify-ca`: the name to check the server's certificate for, out of
/// a rustls error that says the certificate was valid, but for other names.
///
/// rustls verifies the chain before the name, so this error means the CA
/// signed the certificate. mysql_async 0.37 cannot skip only the name check
/// (it looks for text that rustls 0.23 no longer prints), so the connection
/// is made again with one of the certificate's own names: chain and name are
/// then both checked, which is what `verify-ca` promises.
fn certified_name(message: &str) -> Option<String> {
    let rest = message.split("certificate is only valid for ").nth(1)?;
    rest.split("DnsName(\"").skip(1).find_map(|part| {
        let name = part.split("\")").next()?;
        // A wildcard name is checked with a name it covers.
        let name = match name.strip_prefix("*.") {
            Some(base) => format!("replseed-verify-ca.{base}"),
            None => name.to_string(),
        };
        (!name.is_empty()).then_some(name)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn certified_names_come_from_the_certificate() {
        let m = "connecting: invalid peer certificate: certificate not valid for name \"127.0.0.1\"; certificate is only valid for DnsName(\"db1.example\") or DnsName(\"*.db.example\")";
        assert_eq!(super::certified_name(m).as_deref(), Some("db1.example"));
        let w = "certificate is only valid for DnsName(\"*.db.example\")";
        assert_eq!(
            super::certified_name(w).as_deref(),
            Some("replseed-verify-ca.db.example")
        );
        assert_eq!(super::certified_name("unknown issuer"), None);
    }
}
