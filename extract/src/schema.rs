//! Schema discovery on the source, under `BACKUP STAGE BLOCK_DDL`.

use std::collections::{BTreeMap, HashMap, HashSet};

use mysql_async::{Conn, Value};
use replseed_db::{qualified, quote_ident, rows, text, Server};
use replseed_stage::manifest::{Database, Object, Sequence, Table};
use replseed_stage::types::{
    assign_sidecars, implicit_period_columns, json_check_column, period_is_copyable, ColumnKind,
    ColumnSpec,
};

use crate::split::{choose, IndexInfo, SplitKey};
use crate::ExtractError;

use replseed_stage::SYSTEM_SCHEMAS;

/// A table to copy, with planning facts that do not go in the manifest.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// Database.
    pub db: String,
    /// The manifest entry being filled.
    pub table: Table,
    /// Estimated rows (information_schema.TABLES.TABLE_ROWS).
    pub est_rows: u64,
    /// The index a big table is split along (see `split.rs`).
    pub split: Option<SplitKey>,
}

fn opt_s(v: &Value) -> Option<String> {
    match v {
        Value::NULL => None,
        other => Some(text(other)),
    }
}

fn u(v: &Value) -> Option<u64> {
    mysql_async::from_value_opt::<u64>(v.clone()).ok()
}

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

/// Lists the databases to copy.
pub async fn databases(
    conn: &mut Conn,
    server: &Server,
    wanted: Option<&[String]>,
) -> Result<Vec<String>, ExtractError> {
    let all: Vec<String> = rows(
        conn,
        server,
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
        (),
    )
    .await?
    .iter()
    .map(|r| text(&r[0]))
    .collect();
    match wanted {
        Some(list) => {
            for w in list {
                if !all.contains(w) {
                    return Err(ExtractError::NoSuchDatabase {
                        server: server.name(),
                        database: w.clone(),
                    });
                }
                if SYSTEM_SCHEMAS.contains(&w.as_str()) {
                    return Err(ExtractError::Usage(format!(
                        "`{w}` is a system database and cannot be copied; list application databases in --databases"
                    )));
                }
            }
            Ok(list.to_vec())
        }
        None => {
            let dbs: Vec<String> = all
                .into_iter()
                .filter(|d| !SYSTEM_SCHEMAS.contains(&d.as_str()))
                .collect();
            if dbs.is_empty() {
                return Err(ExtractError::Privilege {
                    server: server.name(),
                    detail: format!(
                        "user `{}` sees no database to copy (a user sees only the databases it has privileges on)",
                        server.user()
                    ),
                    grant: "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON *.* (or on each database)".into(),
                });
            }
            Ok(dbs)
        }
    }
}

