//! The objects of a database other than tables, one function per kind:
//! views, sequences, triggers, routines and events. Definitions are read
//! as the bytes the master holds (see [`show_create_raw`]).

use mysql_async::{Conn, Value};
use replseed_db::{qualified, rows, text, Server};
use replseed_stage::manifest::{Object, Sequence};

use super::opt_s;
use crate::ExtractError;

/// Runs `SHOW CREATE VIEW/TRIGGER/PROCEDURE/FUNCTION/EVENT` with binary
/// results: the definition comes back in the bytes the object was created
/// with (its `character_set_client`), which is how it must be replayed.
/// Read as utf8mb4, a latin1 definition would be converted and then be
/// converted again on replay (what mysqldump avoids the same way).
async fn show_create_raw(
    conn: &mut Conn,
    server: &Server,
    sql: &str,
) -> Result<Vec<Vec<Value>>, ExtractError> {
    replseed_db::exec(conn, server, "SET SESSION character_set_results=binary", ()).await?;
    let r = rows(conn, server, sql, ()).await;
    replseed_db::exec(
        conn,
        server,
        "SET SESSION character_set_results=utf8mb4",
        (),
    )
    .await?;
    Ok(r?)
}

/// The raw bytes of a value (NULL is empty).
fn raw(v: &Value) -> Vec<u8> {
    match v {
        Value::Bytes(b) => b.clone(),
        other => text(other).into_bytes(),
    }
}

/// An object from `SHOW CREATE` columns read with binary results.
#[allow(clippy::too_many_arguments)]
fn object(
    name: String,
    kind: &str,
    definition: &Value,
    sql_mode: Option<&Value>,
    client: &Value,
    connection: &Value,
    database_collation: Option<&Value>,
    table: Option<String>,
    time_zone: Option<&Value>,
) -> Object {
    let mut o = Object {
        name,
        kind: kind.into(),
        create_sql: String::new(),
        create_sql_hex: None,
        sql_mode: sql_mode.and_then(opt_s),
        character_set_client: opt_s(client),
        collation_connection: opt_s(connection),
        database_collation: database_collation.and_then(opt_s),
        table,
        time_zone: time_zone.and_then(opt_s),
    };
    o.set_create_bytes(raw(definition));
    o
}

/// A view (`SHOW CREATE VIEW`: View, Create View, character_set_client,
/// collation_connection).
pub(super) async fn view(
    conn: &mut Conn,
    server: &Server,
    db: &str,
    name: String,
) -> Result<Object, ExtractError> {
    let r = show_create_raw(
        conn,
        server,
        &format!("SHOW CREATE VIEW {}", qualified(db, &name)),
    )
    .await?;
    let r = &r[0];
    Ok(object(
        name, "view", &r[1], None, &r[2], &r[3], None, None, None,
    ))
}

/// A sequence's definition; its state is read inside the snapshot.
pub(super) async fn sequence(
    conn: &mut Conn,
    server: &Server,
    db: &str,
    name: String,
) -> Result<Sequence, ExtractError> {
    let r = rows(
        conn,
        server,
        &format!("SHOW CREATE SEQUENCE {}", qualified(db, &name)),
        (),
    )
    .await?;
    Ok(Sequence {
        name,
        create_sql: text(&r[0][1]),
        row: Vec::new(), // read inside the snapshot
    })
}

/// The database's triggers, in table and action order.
pub(super) async fn triggers(
    conn: &mut Conn,
    server: &Server,
    db: &str,
) -> Result<Vec<Object>, ExtractError> {
    let mut out = Vec::new();
    for r in rows(
        conn,
        server,
        "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS \
         WHERE TRIGGER_SCHEMA=? ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER",
        (db,),
    )
    .await?
    {
        let name = text(&r[0]);
        let d = show_create_raw(
            conn,
            server,
            &format!("SHOW CREATE TRIGGER {}", qualified(db, &name)),
        )
        .await?;
        let d = &d[0];
        out.push(object(
            name,
            "trigger",
            &d[2],
            Some(&d[1]),
            &d[3],
            &d[4],
            Some(&d[5]),
            Some(text(&r[1])),
            None,
        ));
    }
    Ok(out)
}

/// The database's procedures, functions and packages, by type and name.
pub(super) async fn routines(
    conn: &mut Conn,
    server: &Server,
    db: &str,
) -> Result<Vec<Object>, ExtractError> {
    let mut out = Vec::new();
    for r in rows(
        conn,
        server,
        "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES \
         WHERE ROUTINE_SCHEMA=? ORDER BY ROUTINE_TYPE, ROUTINE_NAME",
        (db,),
    )
    .await?
    {
        let name = text(&r[0]);
        let rtype = text(&r[1]);
        let kind = match rtype.as_str() {
            "PROCEDURE" => "procedure",
            "FUNCTION" => "function",
            "PACKAGE" => "package",
            "PACKAGE BODY" => "package body",
            other => {
                return Err(ExtractError::Unsupported {
                    table: format!("{db}.{name}"),
                    detail: format!("routine type {other}"),
                })
            }
        };
        let d = show_create_raw(
            conn,
            server,
            &format!("SHOW CREATE {rtype} {}", qualified(db, &name)),
        )
        .await?;
        let Some(def) = d.first() else { continue };
        if def.get(2).map(|v| matches!(v, Value::NULL)).unwrap_or(true) {
            return Err(ExtractError::Privilege {
                server: server.name(),
                detail: format!("cannot read the definition of {kind} {db}.{name}"),
                grant: "GRANT SELECT ON mysql.proc".into(),
            });
        }
        out.push(object(
            name,
            kind,
            &def[2],
            Some(&def[1]),
            &def[3],
            &def[4],
            Some(&def[5]),
            None,
            None,
        ));
    }
    Ok(out)
}

/// The database's events, by name.
pub(super) async fn events(
    conn: &mut Conn,
    server: &Server,
    db: &str,
) -> Result<Vec<Object>, ExtractError> {
    let mut out = Vec::new();
    for r in rows(
        conn,
        server,
        "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA=? ORDER BY EVENT_NAME",
        (db,),
    )
    .await?
    {
        let name = text(&r[0]);
        let d = show_create_raw(
            conn,
            server,
            &format!("SHOW CREATE EVENT {}", qualified(db, &name)),
        )
        .await?;
        let d = &d[0];
        out.push(object(
            name,
            "event",
            &d[3],
            Some(&d[1]),
            &d[4],
            &d[5],
            Some(&d[6]),
            None,
            Some(&d[2]),
        ));
    }
    Ok(out)
}
