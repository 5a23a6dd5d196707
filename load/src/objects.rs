//! Creating the snapshot's objects on the target: databases and tables
//! (secondary indexes deferred, then built), sequences with their state,
//! views, routines, triggers and events. Every step is recorded in the
//! bookkeeping, so a resumed load creates only what is missing.

use std::collections::BTreeSet;
use std::time::Instant;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use replseed_db::{exec, qualified, quote_ident, rows, text, Server};
use replseed_stage::manifest::{disable_on_slave, Database, Manifest, Object, Table};
use tracing::{debug, info, warn};

use crate::bookkeeping::{self, set_state, ObjKey, States};
use crate::conflict::Conflict;
use crate::ddl;
use crate::session::SQL_MODE;
use crate::LoadError;

fn object_error(object: String, e: &mysql_async::Error) -> LoadError {
    LoadError::Object {
        object,
        detail: replseed_db::describe(e).0,
    }
}

/// The statement that drops an object found as `found_kind`; `None` for a
/// database (databases are never dropped).
pub fn drop_statement(key: &ObjKey, found_kind: &str) -> Option<String> {
    replseed_db::drop_if_exists(found_kind, &key.db, &key.name)
}

/// `--force`: drops exactly the conflicting objects. An existing database
/// is kept (other objects in it are not ours) and gets the snapshot's
/// defaults. Returns one line per object replaced.
pub async fn replace_conflicts(
    conn: &mut Conn,
    server: &Server,
    m: &Manifest,
    conflicts: &[Conflict],
) -> Result<Vec<String>, LoadError> {
    let mut replaced = Vec::new();
    for Conflict { key, found, .. } in conflicts {
        if key.kind == "account" {
            let sql = crate::accounts::drop_statement(key, found);
            warn!(target = %server.addr(), "--force: {sql}");
            exec(conn, server, &sql, ()).await?;
            replaced.push(format!("{found} {}@{}", key.db, key.name));
            continue;
        }
        match drop_statement(key, found) {
            Some(sql) => {
                warn!(target = %server.addr(), "--force: {sql}");
                exec(conn, server, &sql, ()).await?;
                replaced.push(format!("{found} {}.{}", key.db, key.name));
            }
            None => {
                let d = m.databases.iter().find(|d| d.name == key.db).expect("db");
                let sql = format!(
                    "ALTER DATABASE {} CHARACTER SET {} COLLATE {}",
                    quote_ident(&d.name),
                    quote_ident(&d.charset),
                    quote_ident(&d.collation)
                );
                exec(conn, server, &sql, ()).await?;
                set_state(conn, server, &m.snapshot, key, "adopted").await?;
                replaced.push(format!("database {} (kept, defaults set)", key.db));
            }
        }
    }
    Ok(replaced)
}

/// A table to fill: its database, its manifest entry, and the secondary
/// indexes still to build once its data is in.
#[derive(Debug, Clone)]
pub struct TableToLoad {
    /// Database.
    pub db: String,
    /// The table.
    pub table: Table,
    /// `ADD ...` clauses of the deferred indexes (empty once built).
    pub deferred: Vec<String>,
}

/// Creates the databases and the tables not created yet (a table whose
/// load never started is created anew; a non-transactional table that was
/// interrupted is emptied, as it cannot roll back a half-loaded chunk).
pub async fn create_tables(
    conn: &mut Conn,
    server: &Server,
    m: &Manifest,
) -> Result<Vec<TableToLoad>, LoadError> {
    let mut ours = bookkeeping::states(conn, server, &m.snapshot).await?;
    let mut out = Vec::new();
    for d in &m.databases {
        let dkey = ObjKey::new("database", &d.name, "");
        if !ours.contains_key(&dkey) {
            set_state(conn, server, &m.snapshot, &dkey, "pending").await?;
            let exists = rows(
                conn,
                server,
                "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME=?",
                (&d.name,),
            )
            .await?;
            if exists.is_empty() {
                exec(conn, server, &d.create_sql, ()).await?;
            }
            set_state(conn, server, &m.snapshot, &dkey, "created").await?;
        }
        for t in &d.tables {
            let key = ObjKey::new("table", &d.name, &t.name);
            let split = if ddl::can_defer(t) {
                ddl::split_table(t)
            } else {
                ddl::SplitDdl {
                    create: t.create_sql.clone(),
                    deferred: Vec::new(),
                }
            };
            let state = ours.get(&key).cloned().unwrap_or_default();
            if matches!(state.as_str(), "" | "pending") {
                set_state(conn, server, &m.snapshot, &key, "pending").await?;
                let sql = format!("DROP TABLE IF EXISTS {}", qualified(&d.name, &t.name));
                exec(conn, server, &sql, ()).await?;
                bookkeeping::forget_chunks(conn, server, &m.snapshot, &d.name, &t.name).await?;
                conn.query_drop(format!("USE {}", quote_ident(&d.name)))
                    .await
                    .map_err(|e| server.err("USE", &e))?;
                conn.query_drop(split.create.as_str())
                    .await
                    .map_err(|e| object_error(format!("table {}.{}", d.name, t.name), &e))?;
                set_state(conn, server, &m.snapshot, &key, "created").await?;
                ours.insert(key.clone(), "created".into());
            } else if !t.transactional && state == "created" {
                let sql = format!("TRUNCATE TABLE {}", qualified(&d.name, &t.name));
                exec(conn, server, &sql, ()).await?;
                bookkeeping::forget_chunks(conn, server, &m.snapshot, &d.name, &t.name).await?;
            }
            let indexed = ours.get(&key).is_some_and(|s| s == "indexed");
            out.push(TableToLoad {
                db: d.name.clone(),
                table: t.clone(),
                deferred: if indexed { Vec::new() } else { split.deferred },
            });
        }
    }
    Ok(out)
}

