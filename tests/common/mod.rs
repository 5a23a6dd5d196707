//! Shared test helpers: real servers, the replseed binary, fixtures and
//! the master-versus-replica comparison every end-to-end test uses.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
pub use replseed_testkit::{MariaDb, MariaDbOptions, S3Server};

pub const ALL_TYPES_SQL: &str = include_str!("../fixtures/all_types.sql");

/// Runs the replseed binary with arguments and extra environment.
pub async fn replseed(args: &[&str], env: &[(String, String)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_replseed"));
    cmd.args(args)
        .env("REPLSEED_NO_PROGRESS", "1")
        .env_remove("REPLSEED_STAGE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run replseed")
}

/// Runs replseed and asserts success. With `--json` among the arguments it
/// returns the JSON line (see [`json_line`]: the test fails without one);
/// otherwise `Null`.
pub async fn replseed_ok(args: &[&str], env: &[(String, String)]) -> serde_json::Value {
    let out = replseed(args, env).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "replseed {args:?} failed ({:?}):\n{stderr}",
        out.status
    );
    if args.contains(&"--json") {
        json_line(args, &out.stdout)
    } else {
        serde_json::Value::Null
    }
}

/// The JSON object a `--json` run printed as its last line of stdout; the
/// test fails, showing stdout, when there is none or it does not parse.
pub fn json_line(args: &[&str], stdout: &[u8]) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    match last.map(serde_json::from_str::<serde_json::Value>) {
        Some(Ok(v)) if v.is_object() => v,
        _ => panic!("replseed {args:?} printed no JSON object as its last line; stdout:\n{stdout}"),
    }
}

/// The ids `snapshots list --json` lists in `stage` (the test fails if it
/// prints no list).
pub async fn snapshot_ids(stage: &str, env: &[(String, String)]) -> Vec<String> {
    let args = ["snapshots", "list", "--stage", stage, "--json"];
    let list = replseed_ok(&args, env).await;
    let Some(snapshots) = list["snapshots"].as_array() else {
        panic!("replseed {args:?}: no `snapshots` list in {list}");
    };
    snapshots
        .iter()
        .map(|s| match s["id"].as_str() {
            Some(id) => id.to_string(),
            None => panic!("replseed {args:?}: a snapshot without an id in {list}"),
        })
        .collect()
}

/// Runs replseed, asserts failure with `code`, returns stderr.
/// The error lines of a run's stderr (log lines, such as the warning that
/// a password was given on the command line, left out).
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error")).collect()
}

pub async fn replseed_fails(args: &[&str], env: &[(String, String)], code: i32) -> String {
    let out = replseed(args, env).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "replseed {args:?}: expected exit {code}; stderr:\n{stderr}"
    );
    stderr
}

/// Executes a multi-statement SQL script.
pub async fn exec(db: &MariaDb, sql: &str) {
    let mut c = db.conn().await.expect("connect");
    c.query_drop(sql).await.unwrap_or_else(|e| {
        panic!(
            "SQL failed on {}: {e}\n{}",
            db.port,
            &sql[..sql.len().min(300)]
        )
    });
    c.disconnect().await.ok();
}

/// Loads the all-types fixture (databases `fx` and `we``ird db;`).
pub async fn load_fixture(db: &MariaDb) {
    exec(db, ALL_TYPES_SQL).await;
}

pub fn text(v: &Value) -> String {
    match v {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::NULL => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        other => format!("{other:?}"),
    }
}

pub async fn query(c: &mut Conn, sql: &str) -> Vec<Vec<Value>> {
    let r: Vec<Row> = c.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    r.into_iter().map(|r| r.unwrap()).collect()
}

pub async fn scalar(db: &MariaDb, sql: &str) -> String {
    let mut c = db.conn().await.expect("connect");
    let r = query(&mut c, sql).await;
    c.disconnect().await.ok();
    r.first().map(|r| text(&r[0])).unwrap_or_default()
}

