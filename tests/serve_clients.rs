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

/// Where the last transaction in the master's `file` ends.
async fn last_transaction_end(m: &MariaDb, file: &str) -> u64 {
    let mut c = m.conn().await.unwrap();
    let rows: Vec<mysql_async::Row> = c
        .query(format!("SHOW BINLOG EVENTS IN '{file}'"))
        .await
        .unwrap();
    rows.iter()
        .rev()
        .find(|r| r.get::<String, _>(2).unwrap() == "Xid")
        .map(|r| r.get::<u64, _>(4).unwrap())
        .expect("a transaction in the file")
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

    // SHOW MASTER STATUS: the master's file and the end of its last
    // transaction, from the archive (it holds everything up to the
    // master's last write; a Binlog_checkpoint the master may write after
    // it is not archived).
    let file = current_file(&m).await;
    let pos = last_transaction_end(&m, &file).await;
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
            assert_eq!(n, pos, "{name}: {out}");
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
    // Variables are kept per session, and bounded: a client cannot make
    // serve hold an unbounded number of 64 KiB values.
    let big = "z".repeat(60_000);
    let mut refused_at = None;
    for i in 0..300 {
        match c.query_drop(format!("SET @v{i} = '{big}'")).await {
            Ok(()) => {}
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, 1105, "{e}");
                assert!(e.message.contains("at most 256 variables"), "{e}");
                refused_at = Some(i);
                break;
            }
            Err(e) => panic!("SET @v{i}: {e}"),
        }
    }
    assert_eq!(refused_at, Some(256), "the SET beyond the limit is refused");
    c.ping().await.expect("COM_PING after an error");
    let v: Option<String> = c.query_first("SELECT VERSION()").await.unwrap();
    assert!(v.unwrap().starts_with("10.11."));
    c.disconnect().await.expect("COM_QUIT");
}

/// Who `mariadb-binlog --read-from-remote-server` reads from.
enum From<'a> {
    Master(&'a MariaDb),
    Serve(u16),
}

