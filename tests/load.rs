//! Load and catch-up: the conflict policy, resume after SIGKILL, corrupt
//! chunks, purged binlogs, and provisioning several replicas at once.

use std::time::Duration;

use crate::common::*;

async fn shop_master() -> MariaDb {
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE shop; USE shop; \
         CREATE TABLE orders (id INT PRIMARY KEY, customer INT, total DECIMAL(10,2), note VARCHAR(100), KEY kc (customer)); \
         INSERT INTO orders SELECT seq, seq % 500, seq / 7, CONCAT('note ', seq) FROM seq_1_to_60000; \
         CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(50)); \
         INSERT INTO customers SELECT seq, CONCAT('customer ', seq) FROM seq_0_to_499; \
         CREATE TABLE items (order_id INT, sku VARCHAR(20), qty INT, PRIMARY KEY (order_id, sku)); \
         INSERT INTO items SELECT seq, CONCAT('sku-', seq % 13), seq % 5 FROM seq_1_to_40000; \
         CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 1000; \
         CREATE PROCEDURE ping() SELECT 1; \
         CREATE SEQUENCE order_ids START WITH 60001;",
    )
    .await;
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_refuse_without_force_and_replace_exactly_with_force() {
    let m = shop_master().await;
    let (_dir, stage) = local_stage();
    extract_ok(&m.url(), &stage, "c1", &[]).await;

    let t = replica(2).await;
    exec(
        &t,
        "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, other TEXT); INSERT INTO shop.orders VALUES (1, 'old'); \
         CREATE TABLE shop.extra (id INT PRIMARY KEY); INSERT INTO shop.extra VALUES (42); \
         CREATE PROCEDURE shop.ping() SELECT 2; \
         CREATE DATABASE keep; CREATE TABLE keep.k (id INT PRIMARY KEY); INSERT INTO keep.k VALUES (7);",
    )
    .await;
    let before = fingerprint(&t, &["shop", "keep"]).await;
    let err = replseed_fails(
        &[
            "load",
            "--stage",
            &stage,
            "--snapshot",
            "c1",
            "--target",
            &t.url(),
        ],
        &[],
        1,
    )
    .await;
    for needle in [
        "3 object(s)",
        "database `shop`",
        "table `shop`.`orders`",
        "procedure `shop`.`ping`",
        "--force",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
    // Refusal changed nothing at all, not even a bookkeeping schema.
    assert_eq!(fingerprint(&t, &["shop", "keep"]).await, before);
    assert_eq!(
        scalar(
            &t,
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='replseed'"
        )
        .await,
        "0"
    );

    let j = load_ok(&stage, "c1", &t.url(), &["--force", "--json"]).await;
    assert_eq!(j["replaced"].as_array().unwrap().len(), 3, "{j}");
    // The snapshot's objects are the master's now; the rest is untouched.
    let ma = fingerprint(&m, &["shop"]).await;
    let ta = fingerprint(&t, &["shop"]).await;
    for (k, v) in &ma {
        assert_eq!(ta.get(k), Some(v), "{k}");
    }
    assert_eq!(scalar(&t, "SELECT id FROM shop.extra").await, "42");
    assert_eq!(scalar(&t, "SELECT id FROM keep.k").await, "7");

    // Loading into the master itself is refused.
    let err = replseed_fails(
        &[
            "load",
            "--stage",
            &stage,
            "--snapshot",
            "c1",
            "--target",
            &m.url(),
            "--force",
        ],
        &[],
        1,
    )
    .await;
    assert!(err.contains("same as the snapshot's master"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_killed_with_sigkill_resumes_to_an_identical_copy() {
    let m = shop_master().await;
    load_fixture(&m).await;
    let (_dir, stage) = local_stage();
    extract_ok(&m.url(), &stage, "k1", &["--chunk-rows", "4000"]).await;
    let t = replica(2).await;
    let args = [
        "load",
        "--stage",
        stage.as_str(),
        "--snapshot",
        "k1",
        "--target",
        &t.url(),
        "--threads",
        "2",
    ];

    // Kill at different points: after some chunks, and very early.
    let mut kills = 0;
    for wait_chunks in [3u64, 9, 0] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_replseed"))
            .args(args)
            .env("REPLSEED_NO_PROGRESS", "1")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        loop {
            let n: u64 = scalar(&t, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='replseed' AND TABLE_NAME='load_chunks'")
                .await
                .parse()
                .unwrap();
            let loaded: u64 = if n == 1 {
                scalar(&t, "SELECT COUNT(*) FROM replseed.load_chunks")
                    .await
                    .parse()
                    .unwrap()
            } else {
                0
            };
            if loaded >= wait_chunks || t0.elapsed() > Duration::from_secs(60) {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("load finished ({status}) before it could be killed");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if child.try_wait().unwrap().is_none() {
            child.start_kill().unwrap(); // SIGKILL
            child.wait().await.unwrap();
            kills += 1;
        }
    }
    assert!(kills >= 2, "the load was killed only {kills} times");
    let j = replseed_ok(&[&args[..], &["--json"]].concat(), &[]).await;
    assert!(j["chunks_resumed"].as_u64().unwrap() > 0, "{j}");
    assert_identical(&m, &t, &["shop", "fx", "we`ird db;"]).await;
    // Running it again is a no-op.
    let j = replseed_ok(&[&args[..], &["--json"]].concat(), &[]).await;
    assert_eq!(j["already_loaded"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_chunk_stops_the_load_which_then_resumes() {
    let m = shop_master().await;
    let (dir, stage) = local_stage();
    let show = {
        extract_ok(&m.url(), &stage, "x1", &["--chunk-rows", "10000"]).await;
        replseed_ok(
            &["snapshots", "show", "x1", "--stage", &stage, "--json"],
            &[],
        )
        .await
    };
    let orders = show["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "orders")
        .unwrap();
    let victim = orders["chunks"][2]["path"].as_str().unwrap().to_string();
    let file = dir.path().join(&victim);
    let good = std::fs::read(&file).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n / 3] ^= 0x40;
    std::fs::write(&file, &bad).unwrap();

    let t = replica(2).await;
    let err = replseed_fails(
        &[
            "load",
            "--stage",
            &stage,
            "--snapshot",
            "x1",
            "--target",
            &t.url(),
        ],
        &[],
        1,
    )
    .await;
    assert!(
        err.contains(&format!("chunk `{victim}` is corrupt")),
        "{err}"
    );
    // No rows of the bad chunk went in: none in its key range, and it is
    // not recorded as loaded (a rerun would skip it then).
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("x1/manifest.json")).unwrap())
            .unwrap();
    let chunk = manifest["databases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["tables"].as_array().unwrap())
        .flat_map(|t| t["chunks"].as_array().unwrap())
        .find(|c| c["path"] == victim.as_str())
        .unwrap()
        .clone();
    let key = |end: &str| -> u64 {
        chunk["key_range"][end][0]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let in_range = format!(
        "SELECT COUNT(*) FROM shop.orders WHERE id BETWEEN {} AND {}",
        key("first"),
        key("last")
    );
    // The range holds the chunk's rows on the master...
    assert_eq!(
        scalar(&m, &in_range).await,
        chunk["rows"].to_string(),
        "{victim}"
    );
    // ... and none on the target.
    assert_eq!(
        scalar(&t, &in_range).await,
        "0",
        "rows of the corrupt chunk {victim} were loaded"
    );
    assert_eq!(
        scalar(
            &t,
            &format!("SELECT COUNT(*) FROM replseed.load_chunks WHERE path = '{victim}'")
        )
        .await,
        "0",
        "the corrupt chunk is recorded as loaded"
    );
    std::fs::write(&file, &good).unwrap();
    load_ok(&stage, "x1", &t.url(), &[]).await;
    assert_identical(&m, &t, &["shop"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catchup_from_purged_binlogs_fails_with_the_purge_named() {
    let m = shop_master().await;
    let (_dir, stage) = local_stage();
    extract_ok(&m.url(), &stage, "p1", &[]).await;
    let t = replica(2).await;
    load_ok(&stage, "p1", &t.url(), &[]).await;
    exec(&m, "INSERT INTO shop.customers VALUES (1000, 'late'); FLUSH BINARY LOGS; INSERT INTO shop.customers VALUES (1001, 'later'); FLUSH BINARY LOGS").await;
    // MariaDB keeps a binlog until InnoDB no longer needs it for crash recovery: retry the purge.
    let snapshot_file = scalar(&m, "SELECT 'mariadb-bin.000001'").await;
    for _ in 0..100 {
        let logs: Vec<String> = {
            let mut c = m.conn().await.unwrap();
            query(&mut c, "SHOW BINARY LOGS")
                .await
                .iter()
                .map(|r| text(&r[0]))
                .collect()
        };
        if logs[0] != snapshot_file {
            break;
        }
        exec(
            &m,
            &format!("PURGE BINARY LOGS TO '{}'", logs.last().unwrap()),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = replseed_fails(&catchup_args(&stage, "p1", &m.url(), &t.url()), &[], 3).await;
    assert!(
        err.contains("were purged") && err.contains("take a newer snapshot"),
        "{err}"
    );
    // The replica was not pointed at the master.
    assert_eq!(
        scalar(
            &t,
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Slave%'"
        )
        .await,
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_two_targets_gives_two_identical_replicating_replicas() {
    let m = shop_master().await;
    load_fixture(&m).await;
    let (r1, r2) = (replica(2).await, replica(3).await);
    let (_dir, stage) = local_stage();
    let j = replseed_ok(
        &[
            "provision",
            "--source",
            &m.url(),
            "--target",
            &r1.url(),
            "--target",
            &r2.url(),
            "--stage",
            &stage,
            "--threads",
            "2",
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(j["ok"], true, "{j}");
    let targets = j["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    for t in targets {
        assert_eq!(t["replicating"], true);
        assert_eq!(t["caught_up"], true);
    }
    // Changes on the master flow to both.
    exec(&m, "INSERT INTO shop.customers VALUES (5000, 'after provisioning'); UPDATE fx.ints SET ti = 5 WHERE id = 4; DELETE FROM fx.ver WHERE id = 3").await;
    let goal = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    for r in [&r1, &r2] {
        assert_eq!(
            scalar(r, &format!("SELECT MASTER_GTID_WAIT('{goal}', 30)")).await,
            "0"
        );
        assert_identical(&m, r, &["shop", "fx", "we`ird db;"]).await;
        let v = replseed_ok(
            &[verify_args(&m.url(), &r.url()), vec!["--json"]].concat(),
            &[],
        )
        .await;
        assert_eq!(v["differences"].as_array().unwrap().len(), 0, "{v}");
    }
    // A second catch-up never rewinds a running replica.
    let snap = j["snapshot"].as_str().unwrap();
    let c = replseed_ok(
        &[
            catchup_args(&stage, snap, &m.url(), &r1.url()),
            vec!["--json"],
        ]
        .concat(),
        &[],
    )
    .await;
    assert_eq!(c["configured"], false);
    assert_eq!(c["caught_up"], true);
    // And a new snapshot provisions more replicas from the staged one (fleet).
    let r3 = replica(4).await;
    let j = replseed_ok(
        &[
            "provision",
            "--source",
            &m.url(),
            "--target",
            &r3.url(),
            "--stage",
            &stage,
            "--snapshot",
            snap,
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(j["ok"], true);
    assert!(j["extract"].is_null());
    let goal = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    assert_eq!(
        scalar(&r3, &format!("SELECT MASTER_GTID_WAIT('{goal}', 30)")).await,
        "0"
    );
    assert_identical(&m, &r3, &["shop", "fx", "we`ird db;"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_differences() {
    let m = shop_master().await;
    let t = replica(2).await;
    let (_dir, stage) = local_stage();
    let args = provision_args(&m, &t, &stage, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    replseed_ok(&args, &[]).await;
    // Drift the replica behind replication's back.
    exec(&t, "SET SESSION sql_log_bin=0; UPDATE shop.customers SET name='drift' WHERE id=3; DROP VIEW shop.big_orders; CREATE TABLE shop.stray (id INT)").await;
    let out = replseed(&verify_args(&m.url(), &t.url()), &[]).await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "table `shop`.`customers`: same row count (500) but the contents differ",
        "view `shop`.`big_orders` is missing",
        "table `shop`.`stray` exists only on the replica",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catchup_reports_a_broken_replication_with_the_replicas_error() {
    let m = shop_master().await;
    let t = replica(2).await;
    let (_dir, stage) = local_stage();
    extract_ok(&m.url(), &stage, "b1", &[]).await;
    load_ok(&stage, "b1", &t.url(), &[]).await;
    // The replica lost a row behind replication's back; the master then updates it.
    exec(
        &t,
        "SET SESSION sql_log_bin=0; DELETE FROM shop.customers WHERE id = 7",
    )
    .await;
    exec(
        &m,
        "UPDATE shop.customers SET name = 'renamed' WHERE id = 7",
    )
    .await;
    let err = replseed_fails(&catchup_args(&stage, "b1", &m.url(), &t.url()), &[], 1).await;
    assert!(
        err.contains("replication stopped: SQL thread error 1032"),
        "{err}"
    );
    assert!(err.contains("fix the cause on the replica"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_user_without_the_needed_privileges_is_refused_before_any_change() {
    let m = shop_master().await;
    let (_dir, stage) = local_stage();
    extract_ok(&m.url(), &stage, "v1", &[]).await;
    let t = replica(2).await;
    exec(
        &t,
        "CREATE USER 'loader'@'%' IDENTIFIED BY 'pw'; GRANT ALL ON shop.* TO 'loader'@'%'",
    )
    .await;
    let url = format!("mysql://loader:pw@127.0.0.1:{}", t.port);
    let err = replseed_fails(
        &[
            "load",
            "--stage",
            &stage,
            "--snapshot",
            "v1",
            "--target",
            &url,
        ],
        &[],
        1,
    )
    .await;
    assert!(
        err.contains("sql_log_bin=0") && err.contains("SUPER or BINLOG ADMIN"),
        "{err}"
    );
    assert_eq!(scalar(&t, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ('shop','replseed')").await, "0");
    // local_infile off is named too.
    exec(&t, "SET GLOBAL local_infile=0").await;
    let err = replseed_fails(
        &[
            "load",
            "--stage",
            &stage,
            "--snapshot",
            "v1",
            "--target",
            &t.url(),
        ],
        &[],
        1,
    )
    .await;
    assert!(err.contains("local_infile is OFF"), "{err}");
}

/// The chunks of an AUTO_INCREMENT table load one at a time on a target
/// with `innodb_autoinc_lock_mode=1` (MariaDB's default), where each
/// `LOAD DATA` holds the table's AUTO-INC lock to its end: four parallel
/// chunks used to queue there and fail with ERROR 1205 under a short lock
/// wait timeout (then load again). Another table's chunks go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_of_an_auto_increment_table_do_not_queue_on_its_lock() {
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE ai; USE ai; \
         CREATE TABLE t (id BIGINT AUTO_INCREMENT PRIMARY KEY, k INT, c CHAR(120), pad CHAR(60), KEY k (k)); \
         INSERT INTO t (k, c, pad) SELECT seq % 1000, REPEAT(CHAR(65 + seq % 26), 120), REPEAT('p', 60) FROM seq_1_to_320000; \
         CREATE TABLE plain (id INT PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO plain SELECT seq, CONCAT('v', seq) FROM seq_1_to_200000;",
    )
    .await;
    let (_dir, stage) = local_stage();
    extract_ok(&m.url(), &stage, "ai1", &["--chunk-rows", "80000"]).await;
    let t = MariaDb::start_with(MariaDbOptions {
        server_id: 2,
        durable: true,
        extra_args: vec!["--innodb-lock-wait-timeout=1".into()],
        ..Default::default()
    })
    .await
    .expect("start target");
    assert_eq!(scalar(&t, "SELECT @@innodb_autoinc_lock_mode").await, "1");
    let out = replseed(
        &[
            "load",
            "--stage",
            &stage,
            "--snapshot",
            "ai1",
            "--target",
            &t.url(),
            "--threads",
            "4",
        ],
        &[],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the load failed:\n{stderr}");
    assert!(
        !stderr.contains("1205"),
        "chunks queued on the AUTO-INC lock:\n{stderr}"
    );
    assert_identical(&m, &t, &["ai"]).await;
}
