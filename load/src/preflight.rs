//! Preflight: checks the target without changing it, and finds the
//! snapshot's objects that already exist there (the conflicts).

use std::collections::HashMap;

use mysql_async::{Conn, Value};
use replseed_db::{rows, text, DbError, Server};
use replseed_stage::manifest::Manifest;

use crate::accounts;
use crate::bookkeeping::{self, ObjKey};
use crate::conflict::Conflict;
use crate::{LoadError, LoadPlan};
use replseed_db::accounts::AccountSet;

fn version_tuple(v: &str) -> (u32, u32, u32) {
    let mut it = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let mut n = || it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (n(), n(), n())
}

/// Every object of the snapshot, with its kind.
fn snapshot_objects(m: &Manifest) -> Vec<(ObjKey, String)> {
    let mut out = Vec::new();
    for d in &m.databases {
        out.push((ObjKey::new("database", &d.name, ""), "database".to_string()));
        for t in &d.tables {
            out.push((ObjKey::new("table", &d.name, &t.name), "table".into()));
        }
        for s in &d.sequences {
            out.push((ObjKey::new("sequence", &d.name, &s.name), "sequence".into()));
        }
        for v in &d.views {
            out.push((ObjKey::new("view", &d.name, &v.name), "view".into()));
        }
        for o in d.triggers.iter().chain(&d.routines).chain(&d.events) {
            out.push((ObjKey::new(&o.kind, &d.name, &o.name), o.kind.clone()));
        }
    }
    out
}

/// Existing objects on the target in the snapshot's databases: key -> kind as found.
async fn existing_objects(
    conn: &mut Conn,
    server: &Server,
    m: &Manifest,
) -> Result<HashMap<ObjKey, String>, DbError> {
    let mut out = HashMap::new();
    if m.databases.is_empty() {
        return Ok(out);
    }
    let names: Vec<Value> = m.databases.iter().map(|d| d.name.as_str().into()).collect();
    let marks = vec!["?"; names.len()].join(",");
    let query = |sql: &str| sql.replace("(?)", &format!("({marks})"));
    for r in rows(
        conn,
        server,
        &query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN (?)"),
        names.clone(),
    )
    .await?
    {
        out.insert(
            ObjKey::new("database", &text(&r[0]), ""),
            "database".to_string(),
        );
    }
    for r in rows(
        conn,
        server,
        &query("SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA IN (?)"),
        names.clone(),
    )
    .await?
    {
        let kind = match text(&r[2]).as_str() {
            "VIEW" => "view",
            "SEQUENCE" => "sequence",
            _ => "table",
        };
        out.insert(ObjKey::new(kind, &text(&r[0]), &text(&r[1])), kind.to_string());
    }
    for r in rows(
        conn,
        server,
        &query("SELECT TRIGGER_SCHEMA, TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA IN (?)"),
        names.clone(),
    )
    .await?
    {
        out.insert(ObjKey::new("trigger", &text(&r[0]), &text(&r[1])), "trigger".into());
    }
    for r in rows(
        conn,
        server,
        &query("SELECT ROUTINE_SCHEMA, ROUTINE_NAME, LOWER(ROUTINE_TYPE) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA IN (?)"),
        names.clone(),
    )
    .await?
    {
        let kind = text(&r[2]);
        out.insert(ObjKey::new(&kind, &text(&r[0]), &text(&r[1])), kind);
    }
    for r in rows(
        conn,
        server,
        &query("SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA IN (?)"),
        names,
    )
    .await?
    {
        out.insert(ObjKey::new("event", &text(&r[0]), &text(&r[1])), "event".into());
    }
    Ok(out)
}

/// What preflight found.
#[derive(Debug)]
pub struct Checked {
    /// The conflicting objects (not counting those this snapshot's earlier,
    /// interrupted load created).
    pub conflicts: Vec<Conflict>,
    /// The snapshot's accounts, when the load creates them.
    pub accounts: Option<AccountSet>,
}

/// Checks the target without changing it.
pub async fn preflight(conn: &mut Conn, plan: &LoadPlan) -> Result<Checked, LoadError> {
    let server = &plan.target;
    let m = &plan.manifest;
    let r = rows(
        conn,
        server,
        "SELECT VERSION(), @@server_id, @@local_infile, @@secure_timestamp, @@lower_case_table_names, @@read_only",
        (),
    )
    .await?;
    let r = &r[0];
    let version = text(&r[0]);
    let fail = |detail: String| LoadError::Preflight {
        server: server.name(),
        detail,
    };
    if !version.contains("MariaDB") {
        return Err(fail(format!("server version {version} is not MariaDB")));
    }
    let (tv, sv) = (version_tuple(&version), version_tuple(&m.source.version));
    if (tv.0, tv.1) < (sv.0, sv.1) {
        return Err(fail(format!(
            "MariaDB {version} is older than the snapshot's source ({}); its DDL may not apply: use a target of the same or a newer version",
            m.source.version
        )));
    }
    if text(&r[1]) == m.source.server_id.to_string() {
        return Err(fail(format!(
            "its server_id is {}, the same as the snapshot's master: a replica needs its own server_id (and is this the master itself?)",
            m.source.server_id
        )));
    }
    if text(&r[2]) != "1" {
        return Err(fail(
            "local_infile is OFF; run SET GLOBAL local_infile=1 (and set it in the config file)"
                .into(),
        ));
    }
    let versioned = m.tables().any(|(_, t)| t.system_versioned);
    if versioned && text(&r[3]) != "NO" {
        return Err(fail(format!(
            "secure_timestamp={} forbids loading the history of system-versioned tables; start the target with secure_timestamp=NO",
            text(&r[3])
        )));
    }
    if text(&r[4]) != m.source.lower_case_table_names.to_string() {
        return Err(fail(format!(
            "lower_case_table_names is {} but the source has {}; set it to match before loading",
            text(&r[4]),
            m.source.lower_case_table_names
        )));
    }
    // Objects this snapshot's earlier load created are not conflicts.
    let ours = bookkeeping::states(conn, server, &m.snapshot).await?;
    let existing = existing_objects(conn, server, m).await?;
    let mut conflicts = Vec::new();
    for (key, kind) in snapshot_objects(m) {
        if let Some(found) = existing.get(&key) {
            if !ours.contains_key(&key) {
                conflicts.push(Conflict {
                    found: found.clone(),
                    key,
                    kind,
                });
            }
        }
    }
    let accounts = accounts::of_snapshot(plan).await?;
    if let Some(set) = &accounts {
        accounts::check_plugins(conn, server, set).await?;
        conflicts.extend(accounts::conflicts(conn, server, set, &ours).await?);
    }
    Ok(Checked {
        conflicts,
        accounts,
    })
}
