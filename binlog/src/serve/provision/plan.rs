//! The provisioning stream of a snapshot as an ordered list of groups:
//! the guard (or, with force, the drops), databases and tables, each
//! chunk's rows, then sequences, routines, views, triggers and events, as
//! `load` creates them (same session context, same order, events
//! `DISABLE ON SLAVE`). Each group becomes one transaction on the replica;
//! its position in the list (from 1) is its made-up GTID's number
//! (`policy.rs`).

use replseed_db::{qualified, quote_ident};
use replseed_stage::manifest::{disable_on_slave, Manifest, Object};

use super::guard;
use crate::event_build::{charset_default_collation, collation_id, sql_mode_bits, QueryContext};

/// The sql_mode `load` creates databases, tables and sequences in.
const LOADER_SQL_MODE: &str = "NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION";

/// One group of the stream.
#[derive(Debug, Clone)]
pub enum Group {
    /// One statement (DDL, or the guard), with `db` as default database.
    Statement {
        /// Default database ("" for none).
        db: String,
        /// The statement's bytes.
        sql: Vec<u8>,
        /// Its session.
        ctx: QueryContext,
        /// What it is, for the log and errors.
        what: String,
    },
    /// The rows of one chunk: `(database, table, chunk)` indexes into the
    /// manifest; `table_id` is the table map's id.
    Rows {
        /// Index of the database.
        db: usize,
        /// Index of the table in it.
        table: usize,
        /// Index of the chunk in it.
        chunk: usize,
        /// The table map id of the table.
        table_id: u64,
    },
}

fn loader_ctx() -> QueryContext {
    QueryContext {
        sql_mode: sql_mode_bits(LOADER_SQL_MODE).expect("known modes"),
        time_zone: Some("+00:00".into()),
        ..QueryContext::default()
    }
}

/// An object's session: its own sql_mode, client charset, connection
/// collation and time zone, where the manifest has them.
fn object_ctx(o: &Object, what: &str) -> Result<QueryContext, String> {
    let mut ctx = loader_ctx();
    if let Some(m) = &o.sql_mode {
        ctx.sql_mode = sql_mode_bits(m).map_err(|e| format!("{what}: {e}"))?;
    }
    if let Some(cs) = &o.character_set_client {
        ctx.charset[0] = charset_default_collation(cs).map_err(|e| format!("{what}: {e}"))?;
    }
    if let Some(c) = &o.collation_connection {
        ctx.charset[1] = collation_id(c).map_err(|e| format!("{what}: {e}"))?;
    }
    if let Some(tz) = &o.time_zone {
        ctx.time_zone = Some(tz.clone());
    }
    Ok(ctx)
}

fn statement(db: &str, sql: Vec<u8>, ctx: QueryContext, what: String) -> Group {
    Group::Statement {
        db: db.to_string(),
        sql,
        ctx,
        what,
    }
}

/// Views in an order that creates each after the views it names (by its
/// quoted name in the definition); what cannot be ordered keeps its place.
fn views_in_order(m: &Manifest) -> Vec<(usize, usize)> {
    let mut pending: Vec<(usize, usize)> = m
        .databases
        .iter()
        .enumerate()
        .flat_map(|(i, d)| (0..d.views.len()).map(move |j| (i, j)))
        .collect();
    let mut out = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let names = |p: &[(usize, usize)]| -> Vec<String> {
            p.iter()
                .map(|&(i, j)| quote_ident(&m.databases[i].views[j].name))
                .collect()
        };
        let waiting = names(&pending);
        let ready: Vec<(usize, usize)> = pending
            .iter()
            .copied()
            .filter(|&(i, j)| {
                let v = &m.databases[i].views[j];
                let own = quote_ident(&v.name);
                // The definition names itself after AS-less `VIEW `name``.
                let body = v.create_sql.split_once(" AS ").map_or("", |(_, b)| b);
                !waiting
                    .iter()
                    .any(|w| *w != own && body.contains(w.as_str()))
            })
            .collect();
        let take = if ready.is_empty() {
            vec![pending[0]]
        } else {
            ready
        };
        pending.retain(|p| !take.contains(p));
        out.extend(take);
    }
    out
}

/// The stream's groups for `m`; `Err` names the object whose session the
/// stream cannot describe.
pub fn groups(m: &Manifest, force: bool) -> Result<Vec<Group>, String> {
    let mut out = Vec::new();
    let ctx = loader_ctx();
    if force {
        for (sql, what) in guard::drops(m) {
            out.push(statement("", sql.into_bytes(), ctx.clone(), what));
        }
    } else {
        out.push(statement(
            "",
            guard::statement(m).into_bytes(),
            ctx.clone(),
            "the guard".into(),
        ));
    }
    let mut table_id = 0u64;
    for (i, d) in m.databases.iter().enumerate() {
        let create = if force {
            d.create_sql
                .replacen("CREATE DATABASE ", "CREATE DATABASE IF NOT EXISTS ", 1)
        } else {
            d.create_sql.clone()
        };
        out.push(statement(
            "",
            create.into_bytes(),
            ctx.clone(),
            format!("database {}", d.name),
        ));
        for t in &d.tables {
            out.push(statement(
                &d.name,
                t.create_sql.clone().into_bytes(),
                ctx.clone(),
                format!("table {}.{}", d.name, t.name),
            ));
        }
        for (j, t) in d.tables.iter().enumerate() {
            table_id += 1;
            for c in 0..t.chunks.len() {
                out.push(Group::Rows {
                    db: i,
                    table: j,
                    chunk: c,
                    table_id,
                });
            }
        }
    }
    for d in &m.databases {
        for s in &d.sequences {
            let what = format!("sequence {}.{}", d.name, s.name);
            out.push(statement(
                &d.name,
                s.create_sql.clone().into_bytes(),
                ctx.clone(),
                what.clone(),
            ));
            if s.row.len() == 8 {
                let num = |v: &str, f: &str| {
                    v.trim().parse::<i128>().map_err(|_| {
                        format!("{what}: the manifest's {f} `{v}` is not an integer; the snapshot is damaged")
                    })
                };
                let next = num(&s.row[0], "next value")?;
                let round = num(&s.row[7], "cycle count")?;
                let q = qualified(&d.name, &s.name);
                out.push(statement(
                    &d.name,
                    format!("DO SETVAL({q}, {next}, 0, {round})").into_bytes(),
                    ctx.clone(),
                    format!("{what} value"),
                ));
            }
        }
    }
    let object = |db: &str, o: &Object| -> Result<Group, String> {
        let what = format!("{} {}.{}", o.kind, db, o.name);
        let mut sql = o.create_bytes()?;
        if o.kind == "event" {
            sql = disable_on_slave(sql);
        }
        Ok(statement(db, sql, object_ctx(o, &what)?, what))
    };
    for d in &m.databases {
        for o in &d.routines {
            out.push(object(&d.name, o)?);
        }
    }
    for (i, j) in views_in_order(m) {
        let d = &m.databases[i];
        out.push(object(&d.name, &d.views[j])?);
    }
    for d in &m.databases {
        for o in d.triggers.iter().chain(&d.events) {
            out.push(object(&d.name, o)?);
        }
    }
    Ok(out)
}
