//! The binlog archive: `replseed archive` stores the master's binary log
//! in the stage as a chain of segments, each a valid binlog file of whole
//! transactions. Checked here by applying the archive to a loaded replica
//! with `mariadb-binlog | mariadb` after the master purged those binlogs,
//! and comparing it with the master; by killing the archiver mid-segment;
//! and by restarting the master under it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

fn seq_of(gtid: &str) -> (u32, u64) {
    let p: Vec<&str> = gtid.split('-').collect();
    (p[0].parse().unwrap(), p[2].parse().unwrap())
}

/// The chain has no gap and no duplicate: each segment starts where the one
/// before ended, and in every domain the sequence numbers go on by one.
fn assert_chain(segs: &[serde_json::Value]) {
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s["seq"].as_u64().unwrap(), i as u64 + 1, "segment numbers");
        if i > 0 {
            assert_eq!(
                s["start_state"],
                segs[i - 1]["end_state"],
                "segment {} start",
                i + 1
            );
            assert_eq!(s["prev_end_state"], segs[i - 1]["end_state"]);
        }
        for d in s["domains"].as_array().unwrap() {
            let (dom, first) = seq_of(d["first"].as_str().unwrap());
            let (_, lastseq) = seq_of(d["last"].as_str().unwrap());
            if let Some(prev) = last.get(&dom) {
                assert_eq!(
                    first,
                    prev + 1,
                    "domain {dom}: segment {} starts at {first} after {prev}",
                    i + 1
                );
            }
            assert_eq!(
                lastseq - first + 1,
                d["transactions"].as_u64().unwrap(),
                "domain {dom} of segment {}: a gap or a duplicate inside",
                i + 1
            );
            last.insert(dom, lastseq);
        }
    }
}

/// Applies every archived segment to `t` with mariadb-binlog, in order.
async fn apply_archive(stage_dir: &Path, t: &MariaDb) {
    for s in archive_segments(stage_dir) {
        let seq = s["seq"].as_u64().unwrap();
        let stored =
            std::fs::read(stage_dir.join(format!(".binlog/segments/{seq:012}.bin.zst"))).unwrap();
        let raw = zstd::decode_all(&stored[..]).unwrap();
        assert_eq!(raw.len() as u64, s["bytes_raw"].as_u64().unwrap());
        apply_binlog(&raw, t).unwrap_or_else(|e| panic!("segment {seq}: {e}"));
    }
}

/// A new replica with snapshot s1 loaded, caught up by `replseed catchup`,
/// which must have gone through the archive.
async fn caught_up_through_the_archive(stage: &str, m: &MariaDb) -> MariaDb {
    let t = replica(2).await;
    load_ok(stage, "s1", &t.url(), &["--no-accounts"]).await;
    let out = replseed(&catchup_args(stage, "s1", &m.url(), &t.url()), &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("replicating from the binlog archive"),
        "{stderr}"
    );
    t
}

const WRITES: &str = "
USE a;
INSERT INTO a.t SELECT seq + 100000, seq, REPEAT('w', 50) FROM seq_1_to_3000;
UPDATE a.t SET v = v + 1 WHERE id % 7 = 0;
DELETE FROM a.t WHERE id % 11 = 0;
ALTER TABLE a.t ADD COLUMN extra INT DEFAULT 5;
CREATE TABLE a.m (id INT PRIMARY KEY, b LONGBLOB) ENGINE=MyISAM;
INSERT INTO a.m VALUES (1, REPEAT(x'A5', 20 * 1024 * 1024));
SET SESSION gtid_domain_id = 1;
INSERT INTO a.t (id, v, c) VALUES (900001, 1, 'domain one');
CREATE TABLE a.d1 (id INT PRIMARY KEY) ENGINE=InnoDB;
INSERT INTO a.d1 SELECT seq FROM seq_1_to_500;
SET SESSION gtid_domain_id = 0;
";

