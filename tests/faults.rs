//! Bad days: connections cut, servers restarted in the middle of a run.
//! Each test puts a fault-injecting proxy (`replseed_testkit::FaultProxy`)
//! in front of a real server, or restarts one, at a chosen point, and
//! checks that the command either ends by itself with an identical copy, or
//! fails with one clear line and nothing published, and then succeeds when
//! run again. Durable targets and default chunk sizes and threads, as users
//! run them.

use std::process::Stdio;
use std::time::{Duration, Instant};

use replseed_testkit::FaultProxy;

use crate::common::*;

const DBS: &[&str] = &["f"];

/// A master with tables in several shapes: one of three chunks at the
/// default chunk size, one without a key, one with a composite key, and a
/// MyISAM table (which cannot roll back a half-loaded chunk).
async fn master_with_data() -> MariaDb {
    let m = MariaDb::start_with(MariaDbOptions {
        server_id: 1,
        durable: true,
        ..Default::default()
    })
    .await
    .expect("start master");
    exec(
        &m,
        "CREATE DATABASE f; USE f; \
         CREATE TABLE big (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(60) NOT NULL, KEY kk (k)); \
         INSERT INTO big SELECT seq, seq % 977, LEFT(SHA2(seq, 256), 60) FROM seq_1_to_1200000; \
         CREATE TABLE nokey (a INT, b VARCHAR(40)); \
         INSERT INTO nokey SELECT seq % 1000, CONCAT('row ', seq) FROM seq_1_to_200000; \
         CREATE TABLE composite (a VARCHAR(20), b INT, v DOUBLE, PRIMARY KEY (a, b)); \
         INSERT INTO composite SELECT CONCAT('k', seq % 500), seq, seq / 7 FROM seq_1_to_200000; \
         CREATE TABLE plain (id INT PRIMARY KEY, v TEXT) ENGINE=MyISAM; \
         INSERT INTO plain SELECT seq, REPEAT('x', seq % 300) FROM seq_1_to_50000;",
    )
    .await;
    m
}

async fn durable_target(server_id: u32, extra: &[&str]) -> MariaDb {
    MariaDb::start_with(MariaDbOptions {
        server_id,
        durable: true,
        buffer_pool_mb: 256,
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await
    .expect("start target")
}

fn spawn_replseed(args: &[&str], env: &[(String, String)]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_replseed"));
    cmd.args(args)
        .env("REPLSEED_NO_PROGRESS", "1")
        .env_remove("REPLSEED_STAGE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn replseed")
}

/// Waits until at least `n` chunks are committed on the target, or panics
/// after two minutes.
async fn wait_for_chunks(t: &MariaDb, n: u64) {
    let start = Instant::now();
    loop {
        // Before the load creates its bookkeeping, the query fails: 0.
        let got: u64 = match t.conn().await {
            Ok(mut c) => {
                use mysql_async::prelude::Queryable;
                c.query_first("SELECT COUNT(*) FROM replseed.load_chunks")
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            }
            Err(_) => 0,
        };
        if got >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no chunk loaded in 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for `n` more bytes through the proxy; if they do not come, fails
/// with what the command printed.
async fn fault_point(proxy: &FaultProxy, n: u64, child: &mut tokio::process::Child) {
    if !proxy.wait_bytes(n, Duration::from_secs(120)).await {
        let _ = child.start_kill();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = e.read_to_string(&mut err).await;
        }
        panic!(
            "{n} bytes did not pass the proxy ({} in all):\n{err}",
            proxy.bytes()
        );
    }
}

async fn finished(child: tokio::process::Child) -> (bool, String) {
    let out = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
        .await
        .expect("replseed ends within 10 minutes")
        .expect("replseed output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_waits_out_a_target_restart_and_resumes() {
    let m = master_with_data().await;
    let (_dir, stage) = local_stage();
    extract_ok(&m.url(), &stage, "rs1", &[]).await;
    // A short lock wait timeout, as on many replicas: chunks of one table
    // must not queue on each other.
    let mut t = durable_target(2, &["--innodb-lock-wait-timeout=10"]).await;
    let child = spawn_replseed(
        &[
            "load",
            "--stage",
            &stage,
            "--snapshot",
            "rs1",
            "--target",
            &t.url(),
        ],
        &[],
    );
    wait_for_chunks(&t, 1).await;
    // A crash: InnoDB rolls back the chunks in flight when it comes back.
    t.restart(Duration::from_secs(3)).await.unwrap();
    let (ok, stderr) = finished(child).await;
    assert!(ok, "the load did not survive the restart:\n{stderr}");
    assert!(
        stderr.contains("again in") || stderr.contains("resumes in"),
        "no retry was logged:\n{stderr}"
    );
    assert_identical(&m, &t, DBS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extract_to_s3_survives_every_s3_connection_cut() {
    let m = master_with_data().await;
    let s3 = S3Server::start(None, 0).await.unwrap();
    s3.create_bucket("faults").unwrap();
    let endpoint: std::net::SocketAddr = s3
        .env()
        .iter()
        .find(|(k, _)| k == "AWS_ENDPOINT_URL")
        .map(|(_, v)| v.trim_start_matches("http://").parse().unwrap())
        .expect("endpoint");
    let proxy = FaultProxy::start(endpoint).await.unwrap();
    let mut env = s3.env();
    for (k, v) in env.iter_mut() {
        if k == "AWS_ENDPOINT_URL" {
            *v = format!("http://{}", proxy.addr());
        }
    }
    let stage = "s3://faults/nightly";
    let mut child = spawn_replseed(
        &[
            "extract",
            "--source",
            &m.url(),
            "--stage",
            stage,
            "--snapshot",
            "s3cut",
        ],
        &env,
    );
    // Cut in the middle of the uploads, twice.
    fault_point(&proxy, 8 << 20, &mut child).await;
    let first = proxy.cut();
    fault_point(&proxy, 8 << 20, &mut child).await;
    proxy.cut();
    let (ok, stderr) = finished(child).await;
    assert!(ok, "the extract did not survive the cuts:\n{stderr}");
    assert!(first >= 1, "no S3 connection was open at the first cut");
    // The snapshot is whole: verified, and it loads into an identical copy.
    replseed_ok(
        &["snapshots", "verify", "s3cut", "--stage", stage],
        &s3.env(),
    )
    .await;
    let t = durable_target(2, &[]).await;
    replseed_ok(
        &[
            "load",
            "--stage",
            stage,
            "--snapshot",
            "s3cut",
            "--target",
            &t.url(),
        ],
        &s3.env(),
    )
    .await;
    assert_identical(&m, &t, DBS).await;
}
