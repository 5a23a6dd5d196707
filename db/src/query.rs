//! Statements with bound parameters, and quoting for what cannot be bound.

use mysql_async::prelude::Queryable;
use mysql_async::{from_value_opt, Conn, Params, Row, Value};

use crate::error::mask_passwords;
use crate::{DbError, Server};

/// Quotes an identifier with backticks.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `db`.`name`.
pub fn qualified(db: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(db), quote_ident(name))
}

/// The statement that drops the object `db`.`name` of `kind` if it
/// exists; `None` for a kind that is not dropped this way (a database).
pub fn drop_if_exists(kind: &str, db: &str, name: &str) -> Option<String> {
    let q = qualified(db, name);
    Some(match kind {
        "table" => format!("DROP TABLE IF EXISTS {q}"),
        "view" => format!("DROP VIEW IF EXISTS {q}"),
        "sequence" => format!("DROP SEQUENCE IF EXISTS {q}"),
        "trigger" => format!("DROP TRIGGER IF EXISTS {q}"),
        "procedure" => format!("DROP PROCEDURE IF EXISTS {q}"),
        "function" => format!("DROP FUNCTION IF EXISTS {q}"),
        "package" => format!("DROP PACKAGE IF EXISTS {q}"),
        "package body" => format!("DROP PACKAGE BODY IF EXISTS {q}"),
        "event" => format!("DROP EVENT IF EXISTS {q}"),
        _ => return None,
    })
}

/// Quotes a string literal, for the few statement positions that take a
/// literal and no parameter (`CHANGE MASTER TO MASTER_HOST='...'`). Every
/// other value is bound.
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

/// A value as text, the way the server sent it (NULL is the empty string).
pub fn text(v: &Value) -> String {
    match v {
        Value::NULL => String::new(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => from_value_opt::<String>(other.clone())
            .unwrap_or_else(|_| other.as_sql(true).trim_matches('\'').to_string()),
    }
}

/// SQL as it may appear in a message: passwords masked, long text cut.
fn short(sql: &str) -> String {
    mask_passwords(sql).chars().take(160).collect()
}

fn is_empty(params: &Params) -> bool {
    match params {
        Params::Empty => true,
        Params::Positional(p) => p.is_empty(),
        Params::Named(n) => n.is_empty(),
    }
}

/// Runs a query and returns every row as values. Parameters are bound
/// (binary protocol); without any, the text protocol is used.
pub async fn rows(
    conn: &mut Conn,
    server: &Server,
    sql: &str,
    params: impl Into<Params>,
) -> Result<Vec<Vec<Value>>, DbError> {
    let params = params.into();
    let r: Result<Vec<Row>, _> = if is_empty(&params) {
        conn.query(sql).await
    } else {
        conn.exec(sql, params).await
    };
    let r = r.map_err(|e| server.err(format!("running `{}`", short(sql)), &e))?;
    Ok(r.into_iter().map(|r| r.unwrap()).collect())
}

/// Runs a query and returns its first row (empty when there is none).
pub async fn first(
    conn: &mut Conn,
    server: &Server,
    sql: &str,
    params: impl Into<Params>,
) -> Result<Vec<Value>, DbError> {
    let params = params.into();
    let r: Result<Option<Row>, _> = if is_empty(&params) {
        conn.query_first(sql).await
    } else {
        conn.exec_first(sql, params).await
    };
    let r = r.map_err(|e| server.err(format!("running `{}`", short(sql)), &e))?;
    Ok(r.map(|r| r.unwrap()).unwrap_or_default())
}

/// Runs a statement.
pub async fn exec(
    conn: &mut Conn,
    server: &Server,
    sql: &str,
    params: impl Into<Params>,
) -> Result<(), DbError> {
    let params = params.into();
    let r = if is_empty(&params) {
        conn.query_drop(sql).await
    } else {
        conn.exec_drop(sql, params).await
    };
    r.map_err(|e| server.err(format!("running `{}`", short(sql)), &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(qualified("d", "t"), "`d`.`t`");
        assert_eq!(quote_str("it's\\"), "'it''s\\\\'");
        assert_eq!(text(&Value::Int(-3)), "-3");
        assert_eq!(text(&Value::UInt(7)), "7");
        assert_eq!(text(&Value::NULL), "");
    }
}
