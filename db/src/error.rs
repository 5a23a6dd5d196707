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
/// A server's message is masked ([`mask_server_message`]): it can quote the
/// statement, and the statement can hold a password.
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
                format!(
                    "ERROR {} ({}): {}{}",
                    s.code,
                    s.state,
                    mask_server_message(&s.message),
                    advice
                ),
                Some(s.code),
            )
        }
        mysql_async::Error::Io(io) => (
            format!("{io}; check that the server is running and reachable at that host and port"),
            None,
        ),
        mysql_async::Error::Url(u) => (format!("bad URL: {u}"), None),
        other => (mask_passwords(&other.to_string()), None),
    }
}

/// A server's error message with what it quotes of the statement masked.
/// A syntax error (1064, 1149) quotes the statement from where parsing
/// stopped, `near '...' at line N`, without escaping it: the excerpt can
/// start inside a password literal, where no keyword announces it, so the
/// whole excerpt is left out. Passwords after the keywords of
/// [`mask_passwords`] are masked everywhere else.
pub fn mask_server_message(message: &str) -> String {
    let masked = match message.find(" near '") {
        Some(at) => {
            let rest = &message[at + " near '".len()..];
            // The excerpt ends at the last `' at line N` (the excerpt itself
            // may hold that text; the server appends its own at the end).
            match rest.rfind("' at line ") {
                Some(end) => format!(
                    "{} near <the statement, not repeated: it may hold a password>{}",
                    &message[..at],
                    &rest[end + 1..]
                ),
                None => format!(
                    "{} near <the statement, not repeated: it may hold a password>",
                    &message[..at]
                ),
            }
        }
        None => message.to_string(),
    };
    mask_passwords(&masked)
}

/// Keywords a password literal follows, after blanks, `=` or `(`:
/// `MASTER_PASSWORD='...'` (CHANGE MASTER, which MariaDB cannot prepare),
/// `PASSWORD('...')` (SET PASSWORD, `USING PASSWORD('...')`), `BY PASSWORD
/// '...'`, `IDENTIFIED BY '...'`, `USING '...'` (an authentication string).
const PASSWORD_KEYWORDS: [&str; 3] = ["PASSWORD", "IDENTIFIED BY", "USING"];

/// Where the next string literal that follows a password keyword starts,
/// from byte `from` of `upper` (the text in ASCII upper case).
fn next_password_literal(upper: &str, from: usize) -> Option<usize> {
    let mut best: Option<usize> = None;
    for k in PASSWORD_KEYWORDS {
        let mut p = from;
        while let Some(off) = upper[p..].find(k) {
            let end = p + off + k.len();
            let lit = upper[end..]
                .trim_start_matches(|c: char| c.is_whitespace() || c == '=' || c == '(');
            if lit.starts_with(['\'', '"']) {
                let at = upper.len() - lit.len();
                best = Some(best.map_or(at, |b| b.min(at)));
                break;
            }
            p = end;
        }
    }
    best
}

/// Replaces the string literal (single- or double-quoted) after every
/// keyword of [`PASSWORD_KEYWORDS`] with `'***'`, for statements and
/// server messages echoed in messages.
pub fn mask_passwords(sql: &str) -> String {
    let upper = sql.to_ascii_uppercase();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while let Some(lit_at) = next_password_literal(&upper, i) {
        // End of the literal: a quote not doubled and not escaped (or the
        // end of the text, for a literal cut short).
        let bytes = &sql.as_bytes()[lit_at..];
        let quote = bytes[0];
        let mut j = 1;
        while j < bytes.len() {
            match bytes[j] {
                b'\\' => j += 2,
                q if q == quote && bytes.get(j + 1) == Some(&quote) => j += 2,
                q if q == quote => break,
                _ => j += 1,
            }
        }
        out.push_str(&sql[i..lit_at]);
        out.push_str("'***'");
        i = (lit_at + j + 1).min(sql.len());
    }
    out.push_str(&sql[i..]);
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
        assert_eq!(
            mask_passwords("SET PASSWORD FOR u = PASSWORD('pw1')"),
            "SET PASSWORD FOR u = PASSWORD('***')"
        );
        assert_eq!(
            mask_passwords("CREATE USER e IDENTIFIED VIA ed25519 USING PASSWORD(\"pw2\")"),
            "CREATE USER e IDENTIFIED VIA ed25519 USING PASSWORD('***')"
        );
        assert_eq!(
            mask_passwords("ALTER USER u IDENTIFIED BY PASSWORD '*AB12'"),
            "ALTER USER u IDENTIFIED BY PASSWORD '***'"
        );
        assert_eq!(
            mask_passwords("CREATE USER u IDENTIFIED VIA ed25519 USING 'hash3'"),
            "CREATE USER u IDENTIFIED VIA ed25519 USING '***'"
        );
        // A literal cut short (a message quoting part of a statement).
        assert_eq!(
            mask_passwords("IDENTIFIED BY 'unterminated"),
            "IDENTIFIED BY '***'"
        );
        assert_eq!(mask_passwords("SELECT 1"), "SELECT 1");
    }

    /// Messages as MariaDB 10.11 sends them (captured from a server).
    #[test]
    fn server_messages_are_masked() {
        // 1064 of `CREATE USER u@'%' IDENTIFIED BY 'Pw-1' WITH GRANT`: the
        // excerpt starts at the error and holds what follows.
        let m = "You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near 'WITH GRANT' at line 1";
        let got = mask_server_message(m);
        assert!(got.ends_with("right syntax to use near <the statement, not repeated: it may hold a password> at line 1"), "{got}");
        // 1064 whose excerpt starts inside the password literal:
        // `CHANGE MASTER TO MASTER_PASSWORD='a'b-Pw2', MASTER_HOST='h'`.
        let m = "You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near 'b-Pw2', MASTER_HOST='h'' at line 1";
        let got = mask_server_message(m);
        assert!(!got.contains("Pw2") && got.ends_with(" at line 1"), "{got}");
        // An excerpt whose statement holds "' at line " itself.
        let m = "... near 'IDENTIFIED BYY 'x' at line 9-Pw3'' at line 2";
        let got = mask_server_message(m);
        assert!(
            !got.contains("Pw3") && got.ends_with("' at line 2".trim_start_matches('\'')),
            "{got}"
        );
        // 1396 and others name the account, not the password: unchanged.
        let m = "Operation CREATE USER failed for 'u'@'%'";
        assert_eq!(mask_server_message(m), m);
        // A message quoting a password literal after a keyword.
        let m = "Unknown thing in PASSWORD('Pw4')";
        assert_eq!(mask_server_message(m), "Unknown thing in PASSWORD('***')");
    }
}
