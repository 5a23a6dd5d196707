//! `replseed serve` treats every client as hostile until it has logged in:
//! it does not start without a replication password, bounds packets before
//! reading them, limits connections, times out logins and idle sessions,
//! rate-limits wrong passwords, and answers a damaged segment with 1236
//! for that replica alone. Checked against a real `replseed serve`
//! process, with raw sockets, the `mariadb` client and a real replica.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

pub(crate) const PASSWORD: &str = "s3cret-serve";

/// A running `replseed serve` and what it logged.
pub(crate) struct Serve {
    child: tokio::process::Child,
    pub(crate) port: u16,
    log: Arc<Mutex<String>>,
}

impl Serve {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log has `needle`.
    pub(crate) async fn wait_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "serve never logged {needle:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident memory of the serve process, in KiB.
    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("serve runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// CPU time used so far (user + system), in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let pid = self.child.id().expect("serve runs");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 of stat(5), counted from the state (field 3).
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// Still running (not crashed).
    pub(crate) fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "serve exited; its log:\n{}",
            self.log()
        );
    }
}

/// Starts `replseed serve` on a free port (another port if it was taken
/// meanwhile), with `extra` flags, and waits until it listens.
pub(crate) async fn serve(stage: &str, extra: &[&str]) -> Serve {
    serve_with(stage, extra, None).await
}

