//! Bad input gets one clear line naming the thing and what to do, a
//! non-zero exit, and nothing published.

use crate::common::*;

fn assert_nothing_published(dir: &std::path::Path) {
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
    assert!(left.is_empty(), "the failed extract left {left:?}");
}

fn error_line(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_problems_are_named() {
    let m = master().await;
    exec(&m, "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY); INSERT INTO d.t VALUES (1); \
              CREATE USER 'weak'@'%' IDENTIFIED BY 'pw'; GRANT SELECT ON *.* TO 'weak'@'%'; \
              CREATE USER 'noread'@'%' IDENTIFIED BY 'pw'; GRANT RELOAD, BINLOG MONITOR ON *.* TO 'noread'@'%'; \
              CREATE USER 'good'@'%' IDENTIFIED BY 'right'; GRANT SELECT, RELOAD, BINLOG MONITOR, SHOW VIEW, TRIGGER, EVENT ON *.* TO 'good'@'%';")
        .await;
    let (dir, stage) = local_stage();

    // Nothing listens there.
    let port = replseed_testkit::free_port();
    let err = extract_fails(&format!("mysql://root@127.0.0.1:{port}"), &stage, &[]).await;
    let line = error_line(&err);
    assert!(
        line.contains(&format!("source 127.0.0.1:{port}"))
            && line.contains("check that the server is running"),
        "{err}"
    );

    // Wrong password.
    let err = extract_fails(
        &format!("mysql://good:wrong@127.0.0.1:{}", m.port),
        &stage,
        &[],
    )
    .await;
    let line = error_line(&err);
    assert!(
        line.contains("Access denied") && line.contains("check the user and password"),
        "{err}"
    );

    // No RELOAD: BACKUP STAGE is refused.
    let err = extract_fails(
        &format!("mysql://weak:pw@127.0.0.1:{}", m.port),
        &stage,
        &[],
    )
    .await;
    assert!(error_line(&err).contains("GRANT RELOAD ON *.*"), "{err}");

    // No SELECT on the data.
    let err = extract_fails(
        &format!("mysql://noread:pw@127.0.0.1:{}", m.port),
        &stage,
        &[],
    )
    .await;
    let line = error_line(&err);
    assert!(
        line.contains("denied") || line.contains("privilege"),
        "{err}"
    );
    assert_nothing_published(dir.path());

    // The documented minimal grants are enough.
    extract_ok(
        &format!("mysql://good:right@127.0.0.1:{}", m.port),
        &stage,
        "ok",
        &[],
    )
    .await;

    // Statement-based binlog.
    exec(&m, "SET GLOBAL binlog_format='STATEMENT'").await;
    let dir2 = tempfile::tempdir().unwrap();
    let err = extract_fails(&m.url(), &file_stage(dir2.path()), &[]).await;
    assert!(
        error_line(&err).contains("binlog_format is STATEMENT"),
        "{err}"
    );
    assert_nothing_published(dir2.path());
    exec(&m, "SET GLOBAL binlog_format='ROW'").await;

    // A bad URL: a bad command line (exit 2).
    let bad_url = |source: &str, stage: &str| {
        let args = ["extract", "--source", source, "--stage", stage].map(String::from);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            replseed_fails(&args, &[], 2).await
        }
    };
    let err = bad_url("postgres://x", &stage).await;
    assert!(
        error_line(&err).contains("mysql://user:password@host:port"),
        "{err}"
    );
    let err = bad_url(&m.url(), "ftp://x/y").await;
    assert!(error_line(&err).contains("invalid stage URL"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_log_off_is_refused() {
    let m = MariaDb::start_with(MariaDbOptions {
        log_bin: false,
        ..Default::default()
    })
    .await
    .unwrap();
    exec(
        &m,
        "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let err = extract_fails(&m.url(), &file_stage(dir.path()), &[]).await;
    let line = error_line(&err);
    assert!(
        line.contains(&format!("source 127.0.0.1:{}", m.port))
            && line.contains("the binary log is off"),
        "{err}"
    );
    assert_nothing_published(dir.path());
}
