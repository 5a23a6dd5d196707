//! The same pipeline through a real S3 endpoint (s3s-fs in-process, with
//! SigV4; or the endpoint in REPLSEED_TEST_S3_ENDPOINT).

use crate::common::*;

fn bucket_name() -> String {
    std::env::var("REPLSEED_TEST_S3_BUCKET").unwrap_or_else(|_| "snapshots".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_types_round_trip_through_s3() {
    let s3 = S3Server::start(None, 0).await.unwrap();
    let bucket = bucket_name();
    s3.create_bucket(&bucket).unwrap();
    let env = s3.env();
    let prefix = format!("rt-{}", std::process::id());
    let stage = format!("s3://{bucket}/{prefix}");

    let master = master().await;
    load_fixture(&master).await;
    let replica = replica(2).await;
    let ex = replseed_ok(
        &[
            "extract",
            "--source",
            &master.url(),
            "--stage",
            &stage,
            "--snapshot",
            "s3snap",
            "--chunk-rows",
            "5000",
            "--json",
        ],
        &env,
    )
    .await;
    assert!(ex["rows"].as_u64().unwrap() > 12_000);

    assert_eq!(snapshot_ids(&stage, &env).await, ["s3snap"]);
    let show = replseed_ok(
        &["snapshots", "show", "s3snap", "--stage", &stage, "--json"],
        &env,
    )
    .await;
    let first_chunk = show["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "big")
        .unwrap()["chunks"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        first_chunk.starts_with("s3snap/data/fx/big/"),
        "{first_chunk}"
    );
    replseed_ok(&["snapshots", "verify", "s3snap", "--stage", &stage], &env).await;

    replseed_ok(
        &[
            "load",
            "--stage",
            &stage,
            "--snapshot",
            "latest",
            "--target",
            &replica.url(),
        ],
        &env,
    )
    .await;
    assert_identical(&master, &replica, FIXTURE_DBS).await;

    // A corrupted object is named by verify (in-process server only: we can reach its files).
    if let Some(root) = &s3.root {
        let file = root.join(&bucket).join(&prefix).join(&first_chunk);
        let mut bytes = std::fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xFF;
        std::fs::write(&file, &bytes).unwrap();
        // The report (the bad chunk's line) is on stdout, the error on stderr.
        let out = replseed(&["snapshots", "verify", "s3snap", "--stage", &stage], &env).await;
        assert_eq!(out.status.code(), Some(4));
        let err = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            err.contains(&first_chunk),
            "verify did not name the chunk:\n{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_or_unauthorized_bucket_fails_before_touching_the_master() {
    let master = master().await;
    exec(
        &master,
        "CREATE DATABASE a; CREATE TABLE a.t (id INT PRIMARY KEY)",
    )
    .await;
    let before = scalar(&master, "SELECT @@gtid_binlog_pos").await;

    // Nothing listens on this port.
    let port = replseed_testkit::free_port();
    let env = vec![
        (
            "AWS_ENDPOINT_URL".to_string(),
            format!("http://127.0.0.1:{port}"),
        ),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
        ("AWS_ACCESS_KEY_ID".into(), "x".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "y".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
    ];
    let err = replseed_fails(
        &[
            "extract",
            "--source",
            &master.url(),
            "--stage",
            "s3://nobucket/p",
        ],
        &env,
        1,
    )
    .await;
    assert!(
        err.contains("cannot access stage `s3://nobucket/p`"),
        "{err}"
    );

    // A real server, wrong secret.
    let s3 = S3Server::start(None, 0).await.unwrap();
    s3.create_bucket("b").unwrap();
    if s3.root.is_some() {
        let mut env = s3.env();
        env.retain(|(k, _)| k != "AWS_SECRET_ACCESS_KEY");
        env.push(("AWS_SECRET_ACCESS_KEY".into(), "wrong".into()));
        let err = replseed_fails(
            &["extract", "--source", &master.url(), "--stage", "s3://b/p"],
            &env,
            1,
        )
        .await;
        assert!(err.contains("cannot access stage"), "{err}");
        // Missing bucket.
        let err = replseed_fails(
            &[
                "extract",
                "--source",
                &master.url(),
                "--stage",
                "s3://missing/p",
            ],
            &s3.env(),
            1,
        )
        .await;
        assert!(
            err.contains("cannot access stage `s3://missing/p`"),
            "{err}"
        );
    }
    assert_eq!(scalar(&master, "SELECT @@gtid_binlog_pos").await, before);
}

/// Files of in-flight multipart uploads in an s3s-fs root.
fn open_uploads(root: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upload"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_s3_extract_leaves_no_multipart_upload_behind() {
    let root = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(Some(root.path().to_path_buf()), 0)
        .await
        .unwrap();
    let bucket = bucket_name();
    s3.create_bucket(&bucket).unwrap();
    let m = master().await;
    // Incompressible rows, so that chunks outgrow the 8 MiB upload buffer
    // and go up as multipart uploads.
    exec(
        &m,
        "CREATE DATABASE mp; USE mp; CREATE TABLE t (id INT PRIMARY KEY, b VARBINARY(2000)); \
         INSERT INTO t SELECT seq, RANDOM_BYTES(1024) FROM seq_1_to_150000;",
    )
    .await;
    let stage = format!("s3://{bucket}/mp");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_replseed"));
    cmd.args([
        "extract",
        "--source",
        &m.url(),
        "--stage",
        &stage,
        "--snapshot",
        "cut",
        "--threads",
        "2",
        "--chunk-mb",
        "64",
    ])
    .env("REPLSEED_NO_PROGRESS", "1")
    .stderr(std::process::Stdio::piped());
    for (k, v) in s3.env() {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let mut seen = false;
    for _ in 0..1500 {
        if !open_uploads(root.path()).is_empty() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(seen, "no multipart upload started");
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted; nothing was published"), "{err}");
    assert_eq!(
        open_uploads(root.path()),
        Vec::<String>::new(),
        "multipart uploads left behind"
    );
    let published = snapshot_ids(&stage, &s3.env()).await;
    assert!(published.is_empty(), "published: {published:?}");
}