/// As [`serve`], with at most `nofile` file descriptors if given.
async fn serve_with(stage: &str, extra: &[&str], nofile: Option<u32>) -> Serve {
    for _ in 0..5 {
        let port = replseed_testkit::free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["serve", "--stage", stage, "--listen", &listen];
        args.extend_from_slice(extra);
        let env = [("REPLSEED_REPLICATION_PASSWORD".into(), PASSWORD.into())];
        let mut child = match nofile {
            None => spawn_replseed(&args, &env),
            // prlimit execs replseed: the child's pid is serve's.
            Some(n) => tokio::process::Command::new("prlimit")
                .arg(format!("--nofile={n}:{n}"))
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_replseed"))
                .args(&args)
                .env("REPLSEED_NO_PROGRESS", "1")
                .env_remove("REPLSEED_STAGE")
                .envs(env.iter().cloned())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("prlimit replseed serve"),
        };
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        let start = Instant::now();
        loop {
            if log
                .lock()
                .unwrap()
                .contains("serving the binlog archive on")
            {
                return Serve { child, port, log };
            }
            if child.try_wait().unwrap().is_some() {
                // Let the reader take the last lines.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let text = log.lock().unwrap().clone();
                assert!(text.contains("cannot listen"), "serve failed:\n{text}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "serve does not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("no free port for serve after 5 tries");
}

/// Reads one packet's payload (of a single chunk).
async fn read_packet(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    let mut p = vec![0; len];
    s.read_exact(&mut p).await?;
    Ok(p)
}

/// The error code of an ERR payload.
fn err_code(p: &[u8]) -> Option<u16> {
    (p.first() == Some(&0xff)).then(|| u16::from_le_bytes([p[1], p[2]]))
}

/// Waits until the server closes `s` (end of stream or reset); how long that took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection is still open after {limit:?}"),
        }
    }
}

/// Runs the `mariadb` client against serve with `password`, `sql` on stdin.
async fn client(port: u16, password: &str, sql: &str) -> std::process::Output {
    let mut child = tokio::process::Command::new("mariadb")
        .args([
            "--no-defaults",
            "--protocol=tcp",
            "--host=127.0.0.1",
            &format!("--port={port}"),
            "--user=repl",
            &format!("--password={password}"),
            "--connect-timeout=10",
            "--batch",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the mariadb client");
    let mut stdin = child.stdin.take().unwrap();
    let sql = sql.to_string();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(sql.as_bytes()).await;
    });
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the mariadb client hangs")
        .unwrap();
    let _ = writer.await;
    out
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_a_replication_password_does_not_start() {
    let (_dir, stage) = local_stage();
    for env in [
        vec![],
        vec![("REPLSEED_REPLICATION_PASSWORD".to_string(), String::new())],
    ] {
        let mut with = env.clone();
        with.push(("REPLSEED_LISTEN".into(), "127.0.0.1:0".into()));
        let err = replseed_fails(&["serve", "--stage", &stage], &with, 2).await;
        assert!(
            err.contains("needs a password for the replication user 'repl'")
                && err.contains("REPLSEED_REPLICATION_PASSWORD"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!err.contains("serving"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_packets_drop_the_connection_and_memory_stays_bounded() {
    let (_dir, stage) = local_stage();
    let s = serve(&stage, &[]).await;
    let before = s.rss_kib();
    // Eight clients each claim a 16 MiB packet before logging in and keep
    // sending continuation packets of the largest size: 64 MiB each.
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        let pid = s.child.id().unwrap();
        tokio::spawn(async move {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) = st
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next())
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut floods = Vec::new();
    for _ in 0..8 {
        let addr = s.addr();
        floods.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(&addr).await.unwrap();
            let greeting = read_packet(&mut c).await.unwrap();
            assert_eq!(greeting[0], 10, "a greeting");
            let block = vec![0x41u8; 1 << 16];
            let mut sent = 0u64;
            for seq in 1u8..=4 {
                if c.write_all(&[0xff, 0xff, 0xff, seq]).await.is_err() {
                    return sent;
                }
                for _ in 0..256 {
                    if c.write_all(&block).await.is_err() {
                        return sent;
                    }
                    sent += block.len() as u64;
                }
            }
            panic!("serve took 64 MiB of one packet from an unauthenticated client");
        }));
    }
    for f in floods {
        let sent = f.await.unwrap();
        assert!(sent < 64 << 20);
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.await.unwrap();
    let grew = peak.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(
        grew < 24 << 10,
        "serve's RSS grew by {grew} KiB while 8 clients sent oversized packets"
    );
    s.wait_log("dropping the connection: a packet larger than 16384 bytes")
        .await;
    assert!(s.log().contains("127.0.0.1:"), "the peer is logged");

    // Logged in, the cap is larger but still there: a 1 MiB query is refused
    // by dropping the connection, a small one is answered.
    let small = client(s.port, PASSWORD, "SHOW TABLES;\n").await;
    assert!(
        stderr_of(&small).contains("replseed serve does not answer"),
        "{}",
        stderr_of(&small)
    );
    let big = format!("SELECT '{}';\n", "x".repeat(1 << 20));
    let dropped = client(s.port, PASSWORD, &big).await;
    assert!(!dropped.status.success());
    let e = stderr_of(&dropped);
    assert!(
        e.contains("2013") || e.contains("2006"),
        "the connection was not dropped: {e}"
    );
    s.wait_log("dropping the connection: a packet larger than 65536 bytes")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_excess_over_the_connection_limit_gets_1040_and_idle_clients_are_closed() {
    let (_dir, stage) = local_stage();
    let s = serve(
        &stage,
        &[
            "--max-connections",
            "50",
            "--handshake-timeout-secs",
            "3",
            "--idle-timeout-secs",
            "2",
            "--log",
            "info,replseed_binlog=debug",
        ],
    )
    .await;
    let opened = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..200 {
        conns.push(TcpStream::connect(s.addr()).await.unwrap());
    }
    let mut greeted = Vec::new();
    let mut refused = 0;
    for mut c in conns {
        let p = read_packet(&mut c).await.unwrap();
        match err_code(&p) {
            None => {
                assert_eq!(p[0], 10, "a greeting");
                greeted.push(c);
            }
            Some(code) => {
                assert_eq!(code, 1040);
                assert!(String::from_utf8_lossy(&p).contains("Too many connections"));
                refused += 1;
            }
        }
    }
    assert!(
        opened.elapsed() < Duration::from_secs(3),
        "too slow to count: the first ones may have timed out"
    );
    assert_eq!(greeted.len(), 50, "the limit admits 50");
    assert_eq!(refused, 150);
    // The 50 that never log in are closed after the handshake timeout, not before.
    for c in greeted.iter_mut() {
        closed_within(c, Duration::from_secs(10)).await;
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(2900),
        "closed after {waited:?}, before the 3 s timeout"
    );
    s.wait_log("login: closing the connection after 3 s").await;
    // Their places are free again.
    let mut c = TcpStream::connect(s.addr()).await.unwrap();
    assert_eq!(read_packet(&mut c).await.unwrap()[0], 10);
    drop(c);

    // A logged-in client that says nothing is closed after the idle timeout.
    let mut idle = tokio::process::Command::new("mariadb")
        .args([
            "--no-defaults",
            "--protocol=tcp",
            "--host=127.0.0.1",
            &format!("--port={}", s.port),
            "--user=repl",
            &format!("--password={PASSWORD}"),
            "--batch",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    s.wait_log("idle session: closing the connection after 2 s")
        .await;
    let mut stdin = idle.stdin.take().unwrap();
    stdin.write_all(b"SELECT 1;\n").await.unwrap();
    drop(stdin);
    let out = idle.wait_with_output().await.unwrap();
    let e = stderr_of(&out);
    assert!(
        !out.status.success() && (e.contains("2013") || e.contains("2006")),
        "the idle session was still open: {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_are_logged_and_the_address_is_blocked_for_a_while() {
    let (_dir, stage) = local_stage();
    let s = serve(
        &stage,
        &["--max-login-failures", "3", "--login-block-secs", "4"],
    )
    .await;
    for i in 0..3 {
        let o = client(s.port, "wrong-password", "SELECT 1;\n").await;
        let e = stderr_of(&o);
        assert!(e.contains("ERROR 1045"), "attempt {i}: {e}");
    }
    let blocked_at = Instant::now();
    // Now even the right password is refused, unheard.
    let o = client(s.port, PASSWORD, "SELECT 1;\n").await;
    let e = stderr_of(&o);
    assert!(
        e.contains("1129") && e.contains("is blocked because of 3 failed logins"),
        "{e}"
    );
    let log = s.log();
    assert_eq!(
        log.matches("failed login to replseed serve").count(),
        3,
        "{log}"
    );
    assert!(
        log.contains("peer=127.0.0.1:") && log.contains("user=\"repl\""),
        "{log}"
    );
    assert!(log.contains("blocking the address"), "{log}");
    assert!(
        !log.contains("wrong-password") && !log.contains(PASSWORD),
        "{log}"
    );
    // Until the block ends; then the right password logs in again.
    loop {
        let o = client(s.port, PASSWORD, "SHOW TABLES;\n").await;
        let e = stderr_of(&o);
        if e.contains("replseed serve does not answer") {
            break;
        }
        assert!(e.contains("1129"), "{e}");
        assert!(
            blocked_at.elapsed() < Duration::from_secs(20),
            "still blocked"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waited = blocked_at.elapsed();
    assert!(
        waited >= Duration::from_millis(3500),
        "unblocked after {waited:?}, before the 4 s block"
    );
}

/// Rewrites segment `seq` of a file stage with `stored` as its data and
/// the manifest's SHA-256 and size to match (as a writer of the stage could).
fn replace_segment(stage_dir: &std::path::Path, seq: u64, stored: &[u8]) {
    // The data alone is damaged (bit rot, a bad copy): the manifest, which
    // the next segment's manifest chains to by digest, is left as it was,
    // so the damage is found by the segment's hashes as it is read.
    let data = stage_dir.join(format!(".binlog/segments/{seq:012}.bin.zst"));
    std::fs::write(&data, stored).unwrap();
}

pub(crate) async fn slave_status(t: &MariaDb) -> (String, String) {
    use mysql_async::prelude::Queryable;
    let mut c = t.conn().await.unwrap();
    let row: mysql_async::Row = c
        .query_first("SHOW SLAVE STATUS")
        .await
        .unwrap()
        .expect("a replica");
    let field = |name: &str| {
        let i = row
            .columns_ref()
            .iter()
            .position(|c| c.name_str() == name)
            .unwrap();
        text(&row.as_ref(i).unwrap().clone())
    };
    (field("Last_IO_Errno"), field("Last_IO_Error"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_segment_gives_the_replica_1236_naming_it_and_serve_stays_up() {
    let (dir, stage) = local_stage();
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE a; USE a; CREATE TABLE a.t (id INT PRIMARY KEY, v INT, c VARCHAR(60)); \
         INSERT INTO a.t SELECT seq, seq, 'before' FROM seq_1_to_2000;",
    )
    .await;
    let snap = extract_ok(&m.url(), &stage, "s1", &["--no-accounts", "--json"]).await;
    let gtid = snap["gtid"].as_str().unwrap().to_string();
    exec(
        &m,
        "USE a; INSERT INTO a.t SELECT seq, seq, 'after' FROM seq_2001_to_3000; \
         UPDATE a.t SET v = v + 1 WHERE id <= 500; FLUSH BINARY LOGS; \
         INSERT INTO a.t (id, v, c) VALUES (5000, 1, 'second file');",
    )
    .await;
    let goal = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    archive_now(&m, &stage).await;
    let segs = archive_segments(dir.path());
    assert!(segs.len() >= 2, "{segs:?}");
    let first = segs[0]["seq"].as_u64().unwrap();
    let key = format!(".binlog/segments/{first:012}.bin.zst");
    let original = std::fs::read(dir.path().join(&key)).unwrap();
    let manifest_path = dir
        .path()
        .join(format!(".binlog/segments/{first:012}.json"));
    let original_manifest = std::fs::read(&manifest_path).unwrap();
    let raw = zstd::decode_all(&original[..]).unwrap();

    let t = replica(2).await;
    load_ok(&stage, "s1", &t.url(), &["--no-accounts"]).await;
    let mut s = serve(&stage, &[]).await;
    exec(
        &t,
        &format!(
            "STOP SLAVE; SET GLOBAL gtid_slave_pos = '{gtid}'; \
             CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl', \
             MASTER_PASSWORD='{PASSWORD}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
            s.port
        ),
    )
    .await;

    // The offset of the event after the format description.
    let fde_len = u32::from_le_bytes(raw[13..17].try_into().unwrap()) as usize;
    let second = 4 + fde_len;
    let mut bad_crc = raw.clone();
    let n = bad_crc.len();
    bad_crc[n - 10] ^= 0xff;
    let mut bad_len = raw.clone();
    bad_len[second + 9..second + 13].copy_from_slice(&5u32.to_le_bytes());
    let damages: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "truncated zstd",
            original[..original.len() / 2].to_vec(),
            "its manifest says".to_string(),
        ),
        (
            "CRC mismatch",
            zstd::encode_all(&bad_crc[..], 3).unwrap(),
            "its manifest says".to_string(),
        ),
        (
            "bad event length",
            zstd::encode_all(&bad_len[..], 3).unwrap(),
            "its manifest says".to_string(),
        ),
    ];
    for (what, stored, says) in &damages {
        replace_segment(dir.path(), first, stored);
        exec(&t, "START SLAVE").await;
        let start = Instant::now();
        let (errno, error) = loop {
            let st = slave_status(&t).await;
            if st.0 != "0" {
                break st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{what}: the replica got no error"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(errno, "1236", "{what}: {error}");
        assert!(
            error.contains(&key) && error.contains(says.as_str()),
            "{what}: the error does not name {key} and say {says:?}: {error}"
        );
        exec(&t, "STOP SLAVE").await;
        s.assert_running();
        assert!(!s.log().contains("panicked"), "{}", s.log());
    }
    assert_eq!(
        scalar(&t, "SELECT COUNT(*) FROM a.t").await,
        "2000",
        "nothing of the damaged segment was applied"
    );
    // The same serve, the segment repaired: the replica catches up.
    std::fs::write(dir.path().join(&key), &original).unwrap();
    std::fs::write(&manifest_path, &original_manifest).unwrap();
    exec(&t, "START SLAVE").await;
    assert_eq!(
        scalar(&t, &format!("SELECT MASTER_GTID_WAIT('{goal}', 120)")).await,
        "0",
        "{:?}",
        slave_status(&t).await
    );
    assert_identical(&m, &t, &["a"]).await;
    s.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_serve_backs_off_instead_of_spinning() {
    let (_dir, stage) = local_stage();
    let mut s = serve_with(
        &stage,
        &["--max-connections", "500", "--handshake-timeout-secs", "60"],
        Some(48),
    )
    .await;
    // More connections than serve has descriptors: accept fails (EMFILE)
    // for the rest, which wait in the backlog.
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(TcpStream::connect(s.addr()).await.unwrap());
    }
    s.wait_log("cannot accept connections").await;
    // A window of CPU time: a loop retrying accept would burn a core in it.
    let before = s.cpu_ticks();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = s.cpu_ticks() - before;
    eprintln!("serve used {used} clock ticks of CPU in 3 s out of descriptors");
    assert!(
        used < 50,
        "serve used {used} clock ticks of CPU in 3 s while out of descriptors"
    );
    assert_eq!(
        s.log().matches("cannot accept connections").count(),
        1,
        "logged once per burst:\n{}",
        s.log()
    );
    // Descriptors freed: the backlog drains and new clients are greeted.
    drop(held);
    s.wait_log("accepting connections again").await;
    let mut c = TcpStream::connect(s.addr()).await.unwrap();
    let p = tokio::time::timeout(Duration::from_secs(10), read_packet(&mut c))
        .await
        .expect("a greeting")
        .unwrap();
    assert_eq!(p[0], 10);
    s.assert_running();
}