/// Marks a table loaded and builds its deferred secondary indexes (only the
/// missing ones: a killed `ALTER` leaves none or all, but be exact).
pub async fn finish_table(
    conn: &mut Conn,
    server: &Server,
    snapshot: &str,
    t: &TableToLoad,
) -> Result<(), LoadError> {
    let (db, name) = (t.db.as_str(), t.table.name.as_str());
    let key = ObjKey::new("table", db, name);
    set_state(conn, server, snapshot, &key, "loaded").await?;
    if !t.deferred.is_empty() {
        let have: BTreeSet<String> = rows(
            conn,
            server,
            "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA=? AND TABLE_NAME=?",
            (db, name),
        )
        .await?
        .iter()
        .map(|r| text(&r[0]))
        .collect();
        let missing: Vec<&str> = t
            .deferred
            .iter()
            .filter(|clause| ddl::index_name(clause).is_none_or(|n| !have.contains(&n)))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let t0 = Instant::now();
            let sql = format!("ALTER TABLE {} {}", qualified(db, name), missing.join(", "));
            conn.query_drop(sql.as_str())
                .await
                .map_err(|e| object_error(format!("indexes of {db}.{name}"), &e))?;
            info!(table = %format!("{db}.{name}"), indexes = missing.len(), secs = t0.elapsed().as_secs_f64(), "secondary indexes built");
        }
    }
    set_state(conn, server, snapshot, &key, "indexed").await?;
    Ok(())
}

/// Runs an object's DDL with `db` as the default database and the session
/// context the object was created with; the loader's context is restored.
async fn create_object(
    conn: &mut Conn,
    server: &Server,
    db: &str,
    o: &Object,
) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!("USE {}", quote_ident(db))).await?;
    let mut restore = Vec::new();
    if let Some(m) = &o.sql_mode {
        conn.exec_drop("SET SESSION sql_mode=?", (m,)).await?;
        restore.push(format!("SET SESSION sql_mode='{SQL_MODE}'"));
    }
    if let Some(cs) = &o.character_set_client {
        conn.exec_drop("SET SESSION character_set_client=?", (cs,))
            .await?;
        restore.push("SET NAMES utf8mb4".to_string());
    }
    if let Some(c) = &o.collation_connection {
        conn.exec_drop("SET SESSION collation_connection=?", (c,))
            .await?;
    }
    if let Some(tz) = &o.time_zone {
        conn.exec_drop("SET SESSION time_zone=?", (tz,)).await?;
        restore.push("SET SESSION time_zone='+00:00'".to_string());
    }
    let mut sql = o
        .create_bytes()
        .map_err(|e| mysql_async::Error::Other(e.into()))?;
    if o.kind == "event" {
        sql = disable_on_slave(sql);
    }
    let r = conn.query_drop(sql).await;
    for s in restore {
        let _ = conn.query_drop(s).await;
    }
    debug!(server = %server.name(), object = %o.name, "created {}", o.kind);
    r
}

/// Everything that is not table data, in dependency order: sequences,
/// routines (views may call functions), views, then triggers and events.
pub async fn create_the_rest(
    conn: &mut Conn,
    server: &Server,
    m: &Manifest,
) -> Result<(), LoadError> {
    let mut ours = bookkeeping::states(conn, server, &m.snapshot).await?;
    for d in &m.databases {
        create_sequences(conn, server, &m.snapshot, d, &mut ours).await?;
    }
    for d in &m.databases {
        create_objects(conn, server, &m.snapshot, d, &d.routines, &mut ours).await?;
    }
    create_views(conn, server, m, &mut ours).await?;
    for d in &m.databases {
        create_objects(conn, server, &m.snapshot, d, &d.triggers, &mut ours).await?;
        create_objects(conn, server, &m.snapshot, d, &d.events, &mut ours).await?;
    }
    Ok(())
}

