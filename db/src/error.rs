//! Errors that name the server and what was being done, with advice.

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
    /// Whether trying again can cure it (see [`crate::retry`]).
    pub transient: bool,
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

/// Replaces the string literal after every `PASSWORD=` (as in
/// `CHANGE MASTER TO MASTER_PASSWORD='...'`, which MariaDB cannot prepare)
/// or `IDENTIFIED BY` with `'***'`, for statements echoed in messages.
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
    }
}
