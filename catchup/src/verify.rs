//! Verify: compare a master and a replica at one consistent point.
//!
//! A master under writes never stands still, so the comparison pins both
//! sides to the same GTID:
//!
//! 1. The replica's replication is stopped.
//! 2. The master opens `START TRANSACTION WITH CONSISTENT SNAPSHOT`; its
//!    `Binlog_snapshot_file/position` gives the GTID `G` of that view.
//! 3. The replica runs `START SLAVE UNTIL master_gtid_pos='G'` and stops
//!    exactly at `G`.
//! 4. Every table is hashed on both sides (row count plus an
//!    order-independent hash of every row, history rows included), and the
//!    DDL of every object is compared. Non-transactional tables (MyISAM,
//!    Aria) are outside the master's snapshot: each is held with `LOCK
//!    TABLES ... READ` on the master just while it is hashed, and the
//!    replica is brought to the GTID of that moment before it is hashed.
//! 5. Replication is started again.
//!
//! When the target is not replicating, both sides are compared as they
//! are, each inside a consistent snapshot; writes to the master then show
//! up as differences.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use replseed_db::{qualified, quote_ident, quote_str, rows, text, DbError, Server};
use tracing::info;

use crate::{slave_status, CatchupError};

/// A verify request.
#[derive(Debug, Clone)]
pub struct VerifyPlan {
    /// The master.
    pub source: Server,
    /// The replica.
    pub target: Server,
    /// Databases to compare (`None`: all non-system databases of the master).
    pub databases: Option<Vec<String>>,
    /// How long to wait for the replica to reach the master's GTID.
    pub timeout: Duration,
    /// Compare accounts, roles and grants too.
    pub accounts: bool,
}

/// Live state of a verify, for progress.
#[derive(Debug, Default)]
pub struct Progress {
    /// Tables to compare.
    pub tables_total: std::sync::atomic::AtomicU64,
    /// Tables compared.
    pub tables_done: std::sync::atomic::AtomicU64,
    /// What it is doing.
    pub phase: std::sync::Mutex<String>,
}

impl Progress {
    fn set_phase(&self, p: impl Into<String>) {
        *self.phase.lock().expect("phase") = p.into();
    }

