//! The hand-off through the binlog archive never skips: the start a
//! replica is served from is found by GTID (a domain's sequence numbers may
//! go down with `gtid_strict_mode=OFF`), and a master that purges during a
//! long archive replay gets the replica through the archive again, or an
//! exit 3 that a rerun recovers from once the archive has caught up.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::common::*;

/// A server with `gtid_strict_mode=OFF`, where GTIDs may go out of order.
async fn lax(server_id: u32) -> MariaDb {
    MariaDb::start_with(MariaDbOptions {
        server_id,
        extra_args: vec!["--gtid-strict-mode=0".into()],
        ..Default::default()
    })
    .await
    .expect("start a server")
}

/// `replseed catchup` of snapshot s1 from `m` to `t`, through the archive;
/// returns its stderr.
async fn catchup_through_the_archive(stage: &str, m: &MariaDb, t: &MariaDb) -> String {
    let out = replseed(&catchup_args(stage, "s1", &m.url(), &t.url()), &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("replicating from the binlog archive"),
        "{stderr}"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_sequence_numbers_in_one_domain_are_all_applied_through_the_archive() {
    let (_dir, stage) = local_stage();
    let m = lax(1).await;
    exec(
        &m,
        "CREATE DATABASE a; USE a; CREATE TABLE a.t (id INT PRIMARY KEY, v VARCHAR(40)); \
         INSERT INTO a.t SELECT seq, 'before' FROM seq_1_to_100; \
         INSERT INTO a.t VALUES (101, 'before'); INSERT INTO a.t VALUES (102, 'before');",
    )
    .await;
    extract_ok(&m.url(), &stage, "s1", &["--no-accounts"]).await;
    // After the snapshot, domain 0 goes back to sequence numbers the
    // snapshot's GTID is past: another server_id, as after a failover.
    exec(
        &m,
        "SET SESSION server_id = 7, SESSION gtid_seq_no = 3; INSERT INTO a.t VALUES (1001, 'seq 3 of server 7'); \
         SET SESSION server_id = 1; INSERT INTO a.t VALUES (1002, 'in order'); \
         FLUSH BINARY LOGS; \
         SET SESSION server_id = 8, SESSION gtid_seq_no = 2; INSERT INTO a.t VALUES (1003, 'seq 2 of server 8'); \
         SET SESSION server_id = 1; INSERT INTO a.t VALUES (1004, 'last');",
    )
    .await;
    let binlog = scalar(&m, "SELECT @@gtid_binlog_state").await;
    assert!(
        binlog.contains("0-7-3") && binlog.contains("0-8-2"),
        "{binlog}"
    );
    archive_now(&m, &stage).await;
    purge_all(&m).await;

    let t = lax(2).await;
    load_ok(&stage, "s1", &t.url(), &["--no-accounts"]).await;
    catchup_through_the_archive(&stage, &m, &t).await;
    assert_eq!(
        scalar(
            &t,
            "SELECT GROUP_CONCAT(id ORDER BY id) FROM a.t WHERE id > 1000"
        )
        .await,
        "1001,1002,1003,1004",
        "a transaction of the archive was not applied"
    );
    assert_identical(&m, &t, &["a"]).await;
    still_replicating(&m, &t, "INSERT INTO a.t VALUES (1005, 'from the master')").await;
    assert_identical(&m, &t, &["a"]).await;
}

/// Holds `a.t` on the replica so its SQL thread waits: the archive replay
/// lasts until the returned session unlocks it.
async fn hold(t: &MariaDb) -> mysql_async::Conn {
    let mut c = t.conn().await.unwrap();
    c.query_drop("LOCK TABLES a.t WRITE").await.unwrap();
    c
}

/// Lets the replica's SQL thread go on.
async fn release(mut c: mysql_async::Conn) {
    c.query_drop("UNLOCK TABLES").await.unwrap();
    c.disconnect().await.unwrap();
}

/// Waits until the replica reads from replseed's binlog server.
async fn replaying(t: &MariaDb) {
    let start = Instant::now();
    loop {
        let mut c = t.conn().await.unwrap();
        let st: Option<mysql_async::Row> = c.query_first("SHOW SLAVE STATUS").await.unwrap();
        let user = st.and_then(|r| r.get::<String, _>("Master_User"));
        if user.as_deref() == Some("replseed_catchup") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the archive replay did not start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends a signal to a process this test started.
fn signal(sig: &str, pid: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// The master's dump threads (`0` for none), as an SQL list.
async fn dump_threads(m: &MariaDb) -> String {
    scalar(
        m,
        "SELECT IFNULL(GROUP_CONCAT(ID), '0') FROM information_schema.PROCESSLIST \
         WHERE COMMAND LIKE 'Binlog Dump%'",
    )
    .await
}

/// Waits until a dump thread of the master other than `others` has sent
/// its client everything.
async fn dump_idle(m: &MariaDb, others: &str) {
    let start = Instant::now();
    loop {
        let n = scalar(
            m,
            &format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%' \
                 AND STATE LIKE 'Master has sent all binlog%' AND ID NOT IN ({others})"
            ),
        )
        .await;
        if n != "0" {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the archiver does not catch up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the archiver `a` (run with archiver=debug) logs that it
/// has taken `gtid` into its open segment; its stderr is drained after.
async fn taken(a: &mut tokio::process::Child, gtid: &str) -> tokio::task::JoinHandle<String> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(a.stderr.take().expect("piped stderr")).lines();
    let wanted = format!("gtid={gtid}");
    let seen = tokio::time::timeout(Duration::from_secs(60), async {
        let mut log = String::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            if line.contains("taken into the open segment")
                && line.split_whitespace().any(|w| w == wanted)
            {
                return Ok(());
            }
        }
        Err(log)
    })
    .await;
    match seen {
        Ok(Ok(())) => {}
        Ok(Err(log)) => panic!("the archiver ended before taking {gtid}:\n{log}"),
        Err(_) => panic!("the archiver did not take {gtid} within 60 s"),
    }
    tokio::spawn(async move {
        let mut rest = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    })
}

/// Rows the master writes into a.t (ids from `from`).
async fn writes(m: &MariaDb, from: u32) {
    exec(
        m,
        &format!(
            "USE a; INSERT INTO a.t SELECT seq, 'w' FROM seq_{from}_to_{}; UPDATE a.t SET v = 'u' WHERE id = {from};",
            from + 499
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_the_master_during_a_long_archive_replay_is_recovered() {
    let (dir, stage) = local_stage();
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE a; USE a; CREATE TABLE a.t (id INT PRIMARY KEY, v VARCHAR(40)); \
         INSERT INTO a.t SELECT seq, 'before' FROM seq_1_to_1000;",
    )
    .await;
    extract_ok(&m.url(), &stage, "s1", &["--no-accounts"]).await;
    writes(&m, 10_000).await;
    archive_now(&m, &stage).await;
    purge_all(&m).await;

    // 1. The archive keeps up: catchup bridges again and ends replicating.
    let t1 = replica(2).await;
    load_ok(&stage, "s1", &t1.url(), &["--no-accounts"]).await;
    let lock = hold(&t1).await;
    let run = spawn_replseed(&catchup_args(&stage, "s1", &m.url(), &t1.url()), &[]);
    replaying(&t1).await;
    writes(&m, 20_000).await;
    archive_now(&m, &stage).await;
    purge_all(&m).await;
    release(lock).await;
    let out = run.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("replicating from the binlog archive"),
        "{stderr}"
    );
    assert_identical(&m, &t1, &["a"]).await;
    still_replicating(
        &m,
        &t1,
        "INSERT INTO a.t VALUES (1, 'x') ON DUPLICATE KEY UPDATE v = 'from the master'",
    )
    .await;

    // 2. The archive falls behind: exit 3, and a rerun once `archive` has
    // caught up ends replicating.
    let t2 = replica(3).await;
    load_ok(&stage, "s1", &t2.url(), &["--no-accounts"]).await;
    let lock = hold(&t2).await;
    let run = spawn_replseed(&catchup_args(&stage, "s1", &m.url(), &t2.url()), &[]);
    replaying(&t2).await;
    // An archiver that has read the new writes but not published them
    // (it is stopped) while the master purges them.
    let others = dump_threads(&m).await;
    let mut archiver = spawn_replseed(
        &[
            "archive",
            "--source",
            &m.url(),
            "--stage",
            &stage,
            "--segment-secs",
            "3600",
            "--log",
            "info,replseed_binlog::archiver=debug",
        ],
        &[],
    );
    writes(&m, 30_000).await;
    let goal = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    dump_idle(&m, &others).await;
    // The master's dump thread having sent everything is not the archiver
    // having read it (it may sit in the socket): wait for the archiver to
    // say it holds the goal's transaction.
    let log = taken(&mut archiver, &goal).await;
    let pid = archiver.id().unwrap().to_string();
    signal("-STOP", &pid);
    purge_all(&m).await;
    release(lock).await;
    let out = run.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("run `replseed archive`"), "{stderr}");
    assert_eq!(
        scalar(
            &t2,
            "SELECT status FROM replseed.load_runs WHERE snapshot='s1'"
        )
        .await,
        "archive",
        "the target is marked as handed over"
    );
    // The archiver goes on and publishes what it read.
    signal("-CONT", &pid);
    signal("-TERM", &pid);
    let status = archiver.wait().await.unwrap();
    let log = log.await.unwrap();
    assert!(status.success(), "{log}");
    assert_eq!(
        archive_segments(dir.path()).last().unwrap()["end_state"],
        goal.as_str(),
        "the archiver's log after it took {goal}:\n{log}"
    );
    catchup_through_the_archive(&stage, &m, &t2).await;
    assert_eq!(
        scalar(
            &t2,
            "SELECT status FROM replseed.load_runs WHERE snapshot='s1'"
        )
        .await,
        "replicating"
    );
    assert_identical(&m, &t2, &["a"]).await;
    still_replicating(
        &m,
        &t2,
        "INSERT INTO a.t VALUES (2, 'x') ON DUPLICATE KEY UPDATE v = 'again'",
    )
    .await;
    assert_identical(&m, &t2, &["a"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_published_at_the_head_that_breaks_the_chain_is_refused_not_streamed() {
    let (dir, stage) = local_stage();
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE a; USE a; CREATE TABLE a.t (id INT PRIMARY KEY, v VARCHAR(40)); \
         INSERT INTO a.t SELECT seq, 'before' FROM seq_1_to_100;",
    )
    .await;
    let snapshot = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    extract_ok(&m.url(), &stage, "s1", &["--no-accounts"]).await;
    exec(&m, "INSERT INTO a.t VALUES (1001, 'archived')").await;
    let goal = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    archive_now(&m, &stage).await;
    let (_serve, port) = serve_on_a_free_port(&stage).await;
    let t = replica(2).await;
    load_ok(&stage, "s1", &t.url(), &["--no-accounts"]).await;
    replicate_from(&t, port, "repl", "s3cret", &snapshot, &goal).await;

    // A copy of the stage gets two more segments; only the second reaches
    // the stage the replica waits at the head of: a gap.
    let side = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.path().display()))
        .arg(side.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let side_stage = file_stage(side.path());
    exec(
        &m,
        "INSERT INTO a.t VALUES (1002, 'in the missing segment')",
    )
    .await;
    archive_now(&m, &side_stage).await;
    exec(&m, "INSERT INTO a.t VALUES (1003, 'after the gap')").await;
    archive_now(&m, &side_stage).await;
    let seq = archive_segments(side.path()).last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    let segments = |root: &std::path::Path| root.join(".binlog/segments");
    for name in [format!("{seq:012}.bin.zst"), format!("{seq:012}.json")] {
        std::fs::copy(
            segments(side.path()).join(&name),
            segments(dir.path()).join(&name),
        )
        .unwrap();
    }
    let start = Instant::now();
    let mut c = t.conn().await.unwrap();
    loop {
        let st: mysql_async::Row = c.query_first("SHOW SLAVE STATUS").await.unwrap().unwrap();
        let errno: String = st.get("Last_IO_Errno").unwrap();
        let error: String = st.get("Last_IO_Error").unwrap();
        if errno == "1236" {
            // The archive's chain is checked whenever serve lists it
            // (stage::Stage::segment_chain), so the refusal names the
            // segment's manifest and says it follows another segment.
            assert!(
                error.contains(&format!("{seq:012}.json"))
                    && error.contains("it follows segment")
                    && error.contains("refused"),
                "{error}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the broken chain was not refused (IO error {errno}: {error})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        scalar(&t, "SELECT COUNT(*) FROM a.t WHERE id > 1001").await,
        "0",
        "a segment after the gap was applied"
    );
}
