//! Memory stays flat: a `provision` at 4 threads, default chunk sizes, of a
//! table of 1.2M sysbench-like rows (240 MB of LOAD DATA text) and a table
//! of 512 KiB blobs peaks under 256 MiB of RSS (issue 11's bound), and the
//! replica ends identical and replicating. Before the loader sized its
//! Parquet batches by bytes, the blobs took it to 523 MiB.

use crate::common::*;

/// Runs replseed to its end, sampling its peak RSS (`VmHWM`, which only
/// grows) while it runs. Returns the exit status, stderr and the peak in KiB.
async fn run_sampling_rss(args: &[&str]) -> (std::process::ExitStatus, String, u64) {
    let mut child = spawn_replseed(args, &[]);
    let pid = child.id().expect("pid");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut stdout = child.stdout.take().expect("stdout");
    let drain = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut e, mut o) = (Vec::new(), Vec::new());
        let _ = tokio::join!(stderr.read_to_end(&mut e), stdout.read_to_end(&mut o));
        String::from_utf8_lossy(&e).into_owned()
    });
    let mut peak = 0u64;
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kib) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    (status, drain.await.expect("stderr"), peak)
}

#[tokio::test(flavor = "multi_thread")]
async fn provision_at_four_threads_stays_under_256_mib() {
    let m = MariaDb::start_with(MariaDbOptions {
        server_id: 1,
        buffer_pool_mb: 512,
        ..Default::default()
    })
    .await
    .expect("start master");
    exec(
        &m,
        "CREATE DATABASE big; USE big; \
         CREATE TABLE sb (id INT AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL, pad CHAR(60) NOT NULL, KEY k (k)); \
         INSERT INTO sb (k, c, pad) SELECT seq * 7919 % 1000003, \
           CONCAT(LPAD(seq, 11, '0'), '-', REPEAT(CHAR(48 + seq % 10), 107)), REPEAT(CHAR(97 + seq % 26), 59) \
           FROM seq_1_to_1200000; \
         CREATE TABLE blobs (id INT PRIMARY KEY, b MEDIUMBLOB); \
         INSERT INTO blobs SELECT seq, REPEAT(CONCAT(CHAR(seq % 256), 'blob\\t\\n'), 87381) FROM seq_1_to_200;",
    )
    .await;
    let t = MariaDb::start_with(MariaDbOptions {
        server_id: 2,
        buffer_pool_mb: 512,
        durable: true,
        ..Default::default()
    })
    .await
    .expect("start target");
    let (_dir, stage) = local_stage();
    let args = provision_args(&m, &t, &stage, &["--threads", "4"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, stderr, peak_kib) = run_sampling_rss(&args).await;
    assert!(status.success(), "provision failed ({status:?}):\n{stderr}");
    eprintln!("provision peak RSS: {} MiB", peak_kib >> 10);
    assert!(
        peak_kib > 10 << 10,
        "the RSS samples missed the run: {peak_kib} KiB"
    );
    assert!(
        peak_kib < 256 << 10,
        "provision peaked at {} MiB of RSS (bound: 256 MiB)",
        peak_kib >> 10
    );
    assert_identical(&m, &t, &["big"]).await;
    still_replicating(
        &m,
        &t,
        "INSERT INTO big.sb (k, c, pad) VALUES (1, 'after', 'x')",
    )
    .await;
}
