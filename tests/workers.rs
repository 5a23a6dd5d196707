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

/// Chunk reads of `big.t` the master has started so far (its general log:
/// each job is one execution of the workers' prepared `SELECT`).
async fn chunk_reads(m: &MariaDb) -> u64 {
    scalar(
        m,
        "SELECT COUNT(*) FROM mysql.general_log WHERE command_type = 'Execute' \
         AND argument LIKE 'SELECT `id`, `k`, `c` FROM `big`.`t` WHERE `id` BETWEEN %'",
    )
    .await
    .parse()
    .unwrap()
}

/// The master's sessions reading a chunk of `big.t` right now.
async fn readers(c: &mut mysql_async::Conn) -> Vec<String> {
    query(
        c,
        "SELECT ID FROM information_schema.PROCESSLIST \
         WHERE INFO LIKE 'SELECT `id`, `k`, `c` FROM `big`.`t` WHERE `id` BETWEEN %' AND ID <> CONNECTION_ID()",
    )
    .await
    .iter()
    .map(|r| text(&r[0]))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_extract_worker_stops_the_others() {
    let m = big_master().await;
    exec(
        &m,
        "SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = 1",
    )
    .await;
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
    // How many chunk reads a whole extract makes.
    let a = args("full");
    replseed_ok(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await;
    let jobs = chunk_reads(&m).await;
    assert!(jobs >= 20, "a whole extract read {jobs} chunks");

    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_replseed"))
        .args(args("cut"))
        .env("REPLSEED_NO_PROGRESS", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until both workers are reading at once, so that there is another
    // worker to stop; then kill one worker's query.
    let mut c = m.conn().await.unwrap();
    let t0 = Instant::now();
    let victim = loop {
        let r = readers(&mut c).await;
        if r.len() >= 2 {
            break r[0].clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "never saw the two workers read at once (last: {r:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // KILL QUERY: a failure the extract does not retry (a cut connection
    // would start the cut again, see faults.rs).
    query(&mut c, &format!("KILL QUERY {victim}")).await;
    let at_kill = chunk_reads(&m).await - jobs;
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("big.t"), "the table is named: {stderr}");
    // The other worker started at most the one chunk it may have been
    // between when the first failed; left running it would read the rest.
    let in_all = chunk_reads(&m).await - jobs;
    assert!(
        in_all <= at_kill + 1,
        "{} chunk reads started after a worker failed ({at_kill} before; a whole extract reads {jobs})",
        in_all - at_kill
    );
    assert_eq!(
        snapshot_ids(&stage, &[]).await,
        ["full"],
        "nothing published"
    );
}