fn created(ours: &States, key: &ObjKey) -> bool {
    ours.get(key).is_some_and(|s| s == "created")
}

/// Creates routines, triggers or events that are not created yet.
async fn create_objects(
    conn: &mut Conn,
    server: &Server,
    snapshot: &str,
    d: &Database,
    objects: &[Object],
    ours: &mut States,
) -> Result<(), LoadError> {
    for o in objects {
        let key = ObjKey::new(&o.kind, &d.name, &o.name);
        if created(ours, &key) {
            continue;
        }
        set_state(conn, server, snapshot, &key, "pending").await?;
        if let Some(drop) = drop_statement(&key, &o.kind) {
            exec(conn, server, &drop, ()).await?;
        }
        create_object(conn, server, &d.name, o)
            .await
            .map_err(|e| object_error(format!("{} {}.{}", o.kind, d.name, o.name), &e))?;
        set_state(conn, server, snapshot, &key, "created").await?;
        ours.insert(key, "created".into());
    }
    Ok(())
}

/// A sequence value from the manifest, checked to be an integer before it
/// reaches SQL (`SETVAL` takes literals only).
fn sequence_number(v: &str, what: &str, d: &str, name: &str) -> Result<i128, LoadError> {
    v.trim().parse::<i128>().map_err(|_| LoadError::Object {
        object: format!("sequence {d}.{name}"),
        detail: format!("the manifest's {what} `{v}` is not an integer; the snapshot is damaged"),
    })
}

async fn create_sequences(
    conn: &mut Conn,
    server: &Server,
    snapshot: &str,
    d: &Database,
    ours: &mut States,
) -> Result<(), LoadError> {
    for s in &d.sequences {
        let key = ObjKey::new("sequence", &d.name, &s.name);
        if created(ours, &key) {
            continue;
        }
        set_state(conn, server, snapshot, &key, "pending").await?;
        let q = qualified(&d.name, &s.name);
        exec(conn, server, &format!("DROP SEQUENCE IF EXISTS {q}"), ()).await?;
        let obj = Object {
            name: s.name.clone(),
            kind: "sequence".into(),
            create_sql: s.create_sql.clone(),
            create_sql_hex: None,
            sql_mode: None,
            character_set_client: None,
            collation_connection: None,
            database_collation: None,
            table: None,
            time_zone: None,
        };
        create_object(conn, server, &d.name, &obj)
            .await
            .map_err(|e| object_error(format!("sequence {}.{}", d.name, s.name), &e))?;
        if s.row.len() == 8 {
            // next_not_cached_value, and the cycle count as SETVAL's round.
            let next = sequence_number(&s.row[0], "next value", &d.name, &s.name)?;
            let round = sequence_number(&s.row[7], "cycle count", &d.name, &s.name)?;
            exec(
                conn,
                server,
                &format!("DO SETVAL({q}, {next}, 0, {round})"),
                (),
            )
            .await?;
        }
        set_state(conn, server, snapshot, &key, "created").await?;
        ours.insert(key, "created".into());
    }
    Ok(())
}

async fn create_views(
    conn: &mut Conn,
    server: &Server,
    m: &Manifest,
    ours: &mut States,
) -> Result<(), LoadError> {
    // Views may use other views: create in rounds until none is left.
    let mut pending: Vec<(&Database, &Object)> = m
        .databases
        .iter()
        .flat_map(|d| d.views.iter().map(move |v| (d, v)))
        .filter(|(d, v)| !created(ours, &ObjKey::new("view", &d.name, &v.name)))
        .collect();
    while !pending.is_empty() {
        let mut next = Vec::new();
        let mut last_err = None;
        for (d, v) in pending.iter().copied() {
            let key = ObjKey::new("view", &d.name, &v.name);
            set_state(conn, server, &m.snapshot, &key, "pending").await?;
            let sql = format!("DROP VIEW IF EXISTS {}", qualified(&d.name, &v.name));
            exec(conn, server, &sql, ()).await?;
            match create_object(conn, server, &d.name, v).await {
                Ok(()) => {
                    set_state(conn, server, &m.snapshot, &key, "created").await?;
                    ours.insert(key, "created".into());
                }
                Err(e) => {
                    last_err = Some(object_error(format!("view {}.{}", d.name, v.name), &e));
                    next.push((d, v));
                }
            }
        }
        if next.len() == pending.len() {
            return Err(last_err.expect("an error"));
        }
        pending = next;
    }
    Ok(())
}