fn q(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Everything about a server's databases that must be identical on a
/// replica: the DDL of every object (verbatim SHOW CREATE output), each
/// table's CHECKSUM TABLE and row count, every row of history of
/// system-versioned tables, and each sequence's state.
pub async fn fingerprint(db: &MariaDb, databases: &[&str]) -> BTreeMap<String, String> {
    let mut c = db.conn().await.expect("connect");
    c.query_drop("SET time_zone='+00:00'").await.unwrap();
    let mut out = BTreeMap::new();
    for d in databases {
        let dq = format!("'{}'", d.replace('\'', "''"));
        let r = query(&mut c, &format!("SHOW CREATE DATABASE {}", q(d))).await;
        out.insert(format!("database {d}"), text(&r[0][1]));
        for t in query(&mut c, &format!("SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA={dq}")).await {
            let (name, ty) = (text(&t[0]), text(&t[1]));
            let full = format!("{}.{}", q(d), q(&name));
            let kind = match ty.as_str() {
                "VIEW" => "VIEW",
                "SEQUENCE" => "SEQUENCE",
                _ => "TABLE",
            };
            let r = query(&mut c, &format!("SHOW CREATE {kind} {full}")).await;
            out.insert(format!("{kind} {d}.{name} ddl"), text(&r[0][1]));
            if kind == "TABLE" {
                let r = query(&mut c, &format!("CHECKSUM TABLE {full}")).await;
                out.insert(format!("{kind} {d}.{name} checksum"), text(&r[0][1]));
                let r = query(&mut c, &format!("SELECT COUNT(*) FROM {full}")).await;
                out.insert(format!("{kind} {d}.{name} rows"), text(&r[0][0]));
            }
            if ty == "SYSTEM VERSIONED" {
                let cols = query(&mut c, &format!("SELECT COLUMN_NAME, GENERATION_EXPRESSION FROM information_schema.COLUMNS WHERE TABLE_SCHEMA={dq} AND TABLE_NAME='{}' ORDER BY ORDINAL_POSITION", name.replace('\'', "''"))).await;
                let mut list: Vec<String> = cols.iter().map(|c| q(&text(&c[0]))).collect();
                if !cols.iter().any(|c| text(&c[1]) == "ROW END") {
                    list.push("ROW_START".into());
                    list.push("ROW_END".into());
                }
                let all = list.join(", ");
                let r = query(&mut c, &format!("SELECT {all} FROM {full} FOR SYSTEM_TIME ALL ORDER BY {all}")).await;
                let hist: Vec<String> = r.iter().map(|row| row.iter().map(text).collect::<Vec<_>>().join("|")).collect();
                out.insert(format!("{kind} {d}.{name} history"), hist.join("\n"));
            }
            if kind == "SEQUENCE" {
                let r = query(&mut c, &format!("SELECT * FROM {full}")).await;
                out.insert(format!("{kind} {d}.{name} state"), r[0].iter().map(text).collect::<Vec<_>>().join("|"));
            }
        }
        for t in query(
            &mut c,
            &format!(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA={dq}"
            ),
        )
        .await
        {
            let name = text(&t[0]);
            let r = query(
                &mut c,
                &format!("SHOW CREATE TRIGGER {}.{}", q(d), q(&name)),
            )
            .await;
            out.insert(
                format!("TRIGGER {d}.{name}"),
                format!(
                    "{} | {} | {}",
                    text(&r[0][1]),
                    text(&r[0][2]),
                    text(&r[0][3])
                ),
            );
        }
        for t in query(&mut c, &format!("SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA={dq}")).await {
            let (name, ty) = (text(&t[0]), text(&t[1]));
            let r = query(&mut c, &format!("SHOW CREATE {ty} {}.{}", q(d), q(&name))).await;
            out.insert(format!("{ty} {d}.{name}"), format!("{} | {}", text(&r[0][1]), text(&r[0][2])));
        }
        for t in query(
            &mut c,
            &format!("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA={dq}"),
        )
        .await
        {
            let name = text(&t[0]);
            let r = query(&mut c, &format!("SHOW CREATE EVENT {}.{}", q(d), q(&name))).await;
            // A replica disables the master's events (as MariaDB's own replication does).
            out.insert(
                format!("EVENT {d}.{name}"),
                text(&r[0][3]).replace(" DISABLE ON SLAVE", " ENABLE"),
            );
        }
    }
    c.disconnect().await.ok();
    out
}

/// Asserts the two servers hold identical copies of `databases`.
pub async fn assert_identical(master: &MariaDb, replica: &MariaDb, databases: &[&str]) {
    let a = fingerprint(master, databases).await;
    let b = fingerprint(replica, databases).await;
    let mut diffs = Vec::new();
    for (k, v) in &a {
        match b.get(k) {
            None => diffs.push(format!("missing on replica: {k}")),
            Some(w) if w != v => diffs.push(format!(
                "differs: {k}\n  master:  {}\n  replica: {}",
                trunc(v),
                trunc(w)
            )),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            diffs.push(format!("only on replica: {k}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "master and replica differ:\n{}",
        diffs.join("\n")
    );
    assert!(a.len() > databases.len(), "fingerprint covered nothing");
}

fn trunc(s: &str) -> String {
    if s.len() > 400 {
        format!("{}...", &s[..400])
    } else {
        s.to_string()
    }
}

/// Applies a binlog file's bytes to `t` through `mariadb-binlog | mariadb`.
pub fn apply_binlog(binlog: &[u8], t: &MariaDb) -> Result<(), String> {
    use std::io::Write;
    use std::process::Stdio;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), binlog).unwrap();
    let decoded = std::process::Command::new("mariadb-binlog")
        .arg(file.path())
        .output()
        .unwrap();
    if !decoded.status.success() {
        return Err(format!(
            "mariadb-binlog refused it: {}",
            String::from_utf8_lossy(&decoded.stderr)
        ));
    }
    let mut client = std::process::Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            "-uroot",
            &format!("-P{}", t.port),
            "--max-allowed-packet=1G",
            "--binary-mode",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    client
        .stdin
        .take()
        .unwrap()
        .write_all(&decoded.stdout)
        .unwrap();
    let out = client.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(format!(
            "applying it: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

pub const FIXTURE_DBS: &[&str] = &["fx", "we`ird db;"];

/// A replica-to-be: binlog on (it may later be promoted) and its own server_id.
pub async fn replica(server_id: u32) -> MariaDb {
    MariaDb::start(server_id).await.expect("start replica")
}

pub async fn master() -> MariaDb {
    MariaDb::start(1).await.expect("start master")
}

pub fn file_stage(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// `replseed extract --source SOURCE --stage STAGE --snapshot ID EXTRA...`, asserting success.
pub async fn extract_ok(source: &str, stage: &str, id: &str, extra: &[&str]) -> serde_json::Value {
    let args = [
        &[
            "extract",
            "--source",
            source,
            "--stage",
            stage,
            "--snapshot",
            id,
        ][..],
        extra,
    ]
    .concat();
    replseed_ok(&args, &[]).await
}

/// `replseed load --stage STAGE --snapshot ID --target TARGET EXTRA...`, asserting success.
pub async fn load_ok(stage: &str, id: &str, target: &str, extra: &[&str]) -> serde_json::Value {
    let args = [
        &[
            "load",
            "--stage",
            stage,
            "--snapshot",
            id,
            "--target",
            target,
        ][..],
        extra,
    ]
    .concat();
    replseed_ok(&args, &[]).await
}

/// A local stage in a fresh temporary directory (kept while the guard lives).
pub fn local_stage() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = file_stage(dir.path());
    (dir, url)
}

/// `replseed extract --source SOURCE --stage STAGE EXTRA...`, asserting it fails with exit 1; returns stderr.
pub async fn extract_fails(source: &str, stage: &str, extra: &[&str]) -> String {
    let args = [
        &["extract", "--source", source, "--stage", stage][..],
        extra,
    ]
    .concat();
    replseed_fails(&args, &[], 1).await
}

/// Arguments of `replseed catchup` for a snapshot, a master and a replica.
pub fn catchup_args<'a>(
    stage: &'a str,
    id: &'a str,
    source: &'a str,
    target: &'a str,
) -> Vec<&'a str> {
    vec![
        "catchup",
        "--stage",
        stage,
        "--snapshot",
        id,
        "--source",
        source,
        "--target",
        target,
    ]
}

/// Arguments of `replseed verify` for a master and a replica.
pub fn verify_args<'a>(source: &'a str, target: &'a str) -> Vec<&'a str> {
    vec!["verify", "--source", source, "--target", target]
}

/// The master writes again and the replica applies it (replication is running).
pub async fn still_replicating(m: &MariaDb, t: &MariaDb, sql: &str) {
    exec(m, sql).await;
    let goal = scalar(m, "SELECT @@gtid_binlog_pos").await;
    let reached = scalar(t, &format!("SELECT MASTER_GTID_WAIT('{goal}', 60)")).await;
    let (io, sql, io_error, sql_error) = {
        let mut c = t.conn().await.unwrap();
        let r: Vec<mysql_async::Row> = c.query("SHOW SLAVE STATUS").await.unwrap();
        let r = &r[0];
        (
            r.get::<String, _>("Slave_IO_Running").unwrap(),
            r.get::<String, _>("Slave_SQL_Running").unwrap(),
            r.get::<String, _>("Last_IO_Error").unwrap(),
            r.get::<String, _>("Last_SQL_Error").unwrap(),
        )
    };
    assert_eq!(
        (reached.as_str(), io.as_str(), sql.as_str()),
        ("0", "Yes", "Yes"),
        "replica did not reach {goal} replicating (MASTER_GTID_WAIT, IO, SQL thread); \
         Last_IO_Error: {io_error}; Last_SQL_Error: {sql_error}"
    );
}

/// `provision --source M --target T --stage STAGE EXTRA...`
pub fn provision_args(m: &MariaDb, t: &MariaDb, stage: &str, extra: &[&str]) -> Vec<String> {
    let base = [
        "provision",
        "--source",
        &m.url(),
        "--target",
        &t.url(),
        "--stage",
        stage,
    ]
    .map(String::from);
    base.into_iter()
        .chain(extra.iter().map(|s| s.to_string()))
        .collect()
}

/// `replseed provision --source M --target T --stage STAGE --json EXTRA...`, asserting success.
pub async fn provision_ok(
    m: &MariaDb,
    t: &MariaDb,
    stage: &str,
    extra: &[&str],
) -> serde_json::Value {
    let args = provision_args(m, t, stage, &[&["--json"][..], extra].concat());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    replseed_ok(&args, &[]).await
}

/// `replseed load --stage STAGE --snapshot ID --target TARGET EXTRA...`, asserting exit 1; returns stderr.
pub async fn load_fails(stage: &str, id: &str, target: &str, extra: &[&str]) -> String {
    let args = [
        &[
            "load",
            "--stage",
            stage,
            "--snapshot",
            id,
            "--target",
            target,
        ][..],
        extra,
    ]
    .concat();
    replseed_fails(&args, &[], 1).await
}

/// The binlog archive's segment manifests in a file stage, by sequence number.
pub fn archive_segments(stage_dir: &Path) -> Vec<serde_json::Value> {
    let dir = stage_dir.join(".binlog/segments");
    let mut out: Vec<serde_json::Value> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort_by_key(|s| s["seq"].as_u64().unwrap());
    out
}

/// Starts replseed in the background, its output piped (killed when dropped).
pub fn spawn_replseed(args: &[&str], env: &[(String, String)]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_replseed"));
    cmd.args(args)
        .env("REPLSEED_NO_PROGRESS", "1")
        .env_remove("REPLSEED_STAGE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn replseed")
}

/// `replseed archive --until-current --json` from `m` into `stage`.
pub async fn archive_now(m: &MariaDb, stage: &str) -> serde_json::Value {
    replseed_ok(
        &[
            "archive",
            "--source",
            &m.url(),
            "--stage",
            stage,
            "--until-current",
            "--json",
        ],
        &[],
    )
    .await
}

/// Purges every binlog of the master but its current one (a dump thread
/// that has not noticed its client left keeps its file: try until it has).
pub async fn purge_all(m: &MariaDb) {
    let start = std::time::Instant::now();
    loop {
        exec(m, "FLUSH BINARY LOGS").await;
        exec(m, "PURGE BINARY LOGS BEFORE NOW() + INTERVAL 1 DAY").await;
        let mut c = m.conn().await.unwrap();
        let logs: Vec<Row> = c.query("SHOW BINARY LOGS").await.unwrap();
        if logs.len() == 1 {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the master keeps its binlogs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `replseed snapshots prune --keep N --json`.
pub async fn prune(stage: &str, keep: u32) -> serde_json::Value {
    let keep = keep.to_string();
    replseed_ok(
        &[
            "snapshots",
            "prune",
            "--keep",
            &keep,
            "--stage",
            stage,
            "--json",
        ],
        &[],
    )
    .await
}

/// Points a replica's IO thread at `host:port` from `gtid` and waits until it has applied `goal`.
pub async fn replicate_from(
    t: &MariaDb,
    port: u16,
    user: &str,
    password: &str,
    gtid: &str,
    goal: &str,
) {
    replicate_from_with(t, port, user, password, gtid, goal, "").await
}

/// As [`replicate_from`], with more `CHANGE MASTER` options (`, MASTER_SSL=1, ...`).
pub async fn replicate_from_with(
    t: &MariaDb,
    port: u16,
    user: &str,
    password: &str,
    gtid: &str,
    goal: &str,
    options: &str,
) {
    exec(
        t,
        &format!(
            "STOP SLAVE; SET GLOBAL gtid_slave_pos = '{gtid}'; \
             CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, MASTER_USER='{user}', \
             MASTER_PASSWORD='{password}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1{options}; START SLAVE;"
        ),
    )
    .await;
    let reached = scalar(t, &format!("SELECT MASTER_GTID_WAIT('{goal}', 120)")).await;
    if reached != "0" {
        let mut c = t.conn().await.unwrap();
        use mysql_async::prelude::Queryable;
        let st: Option<mysql_async::Row> = c.query_first("SHOW SLAVE STATUS").await.unwrap();
        panic!("replica on {} did not reach {goal}: {st:?}", t.port);
    }
}

/// `replseed serve` of `stage` (user `repl`, password `s3cret`) on a port from the harness's allocator,
/// with another port when that one was taken meanwhile.
pub async fn serve_on_a_free_port(stage: &str) -> (tokio::process::Child, u16) {
    serve_on_a_free_port_with(stage, &[]).await
}

/// [`serve_on_a_free_port`] with more arguments to `serve`.
pub async fn serve_on_a_free_port_with(
    stage: &str,
    extra: &[&str],
) -> (tokio::process::Child, u16) {
    for _ in 0..5 {
        let port = replseed_testkit::free_port();
        let listen = format!("127.0.0.1:{port}");
        let args = [
            &[
                "serve",
                "--stage",
                stage,
                "--listen",
                &listen,
                "--replication-user",
                "repl",
            ][..],
            extra,
        ]
        .concat();
        let mut serve = spawn_replseed(
            &args,
            &[("REPLSEED_REPLICATION_PASSWORD".into(), "s3cret".into())],
        );
        let start = std::time::Instant::now();
        loop {
            if tokio::net::TcpStream::connect(&listen).await.is_ok()
                && serve.try_wait().unwrap().is_none()
            {
                return (serve, port);
            }
            if serve.try_wait().unwrap().is_some() {
                break; // the port was taken: another one
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "serve does not listen"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    panic!("serve could not listen on any of 5 free ports");
}

/// The sequence number of domain 0 in a GTID state (the tests' masters write
/// in domain 0 only).
pub fn d0(state: &str) -> u64 {
    state
        .split(',')
        .map(str::trim)
        .find(|g| g.starts_with("0-"))
        .map(|g| g.rsplit('-').next().unwrap().parse().unwrap())
        .unwrap_or_else(|| panic!("no domain 0 in '{state}'"))
}
