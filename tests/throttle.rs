//! Protecting servers that serve: `--max-rate` on the master,
//! `--max-threads-running` and `--max-replica-lag` pauses, `--max-load-rate`
//! on a target; and the lease that keeps `snapshots delete` and `prune` off
//! a snapshot being loaded.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::common::*;

/// A master with one table of about 24 MiB of row data.
async fn master_with_rows() -> MariaDb {
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE th; USE th; \
         CREATE TABLE t (id INT PRIMARY KEY, pad CHAR(200) NOT NULL); \
         INSERT INTO t SELECT seq, REPEAT(CHAR(65 + seq % 26), 200) FROM seq_1_to_120000;",
    )
    .await;
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extract_keeps_to_max_rate() {
    let m = master_with_rows().await;
    let (_dir, stage) = local_stage();
    let start = Instant::now();
    extract_ok(&m.url(), &stage, "slow", &["--max-rate", "4"]).await;
    let took = start.elapsed();
    // 120,000 rows of 200 characters: over 22 MiB of values at 4 MiB/s.
    assert!(took >= Duration::from_secs(4), "took {took:?}");
    let t = replica(2).await;
    load_ok(&stage, "slow", &t.url(), &[]).await;
    assert_identical(&m, &t, &["th"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extract_pauses_while_the_master_is_busy() {
    let m = master_with_rows().await;
    let (_dir, stage) = local_stage();
    // Five sessions busy for 6 seconds: Threads_running is 5 above idle.
    let mut busy = Vec::new();
    for _ in 0..5 {
        let mut c = m.conn().await.unwrap();
        busy.push(tokio::spawn(async move {
            c.query_drop("SELECT SLEEP(6)").await.unwrap();
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let out = replseed(
        &[
            "extract",
            "--source",
            &m.url(),
            "--stage",
            &stage,
            "--snapshot",
            "busy",
            "--threads",
            "2",
            "--max-threads-running",
            "2",
        ],
        &[],
    )
    .await;
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Threads_running is"), "{stderr}");
    assert!(stderr.contains("pausing the work"), "{stderr}");
    assert!(took >= Duration::from_secs(4), "took {took:?}: {stderr}");
    for b in busy {
        b.await.unwrap();
    }
    let t = replica(2).await;
    load_ok(&stage, "busy", &t.url(), &[]).await;
    assert_identical(&m, &t, &["th"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extract_pauses_while_a_replica_is_stopped() {
    let m = master_with_rows().await;
    let r = replica(3).await;
    exec(
        &r,
        &format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', MASTER_USE_GTID=slave_pos; \
             START SLAVE IO_THREAD;",
            m.port
        ),
    )
    .await;
    // The SQL thread is stopped: Seconds_Behind_Master is NULL.
    let (_dir, stage) = local_stage();
    let child = spawn_replseed(
        &[
            "extract",
            "--source",
            &m.url(),
            "--stage",
            &stage,
            "--snapshot",
            "lag",
            "--max-replica-lag",
            "10",
            "--lag-replica",
            &r.url(),
        ],
        &[],
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Still paused: nothing published.
    let listed = replseed_ok(&["snapshots", "list", "--stage", &stage, "--json"], &[]).await;
    assert_eq!(listed["snapshots"].as_array().map(Vec::len), Some(0));
    exec(&r, "START SLAVE SQL_THREAD").await;
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the extract goes on once the replica replicates")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("is not replicating"), "{stderr}");
    assert!(stderr.contains("going on after a pause"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_keeps_to_its_rate_and_its_snapshot_is_not_deleted_under_it() {
    let m = master_with_rows().await;
    let (_dir, stage) = local_stage();
    extract_ok(&m.url(), &stage, "old", &[]).await;
    // Prune orders by finished_at (seconds), then id.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    extract_ok(&m.url(), &stage, "new", &[]).await;
    let t = replica(2).await;
    let start = Instant::now();
    let child = spawn_replseed(
        &[
            "load",
            "--stage",
            &stage,
            "--snapshot",
            "old",
            "--target",
            &t.url(),
            "--max-load-rate",
            "4",
        ],
        &[],
    );
    // Once the load has begun, the snapshot it reads is not deleted...
    let mut refused = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let out = replseed(&["snapshots", "delete", "old", "--stage", &stage], &[]).await;
        assert!(!out.status.success(), "deleted under a running load");
        refused = String::from_utf8_lossy(&out.stderr).into_owned();
        if refused.contains("is in use") {
            break;
        }
    }
    assert!(refused.contains("is in use"), "{refused}");
    assert!(
        refused.contains(&format!("load into 127.0.0.1:{}", t.port)),
        "{refused}"
    );
    // ... nor pruned: kept, and said so.
    let pruned = prune(&stage, 1).await;
    assert_eq!(pruned["in_use"][0], "old", "{pruned}");
    assert_eq!(pruned["deleted"].as_array().map(Vec::len), Some(0));
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("load ends")
        .unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Over 22 MiB of LOAD DATA text at 4 MiB/s.
    assert!(took >= Duration::from_secs(4), "took {took:?}");
    assert_identical(&m, &t, &["th"]).await;
    // Done: the lease is gone, and the snapshot can go.
    replseed_ok(&["snapshots", "delete", "old", "--stage", &stage], &[]).await;
    let listed = replseed_ok(&["snapshots", "list", "--stage", &stage, "--json"], &[]).await;
    assert_eq!(listed["snapshots"][0]["id"], "new");
}
