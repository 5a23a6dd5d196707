//! `replseed serve` answers the clients DBAs point at a master, not only a
//! replica's IO thread: the `mariadb` client's general queries (version,
//! variables, `SHOW MASTER STATUS`, `SHOW BINARY LOGS`), with an ERR packet
//! for what it cannot answer and the session going on.

use mysql_async::prelude::Queryable;

use crate::common::*;

/// A master with two binlog files of transactions, archived into a local
/// stage, and `serve` of that stage. The stage's directory is returned to
/// keep it alive.
async fn served_master() -> (
    MariaDb,
    tempfile::TempDir,
    String,
    tokio::process::Child,
    u16,
) {
    let (dir, stage) = local_stage();
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE a; CREATE TABLE a.t (id INT PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO a.t VALUES (1, 'one')",
    )
    .await;
    extract_ok(&m.url(), &stage, "s1", &["--no-accounts"]).await;
    exec(
        &m,
        "INSERT INTO a.t VALUES (2, 'two'); FLUSH BINARY LOGS; \
         INSERT INTO a.t VALUES (3, 'three'); UPDATE a.t SET v = 'uno' WHERE id = 1",
    )
    .await;
    archive_now(&m, &stage).await;
    let (serve, port) = serve_on_a_free_port(&stage).await;
    (m, dir, stage, serve, port)
}

/// `mariadb --batch` against serve with `sql`: stdout, and stderr when it failed.
async fn client(port: u16, extra: &[&str], sql: &str) -> Result<String, String> {
    let out = tokio::process::Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", "repl"])
        .args(["--batch", "--connect-timeout=10"])
        .args(extra)
        .args(["-e", sql])
        .env("MYSQL_PWD", "s3cret")
        .output()
        .await
        .expect("run mariadb");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The rows of a `--batch` output after its header line.
fn rows_after<'a>(out: &'a str, header: &str) -> Vec<Vec<&'a str>> {
    let mut lines = out.lines().skip_while(|l| *l != header);
    assert!(lines.next().is_some(), "no `{header}` in {out}");
    lines
        .take_while(|l| !l.contains('\t') || l.split('\t').count() == header.split('\t').count())
        .map(|l| l.split('\t').collect())
        .collect()
}