/// `mariadb-binlog -R` with `args`, its stdout (panics on failure).
async fn binlog_remote(from: &From<'_>, args: &[&str]) -> Vec<u8> {
    let mut cmd = tokio::process::Command::new("mariadb-binlog");
    cmd.args(["--read-from-remote-server", "-h", "127.0.0.1"]);
    match from {
        From::Master(m) => cmd.args(["-P", &m.port.to_string(), "-u", "root"]),
        From::Serve(port) => cmd
            .args(["-P", &port.to_string(), "-u", "repl"])
            .env("MYSQL_PWD", "s3cret"),
    };
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        cmd.args(args).kill_on_drop(true).output(),
    )
    .await
    .expect("mariadb-binlog ends at the head")
    .expect("run mariadb-binlog");
    assert!(
        out.status.success(),
        "mariadb-binlog {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A binlog file's events: (position, type, bytes).
fn events_of(file: &[u8]) -> Vec<(u64, u8, &[u8])> {
    assert_eq!(&file[..4], b"\xfebin", "a binlog file");
    let mut out = Vec::new();
    let mut at = 4;
    while at < file.len() {
        let len = u32::from_le_bytes(file[at + 9..at + 13].try_into().unwrap()) as usize;
        out.push((at as u64, file[at + 4], &file[at..at + len]));
        at += len;
    }
    out
}

/// The master's current binlog file.
async fn current_file(m: &MariaDb) -> String {
    let mut c = m.conn().await.unwrap();
    let r: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    r.get(0).unwrap()
}

const GTID_EVENT: u8 = 162;

/// The events from the first GTID event on, but Binlog_checkpoint events
/// (type 161), which the master writes between transactions when it likes
/// and the archive does not keep.
fn transactions<'a>(evs: &[(u64, u8, &'a [u8])]) -> Vec<(u64, u8, &'a [u8])> {
    let at = evs
        .iter()
        .position(|e| e.1 == GTID_EVENT)
        .expect("a transaction");
    evs[at..].iter().filter(|e| e.1 != 161).copied().collect()
}
const FORMAT_DESCRIPTION: u8 = 15;

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_binlog_reads_serve_by_file_and_position_as_from_the_master() {
    let (m, _dir, _stage, _serve, port) = served_master().await;
    let file = current_file(&m).await;
    let out = tempfile::tempdir().unwrap();
    let prefix = |who: &str| format!("--result-file={}/{who}-", out.path().display());

    // --raw from position 4: the master's file and serve's, each as
    // mariadb-binlog wrote it. The master's begins with its format
    // description, Gtid_list and Binlog_checkpoint; the archive keeps the
    // format description and the transactions, not the other two. From the
    // first GTID event on, the files are byte-identical.
    // The archive has no Annotate_rows events (the archiver does not ask
    // for them): read without them from both.
    let skip = "--skip-annotate-row-events";
    binlog_remote(&From::Master(&m), &[skip, "--raw", &prefix("m"), &file]).await;
    binlog_remote(&From::Serve(port), &[skip, "--raw", &prefix("s"), &file]).await;
    let listed: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let theirs = std::fs::read(out.path().join(format!("m-{file}")))
        .unwrap_or_else(|e| panic!("{e}: {listed:?}"));
    let ours = std::fs::read(out.path().join(format!("s-{file}")))
        .unwrap_or_else(|e| panic!("{e}: {listed:?}"));
    let (t, o) = (events_of(&theirs), events_of(&ours));
    assert_eq!(o[0].1, FORMAT_DESCRIPTION);
    let (t_tx, o_tx) = (transactions(&t), transactions(&o));
    assert!(t_tx.len() >= 4, "two transactions: {t_tx:?}");
    let bytes = |evs: &[(u64, u8, &[u8])]| evs.iter().map(|e| e.2.to_vec()).collect::<Vec<_>>();
    assert_eq!(
        bytes(&o_tx),
        bytes(&t_tx),
        "the transactions of {file}, raw"
    );
    // Positions in the master's file, from the events' own headers.
    let at = |e: &(u64, u8, &[u8])| {
        u64::from(u32::from_le_bytes(e.2[13..17].try_into().unwrap())) - e.2.len() as u64
    };
    let first_gtid = at(&t_tx[0]);

    // Decoded, from the first transaction's position: the same text from
    // its `# at` line on.
    let pos = format!("--start-position={first_gtid}");
    let decoded = |b: Vec<u8>| {
        let s = String::from_utf8(b).unwrap();
        let at = s
            .find(&format!("# at {first_gtid}\n"))
            .expect("# at the start");
        // Without the Binlog_checkpoint events (not archived).
        s[at..]
            .split("# at ")
            .filter(|event| !event.contains("Binlog checkpoint"))
            .collect::<Vec<_>>()
            .join("# at ")
    };
    let theirs = decoded(binlog_remote(&From::Master(&m), &[skip, &pos, &file]).await);
    let ours = decoded(binlog_remote(&From::Serve(port), &[skip, &pos, &file]).await);
    assert!(
        ours.contains("INSERT INTO") || ours.contains("Write_rows"),
        "{ours}"
    );
    assert_eq!(ours, theirs, "the decoded transactions of {file}");

    // A position inside the file, at the second transaction: only what follows.
    let second = at(t_tx.iter().filter(|e| e.1 == GTID_EVENT).nth(1).unwrap());
    // (raw: mariadb-binlog does not filter what it writes).
    let pos = format!("--start-position={second}");
    let prefix2 = format!("--result-file={}/s2-", out.path().display());
    binlog_remote(&From::Serve(port), &[skip, "--raw", &prefix2, &pos, &file]).await;
    let from_second = std::fs::read(out.path().join(format!("s2-{file}"))).unwrap();
    let tail = transactions(&events_of(&from_second));
    let i = t_tx.iter().position(|e| at(e) == second).unwrap();
    assert_eq!(bytes(&tail), bytes(&t_tx[i..]), "from {file}:{second}");

    // A position no event starts at, and a file the archive has not: refused.
    for args in [
        vec![format!("--start-position={}", second + 1), file.clone()],
        vec!["mariadb-bin.999999".to_string()],
    ] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = tokio::process::Command::new("mariadb-binlog")
            .args([
                "-R",
                "-h",
                "127.0.0.1",
                "-P",
                &port.to_string(),
                "-u",
                "repl",
            ])
            .args(&a)
            .env("MYSQL_PWD", "s3cret")
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was served");
        assert!(
            err.contains("impossible position") || err.contains("Could not find first log file"),
            "{args:?}: {err}"
        );
    }
}