/// Reads every object of one database.
pub async fn database(
    conn: &mut Conn,
    server: &Server,
    db: &str,
) -> Result<(Database, Vec<TablePlan>), ExtractError> {
    let create = rows(
        conn,
        server,
        &format!("SHOW CREATE DATABASE {}", quote_ident(db)),
        (),
    )
    .await?;
    let cs = rows(
        conn,
        server,
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME=?",
        (db,),
    )
    .await?;
    let mut database = Database {
        name: db.to_string(),
        create_sql: text(&create[0][1]),
        charset: text(&cs[0][0]),
        collation: text(&cs[0][1]),
        tables: Vec::new(),
        sequences: Vec::new(),
        views: Vec::new(),
        triggers: Vec::new(),
        routines: Vec::new(),
        events: Vec::new(),
    };

    // Tables, views and sequences.
    let tables = rows(
        conn,
        server,
        "SELECT TABLE_NAME, TABLE_TYPE, ENGINE, TABLE_ROWS FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA=? ORDER BY TABLE_NAME",
        (db,),
    )
    .await?;

    // Columns of every table of the database, in order.
    let mut columns: BTreeMap<String, Vec<Vec<Value>>> = BTreeMap::new();
    for r in rows(
        conn,
        server,
        "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME, \
         IS_NULLABLE, EXTRA, IS_GENERATED, GENERATION_EXPRESSION, NUMERIC_PRECISION, NUMERIC_SCALE \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=? ORDER BY TABLE_NAME, ORDINAL_POSITION",
        (db,),
    )
    .await?
    {
        columns.entry(text(&r[0])).or_default().push(r);
    }
    let mut pks: HashMap<String, Vec<String>> = HashMap::new();
    // Every index, for splitting big tables (`split.rs`).
    let mut indexes: HashMap<String, Vec<IndexInfo>> = HashMap::new();
    for r in rows(
        conn,
        server,
        "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME, NON_UNIQUE, SUB_PART, INDEX_TYPE \
         FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA=? ORDER BY TABLE_NAME, INDEX_NAME='PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
        (db,),
    )
    .await?
    {
        let (table, index, column) = (text(&r[0]), text(&r[1]), text(&r[2]));
        if index == "PRIMARY" {
            pks.entry(table.clone()).or_default().push(column.clone());
        }
        let list = indexes.entry(table).or_default();
        if list.last().is_none_or(|i| i.name != index) {
            list.push(IndexInfo {
                name: index,
                unique: text(&r[3]) == "0",
                kind: text(&r[5]),
                columns: Vec::new(),
            });
        }
        let ix = list.last_mut().expect("index just pushed");
        ix.columns.push((column, u(&r[4])));
    }
    let mut json_cols: HashSet<(String, String)> = HashSet::new();
    for r in rows(
        conn,
        server,
        "SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
         WHERE CONSTRAINT_SCHEMA=? AND LEVEL='Column'",
        (db,),
    )
    .await?
    {
        if let Some(col) = json_check_column(&text(&r[1])) {
            json_cols.insert((text(&r[0]), col));
        }
    }
    let mut fk_tables: HashSet<String> = HashSet::new();
    for r in rows(
        conn,
        server,
        "SELECT TABLE_NAME, REFERENCED_TABLE_NAME, UNIQUE_CONSTRAINT_SCHEMA FROM information_schema.REFERENTIAL_CONSTRAINTS \
         WHERE CONSTRAINT_SCHEMA=? OR UNIQUE_CONSTRAINT_SCHEMA=?",
        (db, db),
    )
    .await?
    {
        fk_tables.insert(text(&r[0]));
        if text(&r[2]) == db {
            fk_tables.insert(text(&r[1]));
        }
    }

    let mut plans = Vec::new();
    for t in &tables {
        let name = text(&t[0]);
        let ttype = text(&t[1]);
        let engine = text(&t[2]);
        match ttype.as_str() {
            "VIEW" => {
                let r = show_create_raw(
                    conn,
                    server,
                    &format!("SHOW CREATE VIEW {}", qualified(db, &name)),
                )
                .await?;
                let r = &r[0];
                database.views.push(object(
                    name, "view", &r[1], None, &r[2], &r[3], None, None, None,
                ));
            }
            "SEQUENCE" => {
                let r = rows(
                    conn,
                    server,
                    &format!("SHOW CREATE SEQUENCE {}", qualified(db, &name)),
                    (),
                )
                .await?;
                database.sequences.push(Sequence {
                    name,
                    create_sql: text(&r[0][1]),
                    row: Vec::new(), // read inside the snapshot
                });
            }
            "BASE TABLE" | "SYSTEM VERSIONED" => {
                let versioned = ttype == "SYSTEM VERSIONED";
                let r = rows(
                    conn,
                    server,
                    &format!("SHOW CREATE TABLE {}", qualified(db, &name)),
                    (),
                )
                .await?;
                let create_sql = text(&r[0][1]);
                let cols = columns.get(&name).cloned().unwrap_or_default();
                let mut specs = Vec::new();
                let mut all_columns = Vec::new();
                let mut has_explicit_period = false;
                for c in &cols {
                    let cname = text(&c[1]);
                    all_columns.push(cname.clone());
                    let extra = text(&c[7]);
                    let generated = text(&c[8]) == "ALWAYS";
                    let gen_expr = text(&c[9]);
                    let period = gen_expr == "ROW START" || gen_expr == "ROW END";
                    if period {
                        has_explicit_period = true;
                    }
                    if generated && !period {
                        continue; // recomputed by the replica
                    }
                    let data_type = text(&c[2]);
                    let column_type = text(&c[3]);
                    let charset = opt_s(&c[4]);
                    let is_json = json_cols.contains(&(name.clone(), cname.clone()));
                    let kind = ColumnKind::classify(
                        &data_type,
                        &column_type,
                        charset.as_deref(),
                        u(&c[10]),
                        u(&c[11]),
                        is_json,
                    )
                    .map_err(|e| ExtractError::Unsupported {
                        table: format!("{db}.{name}"),
                        detail: format!("column `{cname}`: {e}"),
                    })?;
                    if period && !period_is_copyable(&data_type) {
                        return Err(ExtractError::Unsupported {
                            table: format!("{db}.{name}"),
                            detail: "transaction-precise system versioning (ROW START of type BIGINT) cannot be copied: its history refers to the master's transaction ids".into(),
                        });
                    }
                    specs.push(ColumnSpec {
                        name: cname,
                        column_type,
                        data_type,
                        charset,
                        collation: opt_s(&c[5]),
                        nullable: text(&c[6]) == "YES",
                        invisible: extra.contains("INVISIBLE"),
                        auto_increment: extra.contains("auto_increment"),
                        kind,
                        raw_column: None,
                        index_column: None,
                    });
                }
                if versioned && !has_explicit_period {
                    specs.extend(implicit_period_columns());
                }
                assign_sidecars(&mut specs);
                let mut primary_key = pks.get(&name).cloned().unwrap_or_default();
                if versioned {
                    // The history makes the declared key non-unique; row end completes it.
                    let end = if has_explicit_period {
                        cols.iter()
                            .find(|c| text(&c[9]) == "ROW END")
                            .map(|c| text(&c[1]))
                    } else {
                        Some("ROW_END".to_string())
                    };
                    if let Some(end) = end {
                        if !primary_key.is_empty() && !primary_key.contains(&end) {
                            primary_key.push(end);
                        }
                    }
                }
                let transactional = engine.eq_ignore_ascii_case("InnoDB");
                let est_rows = u(&t[3]).unwrap_or(0);
                let mut plan = TablePlan {
                    db: db.to_string(),
                    est_rows,
                    split: None,
                    table: Table {
                        name: name.clone(),
                        engine,
                        transactional,
                        create_sql,
                        system_versioned: versioned,
                        columns: specs,
                        all_columns,
                        primary_key,
                        has_foreign_keys: fk_tables.contains(&name),
                        rows: 0,
                        bytes: 0,
                        chunks: Vec::new(),
                    },
                };
                plan.split = choose(
                    &plan.table,
                    indexes.get(&name).map(Vec::as_slice).unwrap_or(&[]),
                );
                plans.push(plan);
            }
            other => {
                return Err(ExtractError::Unsupported {
                    table: format!("{db}.{name}"),
                    detail: format!("table type {other}"),
                })
            }
        }
    }

    // Triggers, in table and action order.
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
        database.triggers.push(object(
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

    // Procedures and functions.
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
        database.routines.push(object(
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

    // Events.
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
        database.events.push(object(
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
    Ok((database, plans))
}
