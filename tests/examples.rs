//! The runnable examples run here, against local sandboxes and a local S3
//! server, exactly as the README tells users to run them.

use std::path::PathBuf;

use crate::common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A master holding the examples' sample shop.
async fn sample_master() -> MariaDb {
    let m = master().await;
    exec(
        &m,
        &std::fs::read_to_string(root().join("examples/sample.sql")).unwrap(),
    )
    .await;
    m
}

fn bins() -> Vec<(String, String)> {
    let rs = PathBuf::from(env!("CARGO_BIN_EXE_replseed"));
    let sb = rs.with_file_name("replseed-sandbox");
    assert!(
        sb.exists(),
        "{} is missing: build it with `cargo build -p replseed-testkit` (ci/test.sh does)",
        sb.display()
    );
    // The scripts call `replseed` and `replseed-sandbox` by path or on PATH.
    let path = format!(
        "{}:{}",
        rs.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    vec![
        ("REPLSEED_BIN".into(), rs.display().to_string()),
        ("REPLSEED_SANDBOX_BIN".into(), sb.display().to_string()),
        ("PATH".into(), path),
        ("REPLSEED_NO_PROGRESS".into(), "1".into()),
    ]
}

async fn run_script(
    script: &str,
    args: &[&str],
    env: &[(String, String)],
) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(root().join("examples").join(script));
    cmd.args(args).current_dir(root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in [
        "REPLSEED_SOURCE",
        "REPLSEED_STAGE",
        "REPLSEED_TARGET",
        "REPLSEED_SNAPSHOT",
        "AWS_ENDPOINT_URL",
    ] {
        if !env.iter().any(|(e, _)| e == k) {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = bins();
    env.push((
        "SANDBOX_DIR".into(),
        dir.path().join("sb").display().to_string(),
    ));
    env.push((
        "MASTER_PORT".into(),
        replseed_testkit::free_port().to_string(),
    ));
    env.push((
        "REPLICA_PORT".into(),
        replseed_testkit::free_port().to_string(),
    ));
    let (ok, out, err) = run_script("quickstart.sh", &[], &env).await;
    let (stopped, _, stop_err) = run_script("quickstart.sh", &["--stop"], &env).await;
    assert!(ok, "quickstart failed:\n{err}");
    assert!(stopped, "{stop_err}");
    assert!(err.contains("\"caught_up\":true"), "{err}");
    // verify's report is on stdout.
    assert!(out.contains("\nidentical\n"), "{out}");
    assert!(err.contains("With real servers"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_nightly_and_ci_replica_jobs_against_local_s3() {
    let s3 = S3Server::start(None, 0).await.unwrap();
    s3.create_bucket("snapshots").unwrap();
    let m = sample_master().await;
    let stage = "s3://snapshots/db1".to_string();
    let mut env = bins();
    env.extend(s3.env());
    env.push(("REPLSEED_SOURCE".into(), m.url()));
    env.push(("REPLSEED_STAGE".into(), stage.clone()));
    env.push(("KEEP".into(), "2".into()));
    env.push(("THREADS".into(), "2".into()));

    // Three nights; ids are the UTC time in seconds.
    for night in 0..3 {
        if night > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
        let (ok, out, err) = run_script("cron-nightly.sh", &[], &env).await;
        assert!(ok, "cron run {night} failed:\n{err}");
        let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert!(first["rows"].as_u64().unwrap() > 80_000, "{out}");
    }
    let list = replseed_ok(
        &["snapshots", "list", "--stage", &stage, "--json"],
        &s3.env(),
    )
    .await;
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 2, "{list}");

    // The CI job: a throwaway replica from the latest snapshot, a command run against it.
    let port = replseed_testkit::free_port();
    let mut ci_env = env.clone();
    ci_env.push(("REPLICA_PORT".into(), port.to_string()));
    let marker = tempfile::NamedTempFile::new().unwrap();
    let cmd = format!(
        "mariadb -h127.0.0.1 -P{port} -uroot -N -e 'SELECT COUNT(*) FROM shop.orders' > {}",
        marker.path().display()
    );
    let (ok, out, err) = run_script("ci-replica.sh", &["--", "bash", "-c", &cmd], &ci_env).await;
    assert!(ok, "ci job failed:\n{err}");
    assert!(out.contains("identical"), "{out}");
    assert_eq!(
        std::fs::read_to_string(marker.path()).unwrap().trim(),
        "60000"
    );
    // The replica is gone afterwards.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_minio_example_against_local_s3() {
    let s3 = S3Server::start(None, 0).await.unwrap();
    s3.create_bucket("snapshots").unwrap();
    let m = sample_master().await;
    let r = replica(2).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = bins();
    env.extend(s3.env());
    env.push(("REPLSEED_SOURCE".into(), m.url()));
    env.push(("REPLSEED_TARGET".into(), r.url()));
    env.push(("SANDBOX_DIR".into(), dir.path().display().to_string()));
    let (ok, out, err) = run_script("s3-minio.sh", &[], &env).await;
    assert!(ok, "s3-minio example failed:\n{err}");
    assert!(out.contains("identical"), "{out}");
    assert_identical(&m, &r, &["shop"]).await;
}