async fn master_with_snapshot(stage: &str) -> MariaDb {
    let m = master().await;
    exec(
        &m,
        "SET GLOBAL max_allowed_packet = 256 * 1024 * 1024; \
         CREATE DATABASE a; USE a; CREATE TABLE a.t (id INT PRIMARY KEY, v INT, c VARCHAR(60)); \
         INSERT INTO a.t SELECT seq, seq, 'before' FROM seq_1_to_20000; \
         SET SESSION gtid_domain_id = 1; INSERT INTO a.t (id, v, c) VALUES (800001, 1, 'domain 1 before'); SET SESSION gtid_domain_id = 0;",
    )
    .await;
    extract_ok(&m.url(), stage, "s1", &["--no-accounts"]).await;
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_outlives_the_masters_binlogs() {
    let (dir, stage) = local_stage();
    let m = master_with_snapshot(&stage).await;
    exec(&m, WRITES).await;
    exec(&m, "FLUSH BINARY LOGS").await;
    exec(
        &m,
        "INSERT INTO a.t (id, v, c) VALUES (700001, 1, 'in the second file')",
    )
    .await;
    let goal = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    let r = archive_now(&m, &stage).await;
    assert_eq!(r["to"].as_str().unwrap(), goal, "{r}");
    let segs = archive_segments(dir.path());
    assert!(
        segs.len() >= 2,
        "one segment per master binlog file: {segs:?}"
    );
    assert_eq!(segs.last().unwrap()["end_state"].as_str().unwrap(), goal);
    assert_eq!(segs[0]["start_state"], r["from"]);
    assert_chain(&segs);
    // Again: nothing new, nothing written.
    let again = archive_now(&m, &stage).await;
    assert_eq!(again["segments"], 0);

    // The master forgets those binlogs.
    // (A dump thread of the archiver that has not noticed its client left
    // keeps its file: purge until only the new file is left.)
    purge_all(&m).await;
    // catchup replays the archive to the replica, then hands it to the master.
    let t = caught_up_through_the_archive(&stage, &m).await;
    assert_identical(&m, &t, &["a"]).await;
    still_replicating(
        &m,
        &t,
        "INSERT INTO a.t (id, v, c) VALUES (700002, 2, 'after the purge')",
    )
    .await;
    assert_identical(&m, &t, &["a"]).await;
    // Run again: nothing is set back.
    replseed_ok(&catchup_args(&stage, "s1", &m.url(), &t.url()), &[]).await;
    still_replicating(
        &m,
        &t,
        "INSERT INTO a.t (id, v, c) VALUES (700003, 3, 'again')",
    )
    .await;
    assert_identical(&m, &t, &["a"]).await;

    // Every segment is a valid binlog file: mariadb-binlog applies the
    // archive to another copy of the snapshot, which then equals the master
    // as of the archive's end.
    let t2 = replica(3).await;
    load_ok(&stage, "s1", &t2.url(), &["--no-accounts"]).await;
    apply_archive(dir.path(), &t2).await;
    exec(&m, "DELETE FROM a.t WHERE id IN (700002, 700003)").await;
    assert_identical(&m, &t2, &["a"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_archiver_resumes_without_gap_or_duplicate_and_survives_a_master_restart() {
    let (dir, stage) = local_stage();
    let mut m = master_with_snapshot(&stage).await;
    let spawn = |url: String, stage: String| {
        spawn_replseed(
            &[
                "archive",
                "--source",
                &url,
                "--stage",
                &stage,
                "--segment-secs",
                "1",
            ],
            &[],
        )
    };
    let mut child = spawn(m.url(), stage.clone());
    // Writes while it follows; killed once a segment is out, mid-stream.
    let start = Instant::now();
    let mut i = 0;
    while archive_segments(dir.path()).len() < 2 {
        exec(
            &m,
            &format!(
                "INSERT INTO a.t (id, v, c) VALUES ({}, {i}, 'follow')",
                200000 + i
            ),
        )
        .await;
        i += 1;
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no segment published while following"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for j in 0..50 {
        exec(
            &m,
            &format!(
                "INSERT INTO a.t (id, v, c) VALUES ({}, {j}, 'unpublished')",
                300000 + j
            ),
        )
        .await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    exec(&m, WRITES).await;

    // Started again, following; the master restarts under it.
    let child = spawn(m.url(), stage.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    m.restart(Duration::from_secs(2)).await.unwrap();
    for j in 0..30 {
        exec(
            &m,
            &format!(
                "INSERT INTO a.t (id, v, c) VALUES ({}, {j}, 'after restart')",
                400000 + j
            ),
        )
        .await;
    }
    let goal = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    let start = Instant::now();
    loop {
        let segs = archive_segments(dir.path());
        if segs.last().is_some_and(|s| s["end_state"] == goal.as_str()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the archiver did not reach {goal}: {:?}",
            segs.last()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // SIGTERM: it publishes what it holds and ends cleanly.
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("reconnecting"),
        "the restart was not noticed: {stderr}"
    );
    let segs = archive_segments(dir.path());
    assert_chain(&segs);
    // Every transaction since the snapshot, once: applied, the copy is exact.
    let t = replica(2).await;
    load_ok(&stage, "s1", &t.url(), &["--no-accounts"]).await;
    apply_archive(dir.path(), &t).await;
    assert_identical(&m, &t, &["a"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_needs_a_starting_point() {
    let m = master().await;
    let (_dir, stage) = local_stage();
    let err = replseed_fails(
        &[
            "archive",
            "--source",
            &m.url(),
            "--stage",
            &stage,
            "--until-current",
        ],
        &[],
        1,
    )
    .await;
    assert!(
        err.contains("no segment and no published snapshot"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// A field of SHOW SLAVE STATUS.
async fn status(t: &MariaDb, field: &str) -> String {
    use mysql_async::prelude::Queryable;
    let mut c = t.conn().await.unwrap();
    let row: mysql_async::Row = c
        .query_first("SHOW SLAVE STATUS")
        .await
        .unwrap()
        .expect("a replica");
    let i = row
        .columns_ref()
        .iter()
        .position(|c| c.name_str() == field)
        .expect("field");
    text(&row.as_ref(i).unwrap().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_replicate_from_replseed_serve_after_the_master_purged() {
    let (dir, stage) = local_stage();
    let m = master_with_snapshot(&stage).await;
    let snapshot_gtid = replseed_ok(
        &["snapshots", "show", "s1", "--stage", &stage, "--json"],
        &[],
    )
    .await["gtid"]
        .as_str()
        .unwrap()
        .to_string();
    exec(&m, WRITES).await;
    exec(&m, "FLUSH BINARY LOGS").await;
    exec(
        &m,
        "INSERT INTO a.t (id, v, c) VALUES (700001, 1, 'second file')",
    )
    .await;
    let goal = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    archive_now(&m, &stage).await;
    assert!(archive_segments(dir.path()).len() >= 2);

    let (_serve, port) = serve_on_a_free_port(&stage).await;
    let t1 = replica(2).await;
    let t2 = replica(3).await;
    for t in [&t1, &t2] {
        load_ok(&stage, "s1", &t.url(), &["--no-accounts"]).await;
    }
    // A wrong password is refused.
    exec(&t1, &format!("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, MASTER_USER='repl', MASTER_PASSWORD='wrong', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE IO_THREAD")).await;
    let start = Instant::now();
    while status(&t1, "Last_IO_Errno").await != "1045" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "a wrong password was not refused: {}",
            status(&t1, "Last_IO_Error").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Both at once, from the archive alone.
    let (a, b) = tokio::join!(
        replicate_from(&t1, port, "repl", "s3cret", &snapshot_gtid, &goal),
        replicate_from(&t2, port, "repl", "s3cret", &snapshot_gtid, &goal)
    );
    let _ = (a, b);
    for t in [&t1, &t2] {
        assert_identical(&m, t, &["a"]).await;
    }
    // New segments reach a replica that waits at the head.
    exec(
        &m,
        "INSERT INTO a.t (id, v, c) VALUES (700002, 2, 'archived while served')",
    )
    .await;
    let goal2 = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    archive_now(&m, &stage).await;
    for t in [&t1, &t2] {
        assert_eq!(
            scalar(t, &format!("SELECT MASTER_GTID_WAIT('{goal2}', 60)")).await,
            "0",
            "replica on {} did not get the new segment",
            t.port
        );
    }
    // Then over to the master, which purged what the replicas got from the archive.
    exec(&m, "FLUSH BINARY LOGS").await;
    exec(&m, "PURGE BINARY LOGS BEFORE NOW() + INTERVAL 1 DAY").await;
    // replseed hands each over from where it is (past the snapshot, its
    // record still `done`), never rewinding it to the snapshot.
    for t in [&t1, &t2] {
        replseed_ok(&catchup_args(&stage, "s1", &m.url(), &t.url()), &[]).await;
        assert_eq!(status(t, "Master_Port").await, m.port.to_string());
        let pos = scalar(t, "SELECT @@gtid_slave_pos").await;
        assert_eq!(
            scalar(t, &format!("SELECT MASTER_GTID_WAIT('{goal2}', 0)")).await,
            "0",
            "rewound: at {pos}, not past {goal2}"
        );
    }
    for t in [&t1, &t2] {
        still_replicating(
            &m,
            t,
            &format!(
                "INSERT INTO a.t (id, v, c) VALUES ({}, 3, 'from the master')",
                710000 + t.port as u32
            ),
        )
        .await;
    }
    assert_identical(&m, &t1, &["a"]).await;
    assert_identical(&m, &t2, &["a"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_catches_two_replicas_up_through_the_archive_at_once() {
    let (_dir, stage) = local_stage();
    let m = master_with_snapshot(&stage).await;
    exec(&m, WRITES).await;
    archive_now(&m, &stage).await;
    purge_all(&m).await;
    let t1 = replica(2).await;
    let t2 = replica(3).await;
    let out = replseed(
        &[
            "provision",
            "--source",
            &m.url(),
            "--stage",
            &stage,
            "--snapshot",
            "s1",
            "--target",
            &t1.url(),
            "--target",
            &t2.url(),
            "--no-accounts",
        ],
        &[],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr
            .matches("replicating from the binlog archive")
            .count(),
        2,
        "{stderr}"
    );
    for t in [&t1, &t2] {
        still_replicating(
            &m,
            t,
            &format!(
                "INSERT INTO a.t (id, v, c) VALUES ({}, 1, 'after')",
                600000 + t.server_id
            ),
        )
        .await;
        assert_identical(&m, t, &["a"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catchup_exits_3_naming_what_neither_the_master_nor_the_archive_has() {
    let (dir, stage) = local_stage();
    let m = master_with_snapshot(&stage).await;
    exec(
        &m,
        "INSERT INTO a.t (id, v, c) VALUES (500001, 1, 'first segment')",
    )
    .await;
    archive_now(&m, &stage).await;
    exec(&m, "FLUSH BINARY LOGS").await;
    exec(
        &m,
        "INSERT INTO a.t (id, v, c) VALUES (500002, 1, 'not archived')",
    )
    .await;
    purge_all(&m).await;
    let t = replica(2).await;
    load_ok(&stage, "s1", &t.url(), &["--no-accounts"]).await;
    // The archive ends before the master's oldest binlog starts.
    let err = replseed_fails(&catchup_args(&stage, "s1", &m.url(), &t.url()), &[], 3).await;
    assert!(err.contains("the archive covers"), "{err}");
    assert!(err.contains("is missing"), "{err}");
    // No archive at all.
    for e in std::fs::read_dir(dir.path().join(".binlog/segments"))
        .unwrap()
        .flatten()
    {
        std::fs::remove_file(e.path()).unwrap();
    }
    let err = replseed_fails(&catchup_args(&stage, "s1", &m.url(), &t.url()), &[], 3).await;
    assert!(err.contains("has no binlog archive"), "{err}");
    // Nothing was changed on the replica.
    assert_eq!(
        scalar(
            &t,
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Slave_IO'"
        )
        .await,
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_binlog_is_archived_and_served() {
    let (_dir, stage) = local_stage();
    let m = MariaDb::start_with(MariaDbOptions {
        server_id: 1,
        extra_args: vec![
            "--log-bin-compress=ON".into(),
            "--log-bin-compress-min-len=10".into(),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    exec(
        &m,
        "CREATE DATABASE a; USE a; CREATE TABLE a.t (id INT PRIMARY KEY, v INT, c VARCHAR(600)); \
         INSERT INTO a.t SELECT seq, seq, REPEAT('c', 500) FROM seq_1_to_2000;",
    )
    .await;
    extract_ok(&m.url(), &stage, "s1", &["--no-accounts"]).await;
    exec(
        &m,
        "USE a; UPDATE a.t SET c = REPEAT('u', 590) WHERE id % 3 = 0; \
         CREATE TABLE a.u (id INT PRIMARY KEY, note VARCHAR(400) DEFAULT 'a default long enough to be compressed in the query event'); \
         INSERT INTO a.u (id) SELECT seq FROM seq_1_to_100; DELETE FROM a.t WHERE id % 5 = 0;",
    )
    .await;
    {
        use mysql_async::prelude::Queryable;
        let mut c = m.conn().await.unwrap();
        let evs: Vec<mysql_async::Row> = c.query("SHOW BINLOG EVENTS").await.unwrap();
        let compressed = evs
            .iter()
            .filter(|r| text(&r.as_ref(2).unwrap().clone()).contains("compressed"))
            .count();
        assert!(
            compressed > 10,
            "the master wrote {compressed} compressed events"
        );
    }
    archive_now(&m, &stage).await;
    purge_all(&m).await;
    let t = caught_up_through_the_archive(&stage, &m).await;
    still_replicating(&m, &t, "INSERT INTO a.u (id) VALUES (1000)").await;
    assert_identical(&m, &t, &["a"]).await;
}
