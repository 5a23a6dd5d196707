//! SQL helpers every stage shares: quoting, connecting with clear errors,
//! and naming the server in messages (never with its password).

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

/// Quotes an identifier with backticks.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `db`.`name`.
pub fn qualified(db: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(db), quote_ident(name))
}

/// Quotes a string literal (binary-safe for utf8 text).
pub fn quote_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{1a}' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

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

/// A failure talking to a server, with the server and what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{server}: {what}: {message}")]
pub struct DbError {
    /// `source 127.0.0.1:3306`.
    pub server: String,
    /// What was being done.
    pub what: String,
    /// The server's or driver's message, with advice where there is one.
    pub message: String,
    /// MariaDB error code, when the server sent one.
    pub code: Option<u16>,
}

/// Turns a driver error into a message, with advice for the common cases.
pub fn describe(e: &mysql_async::Error) -> (String, Option<u16>) {
    match e {
        mysql_async::Error::Server(s) => {
            let advice = match s.code {
                1045 => "; check the user and password in the URL",
                1044 | 1142 | 1143 | 1227 | 1370 => {
                    "; grant the missing privilege (see README: privileges)"
                }
                1049 => "; check the database name",
                1205 => "; a long-running statement or lock is in the way, retry later",
                _ => "",
            };
            (
                format!("ERROR {} ({}): {}{}", s.code, s.state, s.message, advice),
                Some(s.code),
            )
        }
        mysql_async::Error::Io(io) => (
            format!("{io}; check that the server is running and reachable at that host and port"),
            None,
        ),
        mysql_async::Error::Url(u) => (format!("bad URL: {u}"), None),
        other => (other.to_string(), None),
    }
}

impl Server {
    /// Parses a `mysql://` URL.
    pub fn parse(role: &str, url: &str) -> Result<Server, DbError> {
        let opts = Opts::from_url(url).map_err(|e| DbError {
            server: role.to_string(),
            what: "parsing the URL".into(),
            message: format!("{e}; expected mysql://user:password@host:port"),
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

    /// Password.
    pub fn password(&self) -> String {
        self.opts.pass().unwrap_or("").to_string()
    }

    /// `source 127.0.0.1:3306`, for messages.
    pub fn name(&self) -> String {
        format!("{} {}", self.role, self.addr())
    }

    /// An error about this server.
    pub fn err(&self, what: impl Into<String>, e: &mysql_async::Error) -> DbError {
        let (message, code) = describe(e);
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

    /// Opens a connection. `setup` statements run right after connecting.
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

/// A value as text, the way the server sent it (NULL is the empty string).
pub fn text(v: &mysql_async::Value) -> String {
    use mysql_async::Value;
    match v {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::NULL => String::new(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        other => format!("{other:?}"),
    }
}

/// SQL as it may appear in a message: passwords masked, long text cut.
fn short(sql: &str) -> String {
    mask_passwords(sql).chars().take(160).collect()
}

/// Replaces the string literal after every `PASSWORD=` (as in
/// `CHANGE MASTER TO MASTER_PASSWORD='...'`) or `IDENTIFIED BY` with `'***'`.
pub fn mask_passwords(sql: &str) -> String {
    let upper = sql.to_ascii_uppercase();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < sql.len() {
        let next = ["PASSWORD=", "PASSWORD =", "IDENTIFIED BY "]
            .iter()
            .filter_map(|k| upper[i..].find(k).map(|p| i + p + k.len()))
            .min();
        let Some(start) = next else { break };
        let lit = sql[start..].trim_start();
        let lit_at = sql.len() - lit.len();
        if !lit.starts_with('\'') {
            out.push_str(&sql[i..lit_at]);
            i = lit_at;
            continue;
        }
        // End of the literal: a quote not doubled and not escaped.
        let bytes = lit.as_bytes();
        let mut j = 1;
        while j < bytes.len() {
            match bytes[j] {
                b'\\' => j += 2,
                b'\'' if bytes.get(j + 1) == Some(&b'\'') => j += 2,
                b'\'' => break,
                _ => j += 1,
            }
        }
        out.push_str(&sql[i..lit_at]);
        out.push_str("'***'");
        i = (lit_at + j + 1).min(sql.len());
    }
    out.push_str(&sql[i.min(sql.len())..]);
    out
}

/// Runs a query and returns every row as values (text protocol).
pub async fn rows(
    conn: &mut Conn,
    server: &Server,
    sql: &str,
) -> Result<Vec<Vec<mysql_async::Value>>, DbError> {
    let r: Vec<mysql_async::Row> = conn
        .query(sql)
        .await
        .map_err(|e| server.err(format!("running `{}`", short(sql)), &e))?;
    Ok(r.into_iter().map(|r| r.unwrap()).collect())
}

/// Runs a query and returns its first row (empty when there is none).
pub async fn first(
    conn: &mut Conn,
    server: &Server,
    sql: &str,
) -> Result<Vec<mysql_async::Value>, DbError> {
    let r: Option<mysql_async::Row> = conn
        .query_first(sql)
        .await
        .map_err(|e| server.err(format!("running `{}`", short(sql)), &e))?;
    Ok(r.map(|r| r.unwrap()).unwrap_or_default())
}

/// Runs a statement.
pub async fn exec(conn: &mut Conn, server: &Server, sql: &str) -> Result<(), DbError> {
    conn.query_drop(sql)
        .await
        .map_err(|e| server.err(format!("running `{}`", short(sql)), &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_in_messages() {
        assert_eq!(
            mask_passwords(
                "CHANGE MASTER TO MASTER_PASSWORD='s3, c''r\\'et', MASTER_USE_GTID=slave_pos"
            ),
            "CHANGE MASTER TO MASTER_PASSWORD='***', MASTER_USE_GTID=slave_pos"
        );
        assert_eq!(
            mask_passwords("CREATE USER u IDENTIFIED BY 'x'"),
            "CREATE USER u IDENTIFIED BY '***'"
        );
        assert_eq!(mask_passwords("SELECT 1"), "SELECT 1");
        assert_eq!(quote_str("it's"), "'it''s'");
    }
}
