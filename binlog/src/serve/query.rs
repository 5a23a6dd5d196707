//! The general queries clients send before a dump (a replica's IO thread,
//! `mariadb-binlog`, the `mariadb` client, monitoring), answered with what
//! the archive implies: `SELECT` of `@@` system variables, `@` user
//! variables and a few functions (`VERSION()`, `UNIX_TIMESTAMP()`),
//! `SHOW VARIABLES [LIKE]`, `SHOW MASTER STATUS`, `SHOW BINARY LOGS`,
//! `SET` of user and session variables (recorded in [`Requested`]), `KILL`.
//! Anything else gets an ERR packet and the session goes on. The table of
//! what is answered is in `docs/design/binlog-server.md`, section 5.2.

use replseed_stage::archive::SegmentManifest;

use super::limits::MAX_PACKET_AFTER_AUTH;
use super::packet::Packets;
use super::request::Requested;
use super::Shared;

/// The version a 10.11 replica needs to see to use GTIDs (`5.5.5-` is
/// stripped by the client, the major version must be 10 or more).
pub const VERSION: &str = "5.5.5-10.11.99-MariaDB-replseed";

/// MariaDB's ER_UNKNOWN_SYSTEM_VARIABLE.
const UNKNOWN_VARIABLE: u16 = 1193;

/// What the archive holds, for the queries that name it.
struct Archive {
    /// The master's files in order, each with the position after its last
    /// archived event.
    files: Vec<(String, u64)>,
    /// The GTID state after the archive's last transaction.
    end_state: String,
}

impl Archive {
    fn of(segments: &[SegmentManifest]) -> Archive {
        let mut files: Vec<(String, u64)> = Vec::new();
        for s in segments {
            match files.last_mut() {
                Some((f, size)) if *f == s.master_file => *size = (*size).max(s.last_pos),
                _ => files.push((s.master_file.clone(), s.last_pos)),
            }
        }
        Archive {
            files,
            end_state: segments
                .last()
                .map(|s| s.end_state.clone())
                .unwrap_or_default(),
        }
    }
}

/// A query's failure: the ERR packet's code, SQLSTATE and message.
struct Refusal(u16, &'static str, String);

/// Variables one session may set (a replica's IO thread sets about ten,
/// mariadb-binlog fewer): beyond it a `SET` is refused, so that a client
/// cannot grow serve's memory without bound, one 64 KiB value at a time.
const MAX_VARIABLES: usize = 256;

fn unanswered(q: &str) -> Refusal {
    Refusal(
        1064,
        "42000",
        format!(
            "replseed serve does not answer `{}`",
            q.chars().take(80).collect::<String>()
        ),
    )
}

/// The global system variables serve has, by lower-case name (`None`:
/// not one of them, as a master without that plugin or feature).
fn global(name: &str, shared: &Shared, archive: Option<&Archive>) -> Option<String> {
    Some(match name {
        "version" => VERSION[6..].to_string(),
        "version_comment" => "replseed serve (binlog archive)".into(),
        "server_id" => shared.server_id.to_string(),
        "gtid_domain_id" => "0".into(),
        // As the dump sends it: the first made-up rotate carries a CRC32.
        "binlog_checksum" => "CRC32".into(),
        "log_bin" => "ON".into(),
        "binlog_format" => "ROW".into(),
        "read_only" => "ON".into(),
        "max_allowed_packet" => MAX_PACKET_AFTER_AUTH.to_string(),
        "wait_timeout" | "interactive_timeout" => shared.limits.idle_timeout.as_secs().to_string(),
        "gtid_binlog_pos" | "gtid_current_pos" => archive?.end_state.clone(),
        _ => return None,
    })
}

/// Every name [`global`] answers, for `SHOW VARIABLES`.
const GLOBALS: &[&str] = &[
    "binlog_checksum",
    "binlog_format",
    "gtid_binlog_pos",
    "gtid_current_pos",
    "gtid_domain_id",
    "interactive_timeout",
    "log_bin",
    "max_allowed_packet",
    "read_only",
    "server_id",
    "version",
    "version_comment",
    "wait_timeout",
];

/// Whether answering `q` needs the archive's manifests.
fn needs_archive(upper: &str) -> bool {
    upper.contains("GTID_BINLOG_POS")
        || upper.contains("GTID_CURRENT_POS")
        || upper.starts_with("SHOW MASTER")
        || upper.starts_with("SHOW BINLOG STATUS")
        || upper.starts_with("SHOW BINARY")
        || (upper.starts_with("SHOW") && upper.contains("VARIABLES") && {
            // Only a pattern that reaches the GTID positions: the IO
            // thread's `SHOW VARIABLES LIKE 'SERVER_ID'` must not depend on
            // reading the archive (a refused archive is the dump's 1236).
            match upper
                .split_once(" LIKE ")
                .and_then(|(_, p)| quoted(p.trim()))
            {
                Some(p) => {
                    let p = p.to_ascii_lowercase();
                    like(&p, "gtid_binlog_pos") || like(&p, "gtid_current_pos")
                }
                None => true,
            }
        })
}

/// Answers one query (text of `COM_QUERY`).
pub async fn answer(
    pk: &mut Packets,
    q: &str,
    req: &mut Requested,
    shared: &Shared,
) -> std::io::Result<()> {
    let norm = q.split_whitespace().collect::<Vec<_>>().join(" ");
    let norm = norm.trim_end_matches(';').trim_end().to_string();
    let upper = norm.to_ascii_uppercase();
    let archive = if needs_archive(&upper) {
        match shared.stage.segment_chain().await {
            Ok(s) => Some(Archive::of(&s)),
            Err(e) => {
                return pk
                    .err(
                        1105,
                        "HY000",
                        &format!("replseed serve cannot read the archive: {e}"),
                    )
                    .await
            }
        }
    } else {
        None
    };
    let answered = if let Some(rest) = strip_word(&norm, "SELECT") {
        select(pk, rest, req, shared, archive.as_ref()).await?
    } else if let Some(rest) = strip_word(&norm, "SET") {
        match set(rest, req, shared, archive.as_ref()) {
            Ok(()) => {
                pk.ok().await?;
                Ok(())
            }
            Err(r) => Err(r),
        }
    } else if let Some(rest) = strip_word(&norm, "SHOW") {
        show(pk, rest, req, shared, archive.as_ref()).await?
    } else if strip_word(&norm, "KILL").is_some() {
        // A semi-sync replica's STOP SLAVE kills its dump thread: the
        // dump ends when its connection does.
        pk.ok().await?;
        Ok(())
    } else {
        Err(unanswered(&norm))
    };
    match answered {
        Ok(()) => Ok(()),
        Err(Refusal(code, state, m)) => pk.err(code, state, &m).await,
    }
}

/// `s` after the keyword `word` (case-insensitive) and a space.
fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let head = s.get(..word.len())?;
    if !head.eq_ignore_ascii_case(word) {
        return None;
    }
    let rest = &s[word.len()..];
    if rest.is_empty() {
        return Some(rest);
    }
    rest.strip_prefix(' ')
}