    fn table_done(&self) {
        self.tables_done
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What verify found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    /// How the two sides were pinned.
    pub method: String,
    /// The GTID both sides were compared at (when replicating).
    pub gtid: Option<String>,
    /// Databases compared.
    pub databases: Vec<String>,
    /// Tables compared.
    pub tables: u64,
    /// Rows on the master.
    pub rows: u64,
    /// Objects whose DDL was compared.
    pub objects: u64,
    /// Differences, one line each. Empty: identical.
    pub differences: Vec<String>,
    /// Seconds.
    pub elapsed_s: f64,
}

const SESSION: &[&str] = &[
    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "SET SESSION time_zone='+00:00'",
    "SET SESSION character_set_results=utf8mb4",
    "SET SESSION max_statement_time=0",
    "SET SESSION net_write_timeout=3600",
];

/// Objects of a database: (kind, name) -> SHOW CREATE text (normalized).
async fn objects(
    conn: &mut Conn,
    server: &Server,
    db: &str,
) -> Result<BTreeMap<(String, String), String>, DbError> {
    let mut out = BTreeMap::new();
    let mut list: Vec<(String, String)> = Vec::new();
    for r in rows(
        conn,
        server,
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA=?",
        (db,),
    )
    .await?
    {
        let kind = match text(&r[1]).as_str() {
            "VIEW" => "VIEW",
            "SEQUENCE" => "SEQUENCE",
            _ => "TABLE",
        };
        list.push((kind.into(), text(&r[0])));
    }
    for r in rows(
        conn,
        server,
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA=?",
        (db,),
    )
    .await?
    {
        list.push(("TRIGGER".into(), text(&r[0])));
    }
    for r in rows(
        conn,
        server,
        "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA=?",
        (db,),
    )
    .await?
    {
        list.push((text(&r[1]), text(&r[0])));
    }
    for r in rows(
        conn,
        server,
        "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA=?",
        (db,),
    )
    .await?
    {
        list.push(("EVENT".into(), text(&r[0])));
    }
    for (kind, name) in list {
        let r = rows(
            conn,
            server,
            &format!("SHOW CREATE {kind} {}", qualified(db, &name)),
            (),
        )
        .await?;
        let col = match kind.as_str() {
            "TRIGGER" | "PROCEDURE" | "FUNCTION" | "PACKAGE" | "PACKAGE BODY" => 2,
            "EVENT" => 3,
            _ => 1,
        };
        let ddl = r
            .first()
            .and_then(|r| r.get(col))
            .map(text)
            .unwrap_or_default();
        out.insert((kind, name), normalize(&ddl));
    }
    Ok(out)
}

/// Removes what legitimately differs between a master and its replica:
/// the AUTO_INCREMENT counter (rolled-back inserts move it on the master
/// only) and the replica-side disabling of events.
pub fn normalize(ddl: &str) -> String {
    let mut s = ddl.replace(" DISABLE ON SLAVE", " ENABLE");
    while let Some(i) = s.find(" AUTO_INCREMENT=") {
        let rest = &s[i + 16..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        s = format!("{}{}", &s[..i], &rest[end..]);
    }
    s
}

/// The SQL that hashes a table: row count and two order-independent 64-bit sums of per-row MD5s.
async fn checksum_sql(
    conn: &mut Conn,
    server: &Server,
    db: &str,
    table: &str,
    versioned: bool,
) -> Result<String, DbError> {
    let cols = rows(
        conn,
        server,
        "SELECT COLUMN_NAME, DATA_TYPE, IFNULL(GENERATION_EXPRESSION, '') FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=? AND TABLE_NAME=? ORDER BY ORDINAL_POSITION",
        (db, table),
    )
    .await?;
    let mut parts: Vec<String> = cols
        .iter()
        .map(|c| {
            let name = quote_ident(&text(&c[0]));
            let dt = text(&c[1]);
            let expr = if dt == "float" || dt == "double" {
                format!("{name}*1e0")
            } else {
                name
            };
            format!("IFNULL(CONCAT('v',CAST({expr} AS BINARY)),'N')")
        })
        .collect();
    let mut from = qualified(db, table);
    if versioned {
        from.push_str(" FOR SYSTEM_TIME ALL");
        // Implicit period columns are not listed; explicit ones are.
        if !cols.iter().any(|c| text(&c[2]) == "ROW START") {
            parts.push("IFNULL(CONCAT('v',ROW_START),'N')".into());
            parts.push("IFNULL(CONCAT('v',ROW_END),'N')".into());
        }
    }
    let h = format!("MD5(CONCAT_WS('#',{}))", parts.join(","));
    Ok(format!(
        "SELECT COUNT(*), COALESCE(SUM(CAST(CONV(SUBSTRING({h},1,16),16,10) AS UNSIGNED)),0), \
         COALESCE(SUM(CAST(CONV(SUBSTRING({h},17,16),16,10) AS UNSIGNED)),0) FROM {from}"
    ))
}

async fn snapshot_gtid(conn: &mut Conn, server: &Server) -> Result<String, DbError> {
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(|e| server.err("opening a consistent snapshot", &e))?;
    let st: Vec<(String, String)> = conn
        .query("SHOW SESSION STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(|e| server.err("reading the snapshot position", &e))?;
    let get = |k: &str| {
        st.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (file, pos) = (get("Binlog_snapshot_file"), get("Binlog_snapshot_position"));
    let g = rows(
        conn,
        server,
        "SELECT BINLOG_GTID_POS(?, ?)",
        (&file, pos.parse::<u64>().unwrap_or(4)),
    )
    .await?;
    Ok(g.first().map(|r| text(&r[0])).unwrap_or_default())
}

/// Records the difference of one table's (count, hash, hash) and returns its master row count.
fn table_diff(
    db: &str,
    t: &str,
    a: &[Vec<Value>],
    b: &[Vec<Value>],
    diffs: &mut Vec<String>,
) -> u64 {
    let (ac, bc) = (text(&a[0][0]), text(&b[0][0]));
    if ac != bc {
        diffs.push(format!(
            "table `{db}`.`{t}`: {ac} rows on the master, {bc} on the replica"
        ));
    } else if a[0][1..] != b[0][1..] {
        diffs.push(format!(
            "table `{db}`.`{t}`: same row count ({ac}) but the contents differ"
        ));
    }
    ac.parse().unwrap_or(0)
}

/// Stops the replica exactly at `gtid` (both threads stopped afterwards).
async fn pin_replica(
    r: &mut Conn,
    tgt: &Server,
    gtid: &str,
    timeout: Duration,
) -> Result<(), CatchupError> {
    r.query_drop("STOP SLAVE")
        .await
        .map_err(|e| tgt.err("STOP SLAVE", &e))?;
    r.query_drop(format!(
        "START SLAVE UNTIL master_gtid_pos={}",
        quote_str(gtid)
    ))
    .await
    .map_err(|e| tgt.err("START SLAVE UNTIL", &e))?;
    let t0 = Instant::now();
    loop {
        let st = slave_status(r, tgt).await?;
        if st
            .get("Slave_SQL_Running")
            .map(|s| s != "Yes")
            .unwrap_or(true)
        {
            let err = st.get("Last_SQL_Error").cloned().unwrap_or_default();
            if !err.is_empty() {
                return Err(CatchupError::Replication {
                    server: tgt.name(),
                    detail: err,
                });
            }
            return Ok(());
        }
        if t0.elapsed() > timeout {
            let _ = r.query_drop("STOP SLAVE").await;
            let _ = r.query_drop("START SLAVE").await;
            return Err(CatchupError::Timeout {
                server: tgt.name(),
                secs: timeout.as_secs(),
                at: st.get("Gtid_Slave_Pos").cloned().unwrap_or_default(),
                goal: gtid.to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a verify.
pub async fn run(plan: VerifyPlan, progress: &Progress) -> Result<VerifyReport, CatchupError> {
    let started = Instant::now();
    let (src, tgt) = (&plan.source, &plan.target);
    let mut m = src.connect(SESSION).await?;
    let mut r = tgt.connect(SESSION).await?;
    // A subset replica: its databases, and its replication filter.
    let filter = crate::filters::recorded(&mut r, tgt).await?;
    let mut filter_problem = None;
    if let Some(f) = &filter {
        filter_problem = crate::filters::missing(&mut r, tgt, f).await?;
    }
    let dbs: Vec<String> = match (&plan.databases, &filter) {
        (Some(d), _) => d.clone(),
        (None, Some(f)) => crate::filters::databases(f),
        (None, None) => rows(
            &mut m,
            src,
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
            (),
        )
        .await?
        .iter()
        .map(|r| text(&r[0]))
        .filter(|d| !replseed_stage::SYSTEM_SCHEMAS.contains(&d.as_str()))
        .collect(),
    };

    // Pin both sides to one GTID.
    let st = slave_status(&mut r, tgt).await?;
    let replicating = st
        .get("Slave_SQL_Running")
        .map(|s| s == "Yes")
        .unwrap_or(false)
        && st.get("Using_Gtid").map(|s| s != "No").unwrap_or(false);
    // From here on, a replica stopped for the comparison replicates again
    // on every exit path, errors included.
    let pinned_and_compared = async {
        progress.set_phase("pinning both sides to one GTID");
        let (method, gtid) = if replicating {
            // Stop first, so that the replica cannot be past the master's snapshot.
            r.query_drop("STOP SLAVE")
                .await
                .map_err(|e| tgt.err("STOP SLAVE", &e))?;
            let g = snapshot_gtid(&mut m, src).await?;
            // UNTIL master_gtid_pos needs both threads stopped.
            pin_replica(&mut r, tgt, &g, plan.timeout).await?;
            info!(gtid = %g, "replica stopped at the master's snapshot GTID");
            (
                format!("replica stopped at the master's snapshot GTID '{g}'"),
                Some(g),
            )
        } else {
            snapshot_gtid(&mut m, src).await?;
            (
                "direct: the target is not replicating; both sides read in a consistent snapshot as they are".to_string(),
                None,
            )
        };
        r.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await
            .map_err(|e| tgt.err("opening a consistent snapshot", &e))?;
        let mut result = compare(
            &mut m,
            &mut r,
            src,
            tgt,
            &dbs,
            replicating.then_some(plan.timeout),
            progress,
        )
        .await;
        if let Ok((_, _, _, diffs)) = &mut result {
            diffs.extend(filter_problem);
            if plan.accounts {
                progress.set_phase("comparing accounts");
                let subset = (plan.databases.is_some() || filter.is_some()).then_some(&dbs[..]);
                match compare_accounts(&mut m, &mut r, src, tgt, subset).await {
                    Ok(d) => diffs.extend(d),
                    Err(e) => result = Err(e),
                }
            }
        }
        result.map(|r| (method, gtid, r))
    }
    .await;
    let _ = r.query_drop("COMMIT").await;
    if replicating {
        let _ = r.query_drop("STOP SLAVE").await;
        r.query_drop("START SLAVE")
            .await
            .map_err(|e| tgt.err("START SLAVE", &e))?;
    }
    let _ = m.query_drop("COMMIT").await;
    let (method, gtid, (tables, rows_n, objects_n, differences)) = pinned_and_compared?;
    Ok(VerifyReport {
        method,
        gtid,
        databases: dbs,
        tables,
        rows: rows_n,
        objects: objects_n,
        differences,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// Accounts, roles and grants that differ between the two servers; of a
/// subset of databases, what a replica of them holds
/// (`AccountSet::on_subset`) on both sides.
async fn compare_accounts(
    m: &mut Conn,
    r: &mut Conn,
    src: &Server,
    tgt: &Server,
    subset: Option<&[String]>,
) -> Result<Vec<String>, CatchupError> {
    use replseed_db::accounts;
    let (mut a, mut b) = (accounts::read(m, src).await?, accounts::read(r, tgt).await?);
    if let Some(dbs) = subset {
        (a, b) = (a.on_subset(dbs), b.on_subset(dbs));
    }
    let key = |x: &accounts::Account| (x.user.clone(), x.host.clone(), x.role);
    let bm: BTreeMap<_, _> = b.accounts.iter().map(|x| (key(x), x)).collect();
    let am: BTreeMap<_, _> = a.accounts.iter().map(|x| (key(x), x)).collect();
    let mut out = Vec::new();
    for (k, x) in &am {
        match bm.get(k) {
            None => out.push(format!("{} is missing on the replica", x.name())),
            Some(y) if y != x => out.push(format!("{} differs (definition or grants)", x.name())),
            _ => {}
        }
    }
    for (k, y) in &bm {
        if !am.contains_key(k) {
            out.push(format!("{} is only on the replica", y.name()));
        }
    }
    if a.public_grants != b.public_grants {
        out.push("the grants of PUBLIC differ".into());
    }
    Ok(out)
}

async fn compare(
    m: &mut Conn,
    r: &mut Conn,
    src: &Server,
    tgt: &Server,
    dbs: &[String],
    pinned: Option<Duration>,
    progress: &Progress,
) -> Result<(u64, u64, u64, Vec<String>), CatchupError> {
    if !dbs.is_empty() {
        let list: Vec<String> = dbs.iter().map(|d| quote_str(d)).collect();
        let n = rows(
            m,
            src,
            &format!(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({}) \
                 AND TABLE_TYPE IN ('BASE TABLE','SYSTEM VERSIONED')",
                list.join(",")
            ),
            (),
        )
        .await?;
        progress.tables_total.store(
            text(&n[0][0]).parse().unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    let mut diffs = Vec::new();
    let mut non_transactional = Vec::new();
    let (mut tables, mut total_rows, mut objs) = (0u64, 0u64, 0u64);
    for db in dbs {
        progress.set_phase(format!("comparing `{db}`"));
        let mdb = rows(
            m,
            src,
            &format!("SHOW CREATE DATABASE {}", quote_ident(db)),
            (),
        )
        .await?;
        let rdb = match r
            .query::<Row, _>(format!("SHOW CREATE DATABASE {}", quote_ident(db)))
            .await
        {
            Ok(v) => v.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>(),
            Err(_) => {
                diffs.push(format!("database `{db}` is missing on the replica"));
                continue;
            }
        };
        if text(&mdb[0][1]) != text(&rdb[0][1]) {
            diffs.push(format!("database `{db}`: definitions differ"));
        }
        let mo = objects(m, src, db).await?;
        let ro = objects(r, tgt, db).await?;
        for (k, ddl) in &mo {
            objs += 1;
            match ro.get(k) {
                None => diffs.push(format!(
                    "{} `{db}`.`{}` is missing on the replica",
                    k.0.to_lowercase(),
                    k.1
                )),
                Some(other) if other != ddl => diffs.push(format!(
                    "{} `{db}`.`{}`: definitions differ",
                    k.0.to_lowercase(),
                    k.1
                )),
                _ => {}
            }
        }
        for k in ro.keys() {
            if !mo.contains_key(k) {
                diffs.push(format!(
                    "{} `{db}`.`{}` exists only on the replica",
                    k.0.to_lowercase(),
                    k.1
                ));
            }
        }
        let base: Vec<(String, bool, bool)> = rows(
            m,
            src,
            "SELECT TABLE_NAME, TABLE_TYPE='SYSTEM VERSIONED', ENGINE='InnoDB' FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA=? AND TABLE_TYPE IN ('BASE TABLE','SYSTEM VERSIONED') ORDER BY TABLE_NAME",
            (db,),
        )
        .await?
        .iter()
        .map(|r| (text(&r[0]), text(&r[1]) == "1", text(&r[2]) == "1"))
        .collect();
        for (t, versioned, transactional) in base {
            if !ro.contains_key(&("TABLE".to_string(), t.clone())) {
                progress.table_done();
                continue; // reported above
            }
            tables += 1;
            let sql = checksum_sql(m, src, db, &t, versioned).await?;
            if !transactional {
                // Not in the master's snapshot: compared one by one at the end.
                non_transactional.push((db.clone(), t, sql));
                continue;
            }
            let a = rows(m, src, &sql, ()).await?;
            let b = rows(r, tgt, &sql, ()).await?;
            total_rows += table_diff(db, &t, &a, &b, &mut diffs);
            progress.table_done();
        }
    }
    if pinned.is_some() && !non_transactional.is_empty() {
        // The replica's read view is not needed any more, and STOP SLAVE refuses to run inside one.
        r.query_drop("COMMIT")
            .await
            .map_err(|e| tgt.err("COMMIT", &e))?;
    }
    for (db, t, sql) in non_transactional {
        progress.set_phase(format!("comparing `{db}`.`{t}` (not transactional)"));
        let (a, b) = match pinned {
            Some(timeout) => {
                // Hold the table still on the master, note the GTID it is
                // equal to, and bring the replica to exactly that GTID.
                m.query_drop(format!("LOCK TABLES {} READ", qualified(&db, &t)))
                    .await
                    .map_err(|e| src.err(format!("LOCK TABLES {db}.{t} READ"), &e))?;
                let res = async {
                    let g = rows(m, src, "SELECT @@GLOBAL.gtid_binlog_pos", ()).await?;
                    let g = text(&g[0][0]);
                    let a = rows(m, src, &sql, ()).await?;
                    Ok::<_, CatchupError>((g, a))
                }
                .await;
                let _ = m.query_drop("UNLOCK TABLES").await;
                let (g, a) = res?;
                pin_replica(r, tgt, &g, timeout).await?;
                (a, rows(r, tgt, &sql, ()).await?)
            }
            None => (rows(m, src, &sql, ()).await?, rows(r, tgt, &sql, ()).await?),
        };
        total_rows += table_diff(&db, &t, &a, &b, &mut diffs);
        progress.table_done();
    }
    Ok((tables, total_rows, objs, diffs))
}
