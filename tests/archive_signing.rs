//! A signed binlog archive: with a stage key, every segment manifest is
//! signed and chained to the one before it, so a segment altered, inserted,
//! removed or reordered by someone who can write to the stage is refused by
//! `catchup` (through `serve`) and by `serve` itself, with nothing applied to
//! the replica. A reader given no key for a signed stage refuses unless
//! `--allow-unsigned`.

use std::path::Path;
use std::time::{Duration, Instant};

use replseed_stage::archive::{digest, SegmentManifest};

use crate::common::*;

const KEY: &str = "0123456789abcdef-archive-key";

fn key_env() -> Vec<(String, String)> {
    vec![("REPLSEED_STAGE_KEY".to_string(), KEY.to_string())]
}

fn seg_file(dir: &Path, seq: u64, ext: &str) -> std::path::PathBuf {
    dir.join(format!(".binlog/segments/{seq:012}.{ext}"))
}

fn read_seg(dir: &Path, seq: u64) -> SegmentManifest {
    serde_json::from_slice(&std::fs::read(seg_file(dir, seq, "json")).unwrap()).unwrap()
}

fn write_seg(dir: &Path, m: &SegmentManifest) {
    std::fs::write(
        seg_file(dir, m.seq, "json"),
        serde_json::to_vec_pretty(m).unwrap(),
    )
    .unwrap();
}

/// Copies every file of `from` into `to` (a fresh directory).
fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// What must not change on a replica a tampered archive was refused to.
async fn replica_state(t: &MariaDb) -> (String, String) {
    let mut c = t.conn().await.unwrap();
    let r = query(&mut c, "CHECKSUM TABLE a.t EXTENDED").await;
    c.disconnect().await.ok();
    (scalar(t, "SELECT @@gtid_slave_pos").await, text(&r[0][1]))
}