/// The master's own `SHOW BINARY LOGS`.
async fn master_logs(m: &MariaDb) -> Vec<(String, u64)> {
    let mut c = m.conn().await.unwrap();
    c.query_map("SHOW BINARY LOGS", |(name, size): (String, u64)| {
        (name, size)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mariadb_client_gets_version_master_status_and_binary_logs() {
    let (m, _dir, _stage, _serve, port) = served_master().await;
    let out = client(
        port,
        &[],
        "SELECT VERSION(); SHOW MASTER STATUS; SHOW BINARY LOGS",
    )
    .await
    .expect("serve answers the mariadb client");

    // SELECT VERSION(): a 10.11 MariaDB, named as serve.
    let version = rows_after(&out, "VERSION()");
    assert!(
        version[0][0].starts_with("10.11.") && version[0][0].contains("replseed"),
        "{out}"
    );

    // SHOW MASTER STATUS: the master's file and position, from the archive
    // (it holds everything up to the master's last write).
    let mut c = m.conn().await.unwrap();
    let (file, pos): (String, u64) = c
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .map(|r: mysql_async::Row| (r.get(0).unwrap(), r.get(1).unwrap()))
        .unwrap();
    let status = rows_after(&out, "File\tPosition\tBinlog_Do_DB\tBinlog_Ignore_DB");
    assert_eq!(status[0][..2], [file.as_str(), &pos.to_string()], "{out}");

    // SHOW BINARY LOGS: the master's files that hold archived transactions,
    // each as long as its last archived event reaches (the last one as the
    // master's; an older one without the master's closing rotate).
    let ours = rows_after(&out, "Log_name\tFile_size");
    let theirs = master_logs(&m).await;
    let with_events: Vec<&(String, u64)> = theirs
        .iter()
        .filter(|(f, _)| ours.iter().any(|r| r[0] == f))
        .collect();
    assert_eq!(ours.len(), 2, "{out}");
    assert_eq!(with_events.len(), 2, "{out} vs {theirs:?}");
    for (row, (name, size)) in ours.iter().zip(with_events) {
        assert_eq!(row[0], name);
        let n: u64 = row[1].parse().unwrap();
        if *name == file {
            assert_eq!(n, *size, "{name}: {out}");
        } else {
            assert!(n < *size && n > 256, "{name}: {n} of {size}");
        }
    }

    // @@ variables, one or several, with and without aliases and scopes.
    let gtid = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    let out = client(
        port,
        &["--skip-column-names"],
        "SELECT @@global.gtid_binlog_pos, @@server_id AS id, @@session.binlog_checksum c, @@version_comment LIMIT 1",
    )
    .await
    .unwrap();
    let row: Vec<&str> = out.trim_end().split('\t').collect();
    assert_eq!(row[0], gtid, "{out}");
    assert_eq!(row[2], "CRC32", "{out}");
    let out = client(port, &[], "SELECT @@server_id AS id").await.unwrap();
    assert!(out.starts_with("id\n"), "the alias names the column: {out}");

    // SHOW VARIABLES LIKE: a pattern; semi-sync is not there (0 rows).
    let out = client(port, &[], "SHOW VARIABLES LIKE 'gtid%pos'")
        .await
        .unwrap();
    let vars = rows_after(&out, "Variable_name\tValue");
    assert_eq!(
        vars,
        vec![
            vec!["gtid_binlog_pos", gtid.as_str()],
            vec!["gtid_current_pos", gtid.as_str()]
        ]
    );
    let out = client(
        port,
        &[],
        "SHOW GLOBAL VARIABLES LIKE 'rpl_semi_sync_master_enabled'",
    )
    .await
    .unwrap();
    assert_eq!(out.trim(), "", "no semi-sync: {out}");

    // SET records user and session variables for the session.
    let out = client(
        port,
        &["--skip-column-names"],
        "SET NAMES utf8mb4; SET @master_binlog_checksum= @@global.binlog_checksum, @x := 'a,b'; \
         SET SESSION net_read_timeout = 7; SELECT @master_binlog_checksum, @x, @nothing, @@net_read_timeout",
    )
    .await
    .unwrap();
    assert_eq!(out.trim_end(), "CRC32\ta,b\tNULL\t7");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_serve_cannot_answer_gets_an_error_and_the_session_goes_on() {
    let (_m, _dir, _stage, _serve, port) = served_master().await;
    // What the client shows: one line naming the query or the variable.
    for (sql, code, says) in [
        ("SHOW TABLES", "ERROR 1064", "does not answer `SHOW TABLES`"),
        (
            "SELECT @@no_such_variable",
            "ERROR 1193",
            "Unknown system variable 'no_such_variable'",
        ),
        (
            "SET GLOBAL read_only = 0",
            "ERROR 1227",
            "SET GLOBAL is refused",
        ),
    ] {
        let out = client(port, &[], sql).await.expect_err(sql);
        assert!(out.contains(code) && out.contains(says), "{sql}: {out}");
    }

    // The same through the protocol: an ERR packet, then COM_PING and a query.
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("repl"))
        .pass(Some("s3cret"));
    let mut c = mysql_async::Conn::new(opts).await.expect("log in to serve");
    for (sql, code) in [
        ("SELECT * FROM mysql.user", 1064),
        ("SELECT @@global.rpl_semi_sync_master_enabled", 1193),
    ] {
        match c.query_drop(sql).await {
            Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, code, "{e}"),
            other => panic!("`{sql}` answered {other:?}"),
        }
    }
    c.ping().await.expect("COM_PING after an error");
    let v: Option<String> = c.query_first("SELECT VERSION()").await.unwrap();
    assert!(v.unwrap().starts_with("10.11."));
    c.disconnect().await.expect("COM_QUIT");
}