/// Waits until replica `t` has executed the master's last transaction
/// (by position: it does not use GTIDs).
async fn wait_for_position(m: &MariaDb, t: &MariaDb) {
    let file = current_file(m).await;
    let pos = last_transaction_end(m, &file).await;
    let waited = scalar(t, &format!("SELECT MASTER_POS_WAIT('{file}', {pos}, 60)")).await;
    if waited == "-1" || waited == "NULL" || waited.is_empty() {
        let mut c = t.conn().await.unwrap();
        let st: Option<mysql_async::Row> = c.query_first("SHOW SLAVE STATUS").await.unwrap();
        panic!("replica did not reach {file}:{pos} ({waited}): {st:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_with_master_use_gtid_no_replicates_from_a_file_and_position() {
    let (m, dir, stage, _serve, port) = served_master().await;
    // Where the archive starts: right after the snapshot, in the master's terms.
    let first = archive_segments(dir.path()).remove(0);
    let (file, pos) = (
        first["master_file"].as_str().unwrap().to_string(),
        first["first_pos"].as_u64().unwrap(),
    );
    let t = replica(2).await;
    load_ok(&stage, "s1", &t.url(), &["--no-accounts"]).await;
    exec(
        &t,
        &format!(
            "STOP SLAVE; CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, \
             MASTER_USER='repl', MASTER_PASSWORD='s3cret', MASTER_LOG_FILE='{file}', \
             MASTER_LOG_POS={pos}, MASTER_USE_GTID=no, MASTER_CONNECT_RETRY=1; START SLAVE"
        ),
    )
    .await;
    wait_for_position(&m, &t).await;
    assert_identical(&m, &t, &["a"]).await;

    // Still replicating: a new write, archived, reaches it.
    exec(&m, "INSERT INTO a.t VALUES (4, 'four')").await;
    archive_now(&m, &stage).await;
    wait_for_position(&m, &t).await;
    assert_identical(&m, &t, &["a"]).await;
    assert_eq!(scalar(&t, "SELECT v FROM a.t WHERE id = 4").await, "four");
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_binlog_stop_never_follows_serve_from_a_gtid() {
    let (m, _dir, stage, _serve, port) = served_master().await;
    // From the GTID of the archive's first transaction: what follows it.
    let from = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    let mut follower = tokio::process::Command::new("mariadb-binlog")
        .args([
            "-R",
            "-h",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-u",
            "repl",
        ])
        .args(["--stop-never", "--stop-never-slave-server-id=77"])
        .arg(format!("--start-position={from}"))
        // A file is required, and in GTID mode the master picks it by GTID.
        .arg("mariadb-bin.000001")
        .env("MYSQL_PWD", "s3cret")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = follower.stdout.take().unwrap();
    exec(&m, "INSERT INTO a.t VALUES (5, 'followed')").await;
    let want = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    archive_now(&m, &stage).await;
    // The new transaction arrives while mariadb-binlog keeps waiting.
    let mut seen = Vec::new();
    let got = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 8192];
        loop {
            let n = stdout.read(&mut buf).await.unwrap();
            if n == 0 {
                return false;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains(&format!("GTID {want}")) {
                return true;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    if got != Ok(true) {
        let _ = follower.start_kill();
        let out = follower.wait_with_output().await.unwrap();
        panic!(
            "mariadb-binlog --stop-never did not get {want}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        !text.contains(&format!("GTID {from}\n")),
        "{from} was the client's: {text}"
    );
    assert!(
        follower.try_wait().unwrap().is_none(),
        "--stop-never keeps following"
    );
}
