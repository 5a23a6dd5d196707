//! Bad days: connections cut, servers restarted in the middle of a run.
//! Each test puts a fault-injecting proxy (`replseed_testkit::FaultProxy`)
//! in front of a real server, or restarts one, at a chosen point, and
//! checks that the command either ends by itself with an identical copy, or
//! fails with one clear line and nothing published, and then succeeds when
//! run again. Durable targets and default chunk sizes and threads, as users
//! run them.

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

/// The URL of a server behind a proxy: TCP to the proxy (a local URL would
/// otherwise be switched to the server's Unix socket, around the proxy).
fn via(proxy: &FaultProxy) -> String {
    format!(
        "mysql://root@127.0.0.1:{}?prefer_socket=false",
        proxy.port()
    )
}

fn local(db: &MariaDb) -> std::net::SocketAddr {
    format!("127.0.0.1:{}", db.port).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_survives_every_target_connection_cut() {
    let m = master_with_data().await;
    let (_dir, stage) = local_stage();
    extract_ok(&m.url(), &stage, "cut1", &[]).await;
    let t = durable_target(2, &["--innodb-lock-wait-timeout=10"]).await;
    let proxy = FaultProxy::start(local(&t)).await.unwrap();
    let url = via(&proxy);
    let mut child = spawn_replseed(
        &[
            "load",
            "--stage",
            &stage,
            "--snapshot",
            "cut1",
            "--target",
            &url,
        ],
        &[],
    );
    // Twice in the middle of the chunks: every session of the load is reset.
    fault_point(&proxy, 24 << 20, &mut child).await;
    let first = proxy.cut();
    fault_point(&proxy, 24 << 20, &mut child).await;
    let second = proxy.cut();
    let (ok, stderr) = finished(child).await;
    assert!(ok, "the load did not survive the cuts:\n{stderr}");
    assert!(
        first >= 2 && second >= 2,
        "too few sessions were open at the cuts ({first}, {second})"
    );
    assert!(
        stderr.contains("again in") || stderr.contains("resumes in"),
        "no retry was logged:\n{stderr}"
    );
    assert_identical(&m, &t, DBS).await;
    // Exactly once: one progress row per staged chunk, no more.
    let staged = replseed_ok(
        &["snapshots", "show", "cut1", "--stage", &stage, "--json"],
        &[],
    )
    .await["totals"]["chunks"]
        .as_u64()
        .unwrap();
    let recorded: u64 = scalar(
        &t,
        "SELECT COUNT(*) FROM replseed.load_chunks WHERE snapshot='cut1'",
    )
    .await
    .parse()
    .unwrap();
    assert_eq!(recorded, staged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extract_to_disk_takes_the_cut_again_after_every_source_connection_cut() {
    let m = master_with_data().await;
    let (dir, stage) = local_stage();
    let proxy = FaultProxy::start(local(&m)).await.unwrap();
    let url = via(&proxy);
    let mut child = spawn_replseed(
        &[
            "extract",
            "--source",
            &url,
            "--stage",
            &stage,
            "--snapshot",
            "mcut",
        ],
        &[],
    );
    // In the middle of the rows: the workers' snapshots are gone.
    fault_point(&proxy, 40 << 20, &mut child).await;
    let cut = proxy.cut();
    let (ok, stderr) = finished(child).await;
    assert!(ok, "the extract did not survive the cut:\n{stderr}");
    assert!(cut >= 2, "too few sessions were open at the cut ({cut})");
    assert!(
        stderr.contains("starts again"),
        "no new cut was logged:\n{stderr}"
    );
    // One snapshot, whole, with no chunk of the lost cut left beside it.
    replseed_ok(&["snapshots", "verify", "mcut", "--stage", &stage], &[]).await;
    let shown = replseed_ok(
        &["snapshots", "show", "mcut", "--stage", &stage, "--json"],
        &[],
    )
    .await;
    let staged = shown["totals"]["chunks"].as_u64().unwrap();
    let files = walk(dir.path())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count() as u64;
    assert_eq!(files, staged, "chunk files beside the manifest's");
    let t = durable_target(2, &[]).await;
    load_ok(&stage, "mcut", &t.url(), &[]).await;
    assert_identical(&m, &t, DBS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extract_survives_a_source_restart() {
    let mut m = master_with_data().await;
    let (_dir, stage) = local_stage();
    let proxy = FaultProxy::start(local(&m)).await.unwrap();
    let url = via(&proxy);
    let mut child = spawn_replseed(
        &[
            "extract",
            "--source",
            &url,
            "--stage",
            &stage,
            "--snapshot",
            "mrestart",
        ],
        &[],
    );
    fault_point(&proxy, 40 << 20, &mut child).await;
    m.restart(Duration::from_secs(2)).await.unwrap();
    let (ok, stderr) = finished(child).await;
    assert!(ok, "the extract did not survive the restart:\n{stderr}");
    assert!(
        stderr.contains("starts again"),
        "no new cut was logged:\n{stderr}"
    );
    replseed_ok(&["snapshots", "verify", "mrestart", "--stage", &stage], &[]).await;
    let t = durable_target(2, &[]).await;
    load_ok(&stage, "mrestart", &t.url(), &[]).await;
    assert_identical(&m, &t, DBS).await;
    // The snapshot's position is the restarted master's: catch-up works.
    exec(&m, "INSERT INTO f.big VALUES (2000001, 1, 'after')").await;
    replseed_ok(&catchup_args(&stage, "mrestart", &m.url(), &t.url()), &[]).await;
    assert_identical(&m, &t, DBS).await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catchup_survives_every_target_connection_cut() {
    let m = master_with_data().await;
    let (_dir, stage) = local_stage();
    extract_ok(&m.url(), &stage, "cc1", &[]).await;
    let t = durable_target(2, &[]).await;
    load_ok(&stage, "cc1", &t.url(), &[]).await;
    // A backlog the replica takes a while to apply.
    for i in 0..4 {
        exec(
            &m,
            &format!("UPDATE f.big SET k = k + 1 WHERE id % 4 = {i}"),
        )
        .await;
    }
    let proxy = FaultProxy::start(local(&t)).await.unwrap();
    let url = via(&proxy);
    let mut child = spawn_replseed(&catchup_args(&stage, "cc1", &m.url(), &url), &[]);
    // Replication is configured and the wait has begun: cut, twice.
    fault_point(&proxy, 4 << 10, &mut child).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    fault_point(&proxy, 4 << 10, &mut child).await;
    proxy.cut();
    let (ok, stderr) = finished(child).await;
    assert!(ok, "the catch-up did not survive the cuts:\n{stderr}");
    assert!(
        stderr.contains("goes on in"),
        "no retry was logged:\n{stderr}"
    );
    still_replicating(&m, &t, "INSERT INTO f.big VALUES (3000001, 1, 'after')").await;
    assert_identical(&m, &t, DBS).await;
}

/// A tmpfs of `mib` MiB mounted on a new directory (the tests run as root,
/// as CI does); unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(mib: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "mounting a {mib} MiB tmpfs needs root (CI runs the tests as root)"
        );
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_directory_stops_the_load_in_one_line_and_it_resumes() {
    let m = master_with_data().await;
    let s3 = S3Server::start(None, 0).await.unwrap();
    s3.create_bucket("spool").unwrap();
    let stage = "s3://spool/nightly";
    replseed_ok(
        &[
            "extract",
            "--source",
            &m.url(),
            "--stage",
            stage,
            "--snapshot",
            "sp1",
        ],
        &s3.env(),
    )
    .await;
    let t = durable_target(2, &[]).await;
    let disk = SmallDisk::mount(2);
    let spool = disk.0.path().display().to_string();
    let load = |spool: Option<String>| {
        let mut args = vec![
            "load".to_string(),
            "--stage".into(),
            stage.into(),
            "--snapshot".into(),
            "sp1".into(),
            "--target".into(),
            t.url(),
        ];
        if let Some(s) = spool {
            args.extend(["--spool-dir".to_string(), s]);
        }
        args
    };
    let args = load(Some(spool.clone()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = replseed_fails(&args, &s3.env(), 1).await;
    assert!(
        err.contains(&format!("the spool directory {spool} is full")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // Nothing of it stays in the spool directory.
    assert_eq!(std::fs::read_dir(disk.0.path()).unwrap().count(), 0);
    drop(disk);
    let args = load(None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    replseed_ok(&args, &s3.env()).await;
    assert_identical(&m, &t, DBS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provision_survives_every_target_connection_cut() {
    let m = master_with_data().await;
    let (_dir, stage) = local_stage();
    let t = durable_target(2, &["--innodb-lock-wait-timeout=10"]).await;
    let proxy = FaultProxy::start(local(&t)).await.unwrap();
    let url = via(&proxy);
    let mut child = spawn_replseed(
        &[
            "provision",
            "--source",
            &m.url(),
            "--target",
            &url,
            "--stage",
            &stage,
        ],
        &[],
    );
    fault_point(&proxy, 24 << 20, &mut child).await;
    proxy.cut();
    fault_point(&proxy, 8 << 20, &mut child).await;
    proxy.cut();
    let (ok, stderr) = finished(child).await;
    assert!(ok, "the provision did not survive the cuts:\n{stderr}");
    still_replicating(&m, &t, "INSERT INTO f.big VALUES (3000002, 1, 'after')").await;
    assert_identical(&m, &t, DBS).await;
}
