//! One worker's failure stops the others: extract and load end promptly
//! with the first error, instead of copying until their queue is empty.

use std::time::{Duration, Instant};

use crate::common::*;

async fn big_master() -> MariaDb {
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE big; USE big; \
         CREATE TABLE t (id INT PRIMARY KEY, k INT, c CHAR(60), KEY kk (k)); \
         INSERT INTO t SELECT seq, seq % 1000, REPEAT(CHAR(65 + seq % 26), 60) FROM seq_1_to_1200000;",
    )
    .await;
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_load_worker_stops_the_others() {
    let m = big_master().await;
    let (dir, stage) = local_stage();
    extract_ok(&m.url(), &stage, "w1", &["--chunk-rows", "20000"]).await;
    let show = replseed_ok(
        &["snapshots", "show", "w1", "--stage", &stage, "--json"],
        &[],
    )
    .await;
    let chunks = show["tables"][0]["chunks"].as_array().unwrap();
    assert!(chunks.len() >= 50, "{} chunks", chunks.len());
    // The first chunk in the load order (the table's first) is corrupt: its
    // worker fails at once, before the other worker's first chunk is in.
    let victim = chunks[0]["path"].as_str().unwrap().to_string();
    let file = dir.path().join(&victim);
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();

    let t = replica(2).await;
    let err = load_fails(&stage, "w1", &t.url(), &["--threads", "2"]).await;
    assert!(err.contains(&victim), "the corrupt chunk is named: {err}");
    let loaded: u64 = scalar(&t, "SELECT COUNT(*) FROM replseed.load_chunks")
        .await
        .parse()
        .unwrap();
    // Without cancellation the other worker would load all the remaining chunks.
    assert!(
        loaded <= 3,
        "{loaded} of {} chunks loaded after the first worker failed",
        chunks.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_extract_worker_stops_the_others() {
    let m = big_master().await;
    let (_dir, stage) = local_stage();
    let args = |id: &str| {
        vec![
            "extract".to_string(),
            "--source".into(),
            m.url(),
            "--stage".into(),
            stage.clone(),
            "--snapshot".into(),
            id.into(),
            "--threads".into(),
            "2".into(),
            "--chunk-rows".into(),
            "50000".into(),
        ]
    };
    // How long the whole copy takes here.
    let t0 = Instant::now();
    let a = args("full");
    replseed_ok(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await;
    let full = t0.elapsed();

    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_replseed"))
        .args(args("cut"))
        .env("REPLSEED_NO_PROGRESS", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill one worker's connection as soon as it is reading the table.
    let mut c = m.conn().await.unwrap();
    let victim = loop {
        let r = query(
            &mut c,
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT %FROM `big`.`t`%' AND ID <> CONNECTION_ID() LIMIT 1",
        )
        .await;
        if let Some(row) = r.first() {
            break text(&row[0]);
        }
        assert!(
            t0.elapsed() < full * 4 + Duration::from_secs(60),
            "no worker seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed = Instant::now();
    // KILL QUERY: a failure the extract does not retry (a cut connection
    // would start the cut again, see faults.rs).
    query(&mut c, &format!("KILL QUERY {victim}")).await;
    let out = child.wait_with_output().await.unwrap();
    let after_kill = killed.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("big.t"), "the table is named: {stderr}");
    assert!(
        after_kill < full / 2,
        "the extract went on for {after_kill:?} after a worker failed (a whole extract takes {full:?})"
    );
    let list = replseed_ok(&["snapshots", "list", "--stage", &stage, "--json"], &[]).await;
    assert!(
        !list.to_string().contains("\"cut\""),
        "nothing published: {list}"
    );
}
