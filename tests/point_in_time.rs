//! Point-in-time copies: `provision --until GTID` and `--until-time T` give
//! a target that equals the master as it was at that point (its checksums
//! taken in the test at that moment), built from the newest snapshot at or
//! before it and the stage's binlog archive, with replication stopped there
//! and not configured to go on; points outside what the stage holds exit 3
//! naming the window; `snapshots list` shows the window.

use std::time::Duration;

use crate::common::*;

async fn slave_status_rows(t: &MariaDb) -> usize {
    use mysql_async::prelude::Queryable;
    let mut c = t.conn().await.unwrap();
    let r: Vec<mysql_async::Row> = c.query("SHOW SLAVE STATUS").await.unwrap();
    r.len()
}

/// `provision --until...` out of the stage's window: exit 3, naming it.
async fn out_of_window(
    m: &MariaDb,
    t: &MariaDb,
    stage: &str,
    flag: &str,
    point: &str,
    window: &[&str],
) {
    let args = provision_args(m, t, stage, &[flag, point]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = replseed_fails(&args, &[], 3).await;
    let lines = error_lines(&err);
    assert!(
        lines.iter().any(|l| window.iter().all(|w| l.contains(w))),
        "{flag} {point}: the error names the window {window:?}:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_until_a_gtid_or_a_time_gives_the_master_as_it_was_then() {
    let (_dir, stage) = local_stage();
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE a; USE a; CREATE TABLE a.t (id INT PRIMARY KEY, v INT); \
         INSERT INTO a.t SELECT seq, seq FROM seq_1_to_500;",
    )
    .await;
    let s0 = extract_ok(&m.url(), &stage, "s0", &["--no-accounts", "--json"]).await;
    let g0 = s0["gtid"].as_str().unwrap().to_string();
    exec(
        &m,
        "USE a; INSERT INTO a.t SELECT seq, seq FROM seq_501_to_600",
    )
    .await;
    exec(&m, "UPDATE a.t SET v = v + 1 WHERE id < 100").await;
    // Checkpoint 1: a GTID.
    let at_gtid = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    let fp_gtid = fingerprint(&m, &["a"]).await;
    exec(&m, "UPDATE a.t SET v = v * 2 WHERE id > 300").await;
    exec(&m, "FLUSH BINARY LOGS").await;
    // A newer snapshot, after checkpoint 1 and before checkpoint 2.
    extract_ok(&m.url(), &stage, "s1", &["--no-accounts", "--json"]).await;
    exec(&m, "INSERT INTO a.t VALUES (1000, 1), (1001, 2)").await;
    // Checkpoint 2: a time between two writes, a second apart from each.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fp_time = fingerprint(&m, &["a"]).await;
    let at_time = scalar(&m, "SELECT UTC_TIMESTAMP()").await;
    let gtid_time = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The bad DELETE, and more.
    exec(&m, "DELETE FROM a.t WHERE id > 50").await;
    exec(&m, "INSERT INTO a.t VALUES (5000, 5)").await;
    archive_now(&m, &stage).await;
    let head = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    assert!(d0(&g0) < d0(&at_gtid) && d0(&at_gtid) < d0(&gtid_time) && d0(&gtid_time) < d0(&head));

    // The window `snapshots list` shows: from the oldest snapshot to the archive's head.
    let l = replseed_ok(&["snapshots", "list", "--stage", &stage, "--json"], &[]).await;
    let w = &l["window"];
    assert_eq!(w["from_snapshot"], "s0", "{l}");
    assert_eq!(w["from_gtid"].as_str().unwrap(), g0, "{l}");
    assert_eq!(w["to_gtid"].as_str().unwrap(), head, "{l}");
    assert!(
        w["to_time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{l}"
    );
    let text = replseed(&["snapshots", "list", "--stage", &stage], &[]).await;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.lines().any(|l| l.starts_with("point-in-time window:")
            && l.contains(&g0)
            && l.contains(&head)),
        "{text}"
    );

    // Outside the window: exit 3 naming it, and nothing is done to the target.
    let t2 = replica(3).await;
    let before = format!("0-1-{}", d0(&g0) - 1);
    let after = format!("0-1-{}", d0(&head) + 5);
    out_of_window(&m, &t2, &stage, "--until", &before, &[&g0, &head]).await;
    out_of_window(&m, &t2, &stage, "--until", &after, &[&g0, &head]).await;
    out_of_window(
        &m,
        &t2,
        &stage,
        "--until-time",
        "2001-01-01 00:00:00",
        &[&g0, &head],
    )
    .await;
    out_of_window(
        &m,
        &t2,
        &stage,
        "--until-time",
        "2999-01-01T00:00:00Z",
        &[&g0, &head],
    )
    .await;
    assert_eq!(
        scalar(
            &t2,
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='a'"
        )
        .await,
        "0"
    );

    // At a GTID: from s0 (s1 is after it), stopped exactly there.
    let t1 = replica(2).await;
    let r = provision_ok(&m, &t1, &stage, &["--until", &at_gtid]).await;
    assert_eq!(r["snapshot"], "s0", "{r}");
    assert_eq!(fingerprint(&t1, &["a"]).await, fp_gtid);
    assert_eq!(scalar(&t1, "SELECT @@gtid_slave_pos").await, at_gtid);
    // Not pointed at anything: a START SLAVE does not run past the point.
    assert_eq!(slave_status_rows(&t1).await, 0);
    assert_eq!(
        scalar(
            &t1,
            "SELECT status FROM replseed.load_runs WHERE snapshot='s0'"
        )
        .await,
        "until"
    );
    // A later catchup does not silently move it on.
    let (mu, t1u) = (m.url(), t1.url());
    let args = catchup_args(&stage, "s0", &mu, &t1u);
    let err = replseed_fails(&args, &[], 1).await;
    assert!(
        err.contains("point-in-time copy") && err.contains(&at_gtid),
        "{err}"
    );
    assert_eq!(fingerprint(&t1, &["a"]).await, fp_gtid);
    // catchup refuses a snapshot that is after the point.
    let mut args = catchup_args(&stage, "s1", &mu, &t1u);
    args.extend(["--until", at_gtid.as_str()]);
    let err = replseed_fails(&args, &[], 3).await;
    assert!(err.contains("s1") && err.contains(&at_gtid), "{err}");

    // At a time: from s1, the newest snapshot before it.
    let r = provision_ok(&m, &t2, &stage, &["--until-time", &at_time]).await;
    assert_eq!(r["snapshot"], "s1", "{r}");
    assert_eq!(fingerprint(&t2, &["a"]).await, fp_time);
    assert_eq!(scalar(&t2, "SELECT @@gtid_slave_pos").await, gtid_time);
    assert_eq!(slave_status_rows(&t2).await, 0);
}
