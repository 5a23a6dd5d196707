//! Schema discovery on the source, under `BACKUP STAGE BLOCK_DDL`: which
//! databases to copy, and every object of one database. Tables are read in
//! `tables.rs`; views, sequences, triggers, routines and events in
//! `objects.rs`.

mod objects;
mod tables;

use mysql_async::{Conn, Value};
use replseed_db::{quote_ident, rows, text, Server};
use replseed_stage::manifest::{Database, Table};

use crate::split::SplitKey;
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

/// A nullable text column.
fn opt_s(v: &Value) -> Option<String> {
    match v {
        Value::NULL => None,
        other => Some(text(other)),
    }
}

/// A nullable unsigned column.
fn u(v: &Value) -> Option<u64> {
    mysql_async::from_value_opt::<u64>(v.clone()).ok()
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

/// Reads the databases to copy with every object, and, for a subset
/// (`wanted`), the other databases' definitions with their routines and
/// events only ([`Manifest::outside_subset`](replseed_stage::Manifest::outside_subset)).
pub async fn read_all(
    conn: &mut Conn,
    server: &Server,
    wanted: Option<&[String]>,
) -> Result<(Vec<Database>, Vec<TablePlan>), ExtractError> {
    let mut out = Vec::new();
    let mut tables = Vec::new();
    let dbs = databases(conn, server, wanted).await?;
    for db in &dbs {
        let (d, t) = database(conn, server, db).await?;
        out.push(d);
        tables.extend(t);
    }
    if wanted.is_some() {
        for db in databases(conn, server, None).await.unwrap_or_default() {
            if dbs.contains(&db) {
                continue;
            }
            let mut d = definition(conn, server, &db).await?;
            d.routines = objects::routines(conn, server, &db).await?;
            d.events = objects::events(conn, server, &db).await?;
            out.push(d);
        }
    }
    Ok((out, tables))
}

/// Reads every object of one database: its definition, then its tables,
/// views and sequences (in name order), triggers, routines and events.
pub async fn database(
    conn: &mut Conn,
    server: &Server,
    db: &str,
) -> Result<(Database, Vec<TablePlan>), ExtractError> {
    let mut database = definition(conn, server, db).await?;
    let listed = rows(
        conn,
        server,
        "SELECT TABLE_NAME, TABLE_TYPE, ENGINE, TABLE_ROWS FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA=? ORDER BY TABLE_NAME",
        (db,),
    )
    .await?;
    let facts = tables::Facts::read(conn, server, db).await?;
    let mut plans = Vec::new();
    for t in &listed {
        let name = text(&t[0]);
        match text(&t[1]).as_str() {
            "VIEW" => database
                .views
                .push(objects::view(conn, server, db, name).await?),
            "SEQUENCE" => database
                .sequences
                .push(objects::sequence(conn, server, db, name).await?),
            ttype @ ("BASE TABLE" | "SYSTEM VERSIONED") => {
                let listed = tables::Listed {
                    name,
                    versioned: ttype == "SYSTEM VERSIONED",
                    engine: text(&t[2]),
                    est_rows: u(&t[3]).unwrap_or(0),
                };
                plans.push(tables::table(conn, server, db, listed, &facts).await?);
            }
            other => {
                return Err(ExtractError::Unsupported {
                    table: format!("{db}.{name}"),
                    detail: format!("table type {other}"),
                })
            }
        }
    }
    database.triggers = objects::triggers(conn, server, db).await?;
    database.routines = objects::routines(conn, server, db).await?;
    database.events = objects::events(conn, server, db).await?;
    Ok((database, plans))
}

/// The database's own definition and character set, with no objects yet.
async fn definition(conn: &mut Conn, server: &Server, db: &str) -> Result<Database, ExtractError> {
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
    Ok(Database {
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
    })
}