/// Splits at commas outside quotes and parentheses.
fn split_list(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out
}

/// A quoted string's contents, or `None` when `s` is not one.
fn quoted(s: &str) -> Option<String> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = s.strip_prefix(q)?.strip_suffix(q)?;
    let doubled = format!("{q}{q}");
    Some(
        inner
            .replace(&doubled, &q.to_string())
            .replace("\\\\", "\\"),
    )
}

/// A system variable reference: its scope word stripped, lower-case.
fn system_name(expr: &str) -> Option<(Scope, String)> {
    let rest = expr.strip_prefix("@@")?;
    let lower = rest.to_ascii_lowercase();
    let (scope, name) = if let Some(n) = lower.strip_prefix("global.") {
        (Scope::Global, n)
    } else if let Some(n) = lower
        .strip_prefix("session.")
        .or_else(|| lower.strip_prefix("local."))
    {
        (Scope::Session, n)
    } else {
        (Scope::Any, lower.as_str())
    };
    let name = name.trim_matches('`');
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some((scope, name.to_string()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Global,
    Session,
    Any,
}

/// The value of one expression of a `SELECT` list or a `SET`.
fn value(
    expr: &str,
    req: &Requested,
    shared: &Shared,
    archive: Option<&Archive>,
) -> Result<Option<String>, Refusal> {
    if let Some((scope, name)) = system_name(expr) {
        if scope != Scope::Global {
            if let Some(v) = req.session_vars.get(&name) {
                return Ok(Some(v.clone()));
            }
        }
        if name == "socket" {
            // No Unix socket (NULL, as a server without one): clients
            // such as mysql_async ask on connect.
            return Ok(None);
        }
        return match global(&name, shared, archive) {
            Some(v) => Ok(Some(v)),
            None => Err(Refusal(
                UNKNOWN_VARIABLE,
                "HY000",
                format!("Unknown system variable '{name}'"),
            )),
        };
    }
    if let Some(name) = expr.strip_prefix('@') {
        let name = name.trim_matches('`').to_ascii_lowercase();
        return Ok(req.user_vars.get(&name).cloned());
    }
    if let Some(s) = quoted(expr) {
        return Ok(Some(s));
    }
    if !expr.is_empty()
        && expr
            .trim_start_matches('-')
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
    {
        return Ok(Some(expr.to_string()));
    }
    let call = expr.to_ascii_uppercase().replace(' ', "");
    match call.as_str() {
        "NULL" => Ok(None),
        "VERSION()" => Ok(Some(VERSION[6..].to_string())),
        "UNIX_TIMESTAMP()" => Ok(Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .to_string(),
        )),
        "DATABASE()" | "SCHEMA()" => Ok(None),
        _ => Err(unanswered(expr)),
    }
}

/// `SELECT item [[AS] alias], ... [FROM DUAL] [LIMIT n]`.
async fn select(
    pk: &mut Packets,
    list: &str,
    req: &Requested,
    shared: &Shared,
    archive: Option<&Archive>,
) -> std::io::Result<Result<(), Refusal>> {
    let mut list = list.trim();
    let mut limit = None;
    let upper = list.to_ascii_uppercase();
    if let Some(at) = upper.rfind(" LIMIT ") {
        match list[at + 7..].trim().parse::<usize>() {
            Ok(n) => {
                limit = Some(n);
                list = &list[..at];
            }
            Err(_) => return Ok(Err(unanswered(list))),
        }
    }
    let upper = list.to_ascii_uppercase();
    if upper.ends_with(" FROM DUAL") {
        list = &list[..list.len() - " FROM DUAL".len()];
    }
    let mut names = Vec::new();
    let mut row = Vec::new();
    for item in split_list(list) {
        let (expr, alias) = alias(item);
        match value(expr, req, shared, archive) {
            Ok(v) => {
                names.push(alias.unwrap_or(expr).to_string());
                row.push(v);
            }
            Err(r) => return Ok(Err(r)),
        }
    }
    let rows = if limit == Some(0) { vec![] } else { vec![row] };
    let cols: Vec<&str> = names.iter().map(String::as_str).collect();
    pk.result_set_nullable(&cols, &rows).await?;
    Ok(Ok(()))
}

/// An alias without its quotes.
fn unq(a: &str) -> &str {
    a.trim().trim_matches(|c| c == '`' || c == '\'' || c == '"')
}

/// An item's expression and its alias (`expr AS name`, `expr name`).
fn alias(item: &str) -> (&str, Option<&str>) {
    if let Some(at) = item.to_ascii_uppercase().rfind(" AS ") {
        return (item[..at].trim(), Some(unq(&item[at + 4..])));
    }
    // `@@x y`: an alias without AS, when the expression has no spaces.
    if let Some((e, a)) = item.rsplit_once(' ') {
        if !e.contains(' ') && !e.ends_with('(') && !a.contains('(') && quoted(e).is_none() {
            return (e.trim(), Some(unq(a)));
        }
    }
    (item.trim(), None)
}

/// `SET [SESSION|LOCAL] a = b, ...`, `SET NAMES ...`, `SET CHARACTER SET ...`.
fn set(
    rest: &str,
    req: &mut Requested,
    shared: &Shared,
    archive: Option<&Archive>,
) -> Result<(), Refusal> {
    let upper = rest.to_ascii_uppercase();
    if upper.starts_with("NAMES ") || upper.starts_with("CHARACTER SET ") {
        // The replies are ASCII names and binary events: any charset will do.
        return Ok(());
    }
    if upper.starts_with("GLOBAL ") || upper.starts_with("PERSIST ") {
        return Err(global_refused());
    }
    let rest = strip_word(rest, "SESSION")
        .or_else(|| strip_word(rest, "LOCAL"))
        .unwrap_or(rest);
    let mut user = Vec::new();
    let mut session = Vec::new();
    for a in split_list(rest) {
        let Some((lhs, rhs)) = a.split_once(":=").or_else(|| a.split_once('=')) else {
            return Err(unanswered(a));
        };
        let (lhs, rhs) = (lhs.trim(), rhs.trim());
        let v = value(rhs, req, shared, archive)?.unwrap_or_default();
        if let Some((scope, name)) = system_name(lhs) {
            if scope == Scope::Global {
                return Err(global_refused());
            }
            session.push((name, v));
        } else if let Some(name) = lhs.strip_prefix('@') {
            user.push((name.trim_matches('`').to_ascii_lowercase(), v));
        } else if lhs.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !lhs.is_empty() {
            session.push((lhs.to_ascii_lowercase(), v));
        } else {
            return Err(unanswered(a));
        }
    }
    let new = user
        .iter()
        .filter(|(n, _)| !req.user_vars.contains_key(n))
        .count()
        + session
            .iter()
            .filter(|(n, _)| !req.session_vars.contains_key(n))
            .count();
    if req.user_vars.len() + req.session_vars.len() + new > MAX_VARIABLES {
        return Err(Refusal(
            1105,
            "HY000",
            format!("replseed serve keeps at most {MAX_VARIABLES} variables per session"),
        ));
    }
    for (name, v) in user {
        req.set_user_var(&name, &v);
    }
    for (name, v) in session {
        if name == "skip_replication" {
            req.skip_replication = v == "1" || v.eq_ignore_ascii_case("ON");
        }
        req.session_vars.insert(name, v);
    }
    Ok(())
}

fn global_refused() -> Refusal {
    Refusal(
        1227,
        "42000",
        "replseed serve's global variables come from its archive: SET GLOBAL is refused".into(),
    )
}

/// `SHOW [GLOBAL|SESSION] VARIABLES [LIKE 'p']`, `SHOW MASTER STATUS`,
/// `SHOW BINLOG STATUS`, `SHOW BINARY LOGS`, `SHOW MASTER LOGS`.
async fn show(
    pk: &mut Packets,
    rest: &str,
    req: &Requested,
    shared: &Shared,
    archive: Option<&Archive>,
) -> std::io::Result<Result<(), Refusal>> {
    let upper = rest.to_ascii_uppercase();
    let none = Archive {
        files: vec![],
        end_state: String::new(),
    };
    let archive = archive.unwrap_or(&none);
    match upper.as_str() {
        "MASTER STATUS" | "BINLOG STATUS" => {
            let rows: Vec<Vec<String>> = archive
                .files
                .last()
                .map(|(f, pos)| vec![f.clone(), pos.to_string(), String::new(), String::new()])
                .into_iter()
                .collect();
            pk.result_set(
                &["File", "Position", "Binlog_Do_DB", "Binlog_Ignore_DB"],
                &rows,
            )
            .await?;
            return Ok(Ok(()));
        }
        "BINARY LOGS" | "MASTER LOGS" => {
            let rows: Vec<Vec<String>> = archive
                .files
                .iter()
                .map(|(f, size)| vec![f.clone(), size.to_string()])
                .collect();
            pk.result_set(&["Log_name", "File_size"], &rows).await?;
            return Ok(Ok(()));
        }
        _ => {}
    }
    let vars = strip_word(rest, "GLOBAL")
        .or_else(|| strip_word(rest, "SESSION"))
        .or_else(|| strip_word(rest, "LOCAL"))
        .unwrap_or(rest);
    let Some(filter) = strip_word(vars, "VARIABLES") else {
        return Ok(Err(unanswered(&format!("SHOW {rest}"))));
    };
    let pattern = if filter.is_empty() {
        None
    } else if let Some(p) = strip_word(filter, "LIKE").and_then(quoted) {
        Some(p.to_ascii_lowercase())
    } else {
        return Ok(Err(unanswered(&format!("SHOW {rest}"))));
    };
    let session = !upper.starts_with("GLOBAL ");
    let mut rows = Vec::new();
    let mut names: Vec<String> = GLOBALS.iter().map(|s| s.to_string()).collect();
    if session {
        names.extend(req.session_vars.keys().cloned());
    }
    names.sort();
    names.dedup();
    for name in names {
        if pattern.as_deref().is_some_and(|p| !like(p, &name)) {
            continue;
        }
        let v = match (session, req.session_vars.get(&name)) {
            (true, Some(v)) => Some(v.clone()),
            _ => global(&name, shared, Some(archive)),
        };
        if let Some(v) = v {
            rows.push(vec![name, v]);
        }
    }
    pk.result_set(&["Variable_name", "Value"], &rows).await?;
    Ok(Ok(()))
}

/// SQL `LIKE` (`%`, `_`, `\` escapes) on lower-case ASCII names.
fn like(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'%', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some((b'_', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((b'\\', rest)) if !rest.is_empty() => {
                s.first() == Some(&rest[0]) && go(&rest[1..], &s[1..])
            }
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_matches_as_sql() {
        assert!(like("server_id", "server_id"));
        assert!(like("rpl_semi_sync%", "rpl_semi_sync_master_enabled"));
        assert!(!like("rpl_semi_sync%", "server_id"));
        assert!(like("gtid\\_%pos", "gtid_binlog_pos"));
        assert!(like("_og_bin", "log_bin"));
    }

    #[test]
    fn lists_split_outside_quotes() {
        assert_eq!(
            split_list("@a := 'x,y', @@b, f(1, 2)"),
            vec!["@a := 'x,y'", "@@b", "f(1, 2)"]
        );
        assert_eq!(alias("@@version AS v"), ("@@version", Some("v")));
        assert_eq!(alias("@@version v"), ("@@version", Some("v")));
        assert_eq!(alias("VERSION()"), ("VERSION()", None));
        assert_eq!(quoted("'it''s'").as_deref(), Some("it's"));
    }
}
