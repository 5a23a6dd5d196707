//! A snapshot taken from a replica (to spare the master), with and without
//! the replica's binary log, caught up from the master by GTID.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::common::*;

/// A writer on the master until `stop` is set: two tables per transaction.
fn writer(m: &MariaDb, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let url = m.url();
    tokio::spawn(async move {
        let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
            .await
            .unwrap();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) && n < 20_000 {
            c.query_drop(
                "BEGIN; INSERT INTO src.w (v) VALUES (RAND()); UPDATE src.counter SET n = n + 1; COMMIT",
            )
            .await
            .unwrap();
            n += 1;
        }
        c.disconnect().await.ok();
        n
    })
}

async fn snapshot_from_replica(replica_binlog: bool, log_slave_updates: bool) {
    let m = master().await;
    let mut extra = Vec::new();
    if log_slave_updates {
        extra.push("--log-slave-updates".to_string());
    }
    let r = MariaDb::start_with(MariaDbOptions {
        server_id: 2,
        log_bin: replica_binlog,
        extra_args: extra,
        ..Default::default()
    })
    .await
    .unwrap();
    exec(
        &r,
        &format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', MASTER_USE_GTID=slave_pos; START SLAVE",
            m.port
        ),
    )
    .await;
    exec(
        &m,
        "CREATE DATABASE src; USE src; CREATE TABLE w (id INT AUTO_INCREMENT PRIMARY KEY, v DOUBLE); \
         CREATE TABLE counter (id INT PRIMARY KEY, n INT); INSERT INTO counter VALUES (1, 0); \
         CREATE TABLE big (id INT PRIMARY KEY, c CHAR(50)); INSERT INTO big SELECT seq, 'x' FROM seq_1_to_100000; \
         SET SESSION gtid_domain_id=7; CREATE TABLE other_domain (id INT PRIMARY KEY); INSERT INTO other_domain VALUES (1);",
    )
    .await;
    let goal = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    assert_eq!(
        scalar(&r, &format!("SELECT MASTER_GTID_WAIT('{goal}', 60)")).await,
        "0"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(&m, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (dir, stage) = local_stage();
    let j = extract_ok(&r.url(), &stage, "fromr", &["--json"]).await;
    // The manifest says where the snapshot was taken.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("fromr/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["source"]["replica_of"],
        serde_json::json!([format!("127.0.0.1:{}", m.port)]),
        "{}",
        manifest["source"]
    );
    assert!(manifest["position"]["gtid_source"]
        .as_str()
        .unwrap()
        .contains("gtid_slave_pos"));
    // The replica replicates again.
    let mut c = r.conn().await.unwrap();
    let st: Vec<mysql_async::Row> = c.query("SHOW SLAVE STATUS").await.unwrap();
    assert_eq!(
        st[0].get::<String, _>("Slave_SQL_Running").as_deref(),
        Some("Yes"),
        "{j}"
    );
    c.disconnect().await.ok();

    let t = replica(3).await;
    load_ok(&stage, "fromr", &t.url(), &[]).await;
    let (mu, tu) = (m.url(), t.url());
    replseed_ok(&catchup_args(&stage, "fromr", &mu, &tu), &[]).await;
    stop.store(true, Ordering::Relaxed);
    let written = w.await.unwrap();
    assert!(written > 0);
    let goal = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    assert_eq!(
        scalar(&t, &format!("SELECT MASTER_GTID_WAIT('{goal}', 60)")).await,
        "0"
    );
    assert_identical(&m, &t, &["src"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_from_a_replica_with_log_slave_updates_catches_up_from_the_master() {
    snapshot_from_replica(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_from_a_replica_without_its_binlog_catches_up_from_the_master() {
    snapshot_from_replica(false, false).await;
}