/// `catchup` through the archive fails with exit 1 naming `key`, and the
/// replica has applied nothing.
async fn catchup_refused(
    stage: &str,
    m: &MariaDb,
    t: &MariaDb,
    key: &str,
    before: &(String, String),
) -> String {
    let err = replseed_fails(
        &catchup_args(stage, "s1", &m.url(), &t.url()),
        &key_env(),
        1,
    )
    .await;
    assert!(err.contains(key), "the refusal does not name {key}: {err}");
    assert_eq!(
        &replica_state(t).await,
        before,
        "the replica changed: {err}"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_signed_archive_is_refused_with_nothing_applied() {
    let (dir, stage) = local_stage();
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE a; USE a; CREATE TABLE a.t (id INT PRIMARY KEY, v INT); \
         INSERT INTO a.t SELECT seq, seq FROM seq_1_to_1000;",
    )
    .await;
    let key = key_env();
    replseed_ok(
        &[
            "extract",
            "--source",
            &m.url(),
            "--stage",
            &stage,
            "--snapshot",
            "s1",
            "--no-accounts",
        ],
        &key,
    )
    .await;
    // One segment per master file: four of them.
    for i in 0..4 {
        exec(
            &m,
            &format!(
                "USE a; INSERT INTO a.t SELECT seq + {}, {i} FROM seq_1_to_200; FLUSH BINARY LOGS;",
                10000 * (i + 1)
            ),
        )
        .await;
    }
    let archive = [
        "archive",
        "--source",
        &m.url(),
        "--stage",
        &stage,
        "--until-current",
        "--json",
    ];
    replseed_ok(&archive, &key).await;
    purge_all(&m).await;
    let segs = archive_segments(dir.path());
    assert!(segs.len() >= 4, "{} segments", segs.len());
    let n = segs.len() as u64;
    for s in &segs {
        assert!(
            s["signature"]
                .as_str()
                .unwrap_or("")
                .starts_with("hmac-sha256:"),
            "segment {} is not signed",
            s["seq"]
        );
    }
    // Archived without the key into a signed archive: refused.
    let err = replseed_fails(&archive, &[], 1).await;
    assert!(err.contains("signed") && err.contains("stage key"), "{err}");

    let t = replica(2).await;
    replseed_ok(
        &[
            "load",
            "--stage",
            &stage,
            "--snapshot",
            "s1",
            "--target",
            &t.url(),
            "--no-accounts",
        ],
        &key,
    )
    .await;
    let before = replica_state(&t).await;
    let segdir = dir.path().join(".binlog/segments");
    let pristine = dir.path().join("pristine");
    copy_dir(&segdir, &pristine);
    let restore = || copy_dir(&pristine, &segdir);

    // 1. Segment 1's data replaced by segment 2's, its manifest's sizes and
    //    hashes updated to match: only the signature catches it.
    {
        std::fs::copy(
            seg_file(dir.path(), 2, "bin.zst"),
            seg_file(dir.path(), 1, "bin.zst"),
        )
        .unwrap();
        let (mut one, two) = (read_seg(dir.path(), 1), read_seg(dir.path(), 2));
        one.bytes_raw = two.bytes_raw;
        one.bytes_stored = two.bytes_stored;
        one.sha256_raw = two.sha256_raw.clone();
        one.sha256_stored = two.sha256_stored.clone();
        write_seg(dir.path(), &one);
        catchup_refused(
            &stage,
            &m,
            &t,
            ".binlog/segments/000000000001.json",
            &before,
        )
        .await;
        let err = replseed_fails(&catchup_args(&stage, "s1", &m.url(), &t.url()), &key, 1).await;
        assert!(err.contains("signature does not match"), "{err}");
        restore();
    }
    // 2. A forged segment appended: numbered, linked and digested as the
    //    archiver would, but its signature is not made with the key.
    {
        let last = read_seg(dir.path(), n);
        let mut forged = read_seg(dir.path(), 2);
        forged.seq = n + 1;
        forged.prev_seq = Some(n);
        forged.prev_end_state = Some(last.end_state.clone());
        forged.start_state = last.end_state.clone();
        forged.prev_digest = Some(digest(&last));
        std::fs::copy(
            seg_file(dir.path(), 2, "bin.zst"),
            seg_file(dir.path(), n + 1, "bin.zst"),
        )
        .unwrap();
        write_seg(dir.path(), &forged);
        catchup_refused(
            &stage,
            &m,
            &t,
            &format!(".binlog/segments/{:012}.json", n + 1),
            &before,
        )
        .await;
        restore();
    }
    // 3. A segment removed from the middle.
    {
        std::fs::remove_file(seg_file(dir.path(), 2, "json")).unwrap();
        std::fs::remove_file(seg_file(dir.path(), 2, "bin.zst")).unwrap();
        catchup_refused(
            &stage,
            &m,
            &t,
            ".binlog/segments/000000000003.json",
            &before,
        )
        .await;
        restore();
    }
    // 4. Two segments swapped (manifests and data).
    {
        for ext in ["json", "bin.zst"] {
            let (a, b) = (seg_file(dir.path(), 2, ext), seg_file(dir.path(), 3, ext));
            let tmp = dir.path().join("swap");
            std::fs::rename(&a, &tmp).unwrap();
            std::fs::rename(&b, &a).unwrap();
            std::fs::rename(&tmp, &b).unwrap();
        }
        catchup_refused(&stage, &m, &t, ".binlog/segments/00000000000", &before).await;
        restore();
    }
    // 5. `serve` refuses it too: the replica's IO thread stops with 1236
    //    naming the segment (here: segment 2 removed).
    {
        std::fs::remove_file(seg_file(dir.path(), 2, "json")).unwrap();
        serve_refuses(&stage, &t, &before, ".binlog/segments/000000000003.json").await;
        restore();
    }
    // 6. Segment 1's data altered, its manifest left as it was: the bytes
    //    fail their SHA-256 as they are read, before any is sent.
    {
        let p = seg_file(dir.path(), 1, "bin.zst");
        let mut b = std::fs::read(&p).unwrap();
        let at = b.len() / 2;
        b[at] ^= 0x55;
        std::fs::write(&p, b).unwrap();
        // The replica is pointed at the snapshot's GTID (where segment 1
        // starts), and nothing past it is applied.
        let at_snapshot = (read_seg(dir.path(), 1).start_state, before.1.clone());
        catchup_refused(
            &stage,
            &m,
            &t,
            ".binlog/segments/000000000001.bin.zst",
            &at_snapshot,
        )
        .await;
        restore();
        // 7. The same in a middle segment: its data is refused before the
        //    genuine segments ahead of it reach the replica (the range is
        //    verified whole before the first event is sent), by catchup and
        //    by serve.
        assert!(n > 3, "segment 3 is not in the middle of {n}");
        let p = seg_file(dir.path(), 3, "bin.zst");
        let mut b = std::fs::read(&p).unwrap();
        let at = b.len() / 2;
        b[at] ^= 0x55;
        std::fs::write(&p, b).unwrap();
        let key3 = ".binlog/segments/000000000003.bin.zst";
        let err = catchup_refused(&stage, &m, &t, key3, &at_snapshot).await;
        assert!(err.contains("SHA-256"), "{err}");
        serve_refuses(&stage, &t, &at_snapshot, key3).await;
        restore();
    }
    // 8. A forged segment inserted in the middle: the later segments moved
    //    up one number, the forgery numbered 3, linked and digested after
    //    segment 2 as the archiver would, with segment 2's data and
    //    signature. The forgery's signature or the moved segments' numbers
    //    give it away, whichever is read first.
    {
        for seq in (3..=n).rev() {
            for ext in ["json", "bin.zst"] {
                std::fs::rename(
                    seg_file(dir.path(), seq, ext),
                    seg_file(dir.path(), seq + 1, ext),
                )
                .unwrap();
            }
        }
        let two = read_seg(dir.path(), 2);
        let mut forged = two.clone();
        forged.seq = 3;
        forged.prev_seq = Some(2);
        forged.prev_end_state = Some(two.end_state.clone());
        forged.start_state = two.end_state.clone();
        forged.prev_digest = Some(digest(&two));
        std::fs::copy(
            seg_file(dir.path(), 2, "bin.zst"),
            seg_file(dir.path(), 3, "bin.zst"),
        )
        .unwrap();
        write_seg(dir.path(), &forged);
        let at_snapshot = (read_seg(dir.path(), 1).start_state, before.1.clone());
        let err = catchup_refused(&stage, &m, &t, ".binlog/segments/", &at_snapshot).await;
        let named =
            (3..=n + 1).any(|seq| err.contains(&format!(".binlog/segments/{seq:012}.json")));
        assert!(
            named,
            "the refusal names none of segments 3 to {}: {err}",
            n + 1
        );
        assert!(
            err.contains("signature does not match") || err.contains("renamed or reordered"),
            "{err}"
        );
        restore();
    }
    // No key for a signed stage: one line saying so.
    let err = replseed_fails(&catchup_args(&stage, "s1", &m.url(), &t.url()), &[], 1).await;
    assert!(
        err.contains("no stage key was given") && err.contains("--allow-unsigned"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(replica_state(&t).await.1, before.1);
    // A wrong key: refused as well.
    let other = vec![(
        "REPLSEED_STAGE_KEY".to_string(),
        "another-key-of-16+chars".to_string(),
    )];
    replseed_fails(&catchup_args(&stage, "s1", &m.url(), &t.url()), &other, 1).await;
    assert_eq!(replica_state(&t).await.1, before.1);
    // --allow-unsigned: it goes on, unverified, and says so.
    let (mu, tu) = (m.url(), t.url());
    let mut args = catchup_args(&stage, "s1", &mu, &tu);
    args.push("--allow-unsigned");
    let out = replseed(&args, &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("UNVERIFIED"), "no warning: {stderr}");
    assert!(
        stderr.contains("replicating from the binlog archive"),
        "{stderr}"
    );
    still_replicating(&m, &t, "INSERT INTO a.t VALUES (999999, 1)").await;
    assert_identical(&m, &t, &["a"]).await;

    // A tampered chunk on a file:// stage is refused by load, nothing loaded.
    let chunk = std::fs::read_dir(dir.path().join("s1/data/a/t"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut b = std::fs::read(&chunk).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x55;
    std::fs::write(&chunk, b).unwrap();
    let t2 = replica(3).await;
    let out = replseed(
        &[
            "load",
            "--stage",
            &stage,
            "--snapshot",
            "s1",
            "--target",
            &t2.url(),
            "--no-accounts",
        ],
        &key,
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("s1/data/a/t/") && err.contains("SHA-256"),
        "{err}"
    );
    let exists = scalar(
        &t2,
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'a' AND TABLE_NAME = 't'",
    )
    .await;
    if exists != "0" {
        let rows = scalar(&t2, "SELECT COUNT(*) FROM a.t").await;
        assert_eq!(rows, "0", "rows of the tampered chunk went in: {err}");
    }
}

/// `replseed serve` (with the key) on the tampered stage: a replica pointed
/// at it gets error 1236 naming `key` and applies nothing.
async fn serve_refuses(stage: &str, t: &MariaDb, before: &(String, String), key: &str) {
    let mut env = key_env();
    env.push(("REPLSEED_REPLICATION_PASSWORD".into(), "s3cret".into()));
    // The port is free when chosen; a serve that lost it to a race exits: retry.
    let (_serve, port) = 'start: {
        for _ in 0..5 {
            let port = replseed_testkit::free_port();
            let listen = format!("127.0.0.1:{port}");
            let mut child = spawn_replseed(&["serve", "--stage", stage, "--listen", &listen], &env);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if tokio::net::TcpStream::connect(&listen).await.is_ok() {
                    break 'start (child, port);
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("replseed serve does not listen");
    };
    exec(
        t,
        &format!(
            "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL gtid_slave_pos = '{}'; \
             CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, MASTER_USER='repl', \
             MASTER_PASSWORD='s3cret', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE;",
            before.0
        ),
    )
    .await;
    let start = Instant::now();
    let (errno, error) = loop {
        let mut c = t.conn().await.unwrap();
        use mysql_async::prelude::Queryable;
        let r: mysql_async::Row = c.query_first("SHOW SLAVE STATUS").await.unwrap().unwrap();
        let errno: String = r.get::<String, _>("Last_IO_Errno").unwrap();
        let error: String = r.get::<String, _>("Last_IO_Error").unwrap();
        if errno != "0" {
            break (errno, error);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the replica got no error"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(errno, "1236", "{error}");
    assert!(error.contains(key), "{error}");
    exec(t, "STOP SLAVE; RESET SLAVE ALL").await;
    assert_eq!(&replica_state(t).await, before);
}
