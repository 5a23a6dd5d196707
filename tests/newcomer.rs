//! A newcomer's first hour: read-only commands leave the disk alone,
//! listings and reports are on stdout, a malformed URL or flag value is a
//! bad command line (exit 2), and on a terminal the bars say what is left
//! (rows inside a chunk, transactions behind, tables compared) with log
//! lines printed above them, never into them.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::*;

/// `/tmp/.../typo` in a fresh temporary directory (the directory kept while the guard lives).
fn missing_stage() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo");
    (dir, typo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_never_create_a_stage() {
    let (_guard, typo) = missing_stage();
    let dead = format!("mysql://root@127.0.0.1:{}", replseed_testkit::free_port());
    for form in [typo.display().to_string(), file_stage(&typo)] {
        let s = form.as_str();
        let commands: Vec<Vec<&str>> = vec![
            vec!["snapshots", "list", "--stage", s],
            vec!["snapshots", "list", "--stage", s, "--json"],
            vec!["snapshots", "show", "latest", "--stage", s],
            vec!["snapshots", "verify", "latest", "--stage", s],
            vec!["snapshots", "delete", "x1", "--stage", s],
            vec!["snapshots", "prune", "--keep", "1", "--stage", s],
            vec!["load", "--stage", s, "--target", &dead],
            vec![
                "catchup", "--stage", s, "--source", &dead, "--target", &dead,
            ],
            vec!["serve", "--stage", s, "--listen", "127.0.0.1:0"],
            // archive writes, but only into a stage that holds a snapshot.
            vec!["archive", "--source", &dead, "--stage", s],
        ];
        // serve refuses to start without a replication password (exit 2)
        // before it looks at the stage: give it one.
        let env = [(
            "REPLSEED_REPLICATION_PASSWORD".to_string(),
            "pw".to_string(),
        )];
        for args in commands {
            let err = replseed_fails(&args, &env, 1).await;
            let errors = error_lines(&err);
            assert_eq!(errors.len(), 1, "{args:?}: one error line:\n{err}");
            assert!(
                errors[0].contains(&format!("the directory {} does not exist", typo.display()))
                    && errors[0].contains("check --stage"),
                "{args:?}: the line names the path and what to do:\n{err}"
            );
            assert!(!typo.exists(), "{args:?} created {}", typo.display());
        }
    }
    // A file where the stage should be is no stage either.
    std::fs::write(&typo, b"not a directory").unwrap();
    let err = replseed_fails(
        &["snapshots", "list", "--stage", &file_stage(&typo)],
        &[],
        1,
    )
    .await;
    assert!(err.contains("is not a directory; check --stage"), "{err}");
    std::fs::remove_file(&typo).unwrap();

    // A writer creates it, owner-only.
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE nc; CREATE TABLE nc.t (id INT PRIMARY KEY); INSERT INTO nc.t VALUES (1)",
    )
    .await;
    extract_ok(&m.url(), &file_stage(&typo), "s1", &[]).await;
    let mode = std::fs::metadata(&typo).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "extract created the stage with mode {mode:o}");
    // Now it exists, the readers read it.
    let out = replseed(&["snapshots", "list", "--stage", &file_stage(&typo)], &[]).await;
    assert!(out.status.success());
}

/// A server with one small database `nc` (tables t and u).
async fn small_master() -> MariaDb {
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE nc; CREATE TABLE nc.t (id INT PRIMARY KEY, v VARCHAR(40)); \
         CREATE TABLE nc.u (id INT PRIMARY KEY); \
         INSERT INTO nc.t SELECT seq, REPEAT('x', 30) FROM nc.seq_1_to_1000; INSERT INTO nc.u VALUES (1)",
    )
    .await;
    m
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_and_reports_go_to_stdout() {
    let m = small_master().await;
    let t = replica(2).await;
    let (_dir, stage) = local_stage();
    extract_ok(&m.url(), &stage, "s1", &[]).await;

    // The listing, where `| grep` finds it; stderr keeps the logs only.
    let out = replseed(&["snapshots", "list", "--stage", &stage], &[]).await;
    assert!(out.status.success());
    let (stdout, stderr) = (text_of(&out.stdout), text_of(&out.stderr));
    assert!(stdout.lines().any(|l| l.starts_with("s1  ")), "{stdout}");
    assert!(stdout.contains("binlog archive: "), "{stdout}");
    assert!(
        !stderr.contains("s1  "),
        "the listing is on stderr too:\n{stderr}"
    );
    // --json: stdout is the JSON line alone.
    let out = replseed(&["snapshots", "list", "--stage", &stage, "--json"], &[]).await;
    let stdout = text_of(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let j: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(j["snapshots"][0]["id"], "s1");
    // An empty stage says so on stdout.
    let empty = tempfile::tempdir().unwrap();
    let out = replseed(
        &["snapshots", "list", "--stage", &file_stage(empty.path())],
        &[],
    )
    .await;
    assert!(text_of(&out.stdout).contains("no snapshots in"), "{out:?}");

    let out = replseed(&["snapshots", "show", "s1", "--stage", &stage], &[]).await;
    assert!(text_of(&out.stdout).contains("snapshot   s1"), "{out:?}");
    let out = replseed(&["snapshots", "verify", "s1", "--stage", &stage], &[]).await;
    assert!(out.status.success());
    assert!(
        text_of(&out.stdout).contains("snapshot s1 verified: "),
        "{out:?}"
    );

    // verify's report: the differences, the summary.
    load_ok(&stage, "s1", &t.url(), &[]).await;
    exec(&t, "UPDATE nc.t SET v='drift' WHERE id=7").await;
    let out = replseed(&verify_args(&m.url(), &t.url()), &[]).await;
    assert_eq!(out.status.code(), Some(4));
    let (stdout, stderr) = (text_of(&out.stdout), text_of(&out.stderr));
    assert!(
        stdout.contains("DIFFERENCE table `nc`.`t`: same row count (1000) but the contents differ"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("compared 1 databases, 2 tables"),
        "{stdout}"
    );
    assert!(!stderr.contains("DIFFERENCE"), "{stderr}");
    assert!(
        error_lines(&stderr)[0].contains("1 difference(s)"),
        "{stderr}"
    );
    exec(&t, "UPDATE nc.t SET v=REPEAT('x', 30) WHERE id=7").await;
    let out = replseed(&verify_args(&m.url(), &t.url()), &[]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        text_of(&out.stdout).lines().any(|l| l == "identical"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_urls_and_flag_values_exit_2() {
    let (_guard, typo) = missing_stage();
    let stage = file_stage(&typo);
    let dead = format!("mysql://root@127.0.0.1:{}", replseed_testkit::free_port());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["extract", "--source", "mysql//root@host", "--stage", &stage],
            "invalid --source",
        ),
        (
            vec![
                "extract",
                "--source",
                "mysql://u:s3cr3t@host:notaport",
                "--stage",
                &stage,
            ],
            "invalid --source",
        ),
        (
            vec![
                "load",
                "--stage",
                &stage,
                "--target",
                "mysql://root@host:99999",
            ],
            "invalid --target",
        ),
        (
            vec![
                "provision",
                "--source",
                &dead,
                "--target",
                &dead,
                "--target",
                "nonsense",
                "--stage",
                &stage,
            ],
            "invalid --target",
        ),
        (
            vec!["verify", "--source", "root@host", "--target", &dead],
            "invalid --source",
        ),
        (
            vec!["snapshots", "list", "--stage", "s3://"],
            "invalid --stage",
        ),
        (
            vec!["snapshots", "list", "--stage", "ftp://host/x"],
            "invalid --stage",
        ),
        (
            vec![
                "extract",
                "--source",
                &dead,
                "--stage",
                &stage,
                "--threads",
                "0",
            ],
            "--threads must be between 1 and 256",
        ),
        (
            vec![
                "extract",
                "--source",
                &dead,
                "--stage",
                &stage,
                "--zstd-level",
                "40",
            ],
            "--zstd-level must be between 1 and 22",
        ),
        (
            vec![
                "extract",
                "--source",
                &dead,
                "--stage",
                &stage,
                "--snapshot",
                "../x",
            ],
            "invalid snapshot id",
        ),
    ];
    for (args, needle) in cases {
        let err = replseed_fails(&args, &[], 2).await;
        assert!(err.contains(needle), "{args:?}: `{needle}` in:\n{err}");
        assert!(
            !err.contains("s3cr3t"),
            "{args:?} printed the password:\n{err}"
        );
        assert!(!typo.exists(), "{args:?} created the stage");
    }
    // From the environment too.
    let env = [(
        "REPLSEED_SOURCE".to_string(),
        "mysql//root@host".to_string(),
    )];
    let err = replseed_fails(&["extract", "--stage", &stage], &env, 2).await;
    assert!(err.contains("invalid --source"), "{err}");
}

/// What a command drew on a terminal: the bytes written to it and the
/// screen they left (scrollback included), as tmux renders them.
struct Terminal {
    raw: String,
    screen: String,
    code: i32,
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs replseed on a 160-column terminal (tmux, a private server), with
/// progress bars on.
async fn on_terminal(args: &[&str]) -> Terminal {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let command: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_replseed"))
        .chain(args.iter().copied())
        .map(shell_quote)
        .collect();
    std::fs::write(
        d.join("inner.sh"),
        format!(
            "unset REPLSEED_NO_PROGRESS REPLSEED_STAGE\nexec {}\n",
            command.join(" ")
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("run.sh"),
        format!(
            "cd {d}\nscript -qfec 'sh inner.sh' raw.log\necho $? > code.tmp && mv code.tmp code\nsleep 600\n",
            d = shell_quote(&d.display().to_string())
        ),
    )
    .unwrap();
    let socket = format!("replseed-test-{}", replseed_testkit::free_port());
    let tmux = |a: &[&str]| {
        std::process::Command::new("tmux")
            .arg("-L")
            .arg(&socket)
            .args(a)
            .output()
            .expect("tmux")
    };
    let run = format!(
        "sh {}",
        shell_quote(&d.join("run.sh").display().to_string())
    );
    let started = tmux(&["new-session", "-d", "-x", "160", "-y", "50", &run]);
    assert!(started.status.success(), "tmux: {started:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !d.join("code").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "replseed {args:?} did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let screen = tmux(&["capture-pane", "-p", "-J", "-S", "-"]);
    tmux(&["kill-server"]);
    let code = std::fs::read_to_string(d.join("code"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Terminal {
        raw: std::fs::read_to_string(d.join("raw.log")).unwrap_or_default(),
        screen: text_of(&screen.stdout),
        code,
    }
}

/// The positions `N/TOTAL` a bar drew (TOTAL as given).
fn positions(raw: &str, total: u64) -> Vec<u64> {
    let suffix = format!("/{total} ");
    raw.match_indices(&suffix)
        .filter_map(|(i, _)| {
            let digits: String = raw[..i]
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.chars().rev().collect::<String>().parse().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_bar_moves_inside_a_chunk_and_logs_print_above_it() {
    let m = master().await;
    // Two chunks of 100000 rows, about 3.8 MB of LOAD DATA text each.
    exec(
        &m,
        "CREATE DATABASE nc; CREATE TABLE nc.t (id INT PRIMARY KEY, v VARCHAR(40)); \
         INSERT INTO nc.t SELECT seq, REPEAT('x', 30) FROM nc.seq_1_to_200000",
    )
    .await;
    let t = replica(2).await;
    let (_dir, stage) = local_stage();
    extract_ok(
        &m.url(),
        &stage,
        "s1",
        &["--chunk-rows", "100000", "--threads", "1"],
    )
    .await;
    let url = t.url();
    // At 2 MiB/s the load takes about 4 s; a log line per chunk while the bar is up.
    let term = on_terminal(&[
        "load",
        "--stage",
        &stage,
        "--snapshot",
        "s1",
        "--target",
        &url,
        "--threads",
        "1",
        "--max-load-rate",
        "2",
        "--log",
        "info,replseed_load=debug",
    ])
    .await;
    assert_eq!(term.code, 0, "{}", term.screen);
    // Where the bar would stop if it moved a chunk at a time.
    let show = replseed_ok(
        &["snapshots", "show", "s1", "--stage", &stage, "--json"],
        &[],
    )
    .await;
    let chunks = show["tables"][0]["chunks"].as_array().unwrap().clone();
    assert!(chunks.len() >= 2, "{show}");
    let boundaries: Vec<u64> = chunks
        .iter()
        .scan(0, |sum, c| {
            *sum += c["rows"].as_u64().unwrap();
            Some(*sum)
        })
        .collect();
    let drawn = positions(&term.raw, 200_000);
    assert!(
        drawn.iter().any(|p| *p > 0 && !boundaries.contains(p)),
        "the bar only moved a chunk at a time: {drawn:?}, chunks end at {boundaries:?}\n{}",
        term.screen
    );
    // Every log line is whole on the screen, and no bar is left there: the
    // bar was cleared to print each line, and at the end.
    let logged: Vec<&str> = term
        .screen
        .lines()
        .filter(|l| l.contains("chunk loaded"))
        .collect();
    assert_eq!(logged.len(), chunks.len(), "{}", term.screen);
    assert!(
        !term.screen.contains("load ["),
        "a bar was left on the screen:\n{}",
        term.screen
    );
    assert!(
        term.screen.contains("loaded snapshot s1 into"),
        "{}",
        term.screen
    );
}

/// Holds `LOCK TABLES nc.t WRITE` on `db` while `f` runs, released after `secs`.
async fn with_table_locked<F: std::future::Future>(db: &MariaDb, secs: u64, f: F) -> F::Output {
    use mysql_async::prelude::Queryable;
    let mut c = db.conn().await.unwrap();
    c.query_drop("LOCK TABLES nc.t WRITE").await.unwrap();
    let release = async {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        c.query_drop("UNLOCK TABLES").await.unwrap();
    };
    let (out, ()) = tokio::join!(f, release);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catchup_and_verify_bars_count_down() {
    let m = small_master().await;
    let t = replica(2).await;
    let (_dir, stage) = local_stage();
    extract_ok(&m.url(), &stage, "s1", &[]).await;
    load_ok(&stage, "s1", &t.url(), &[]).await;
    // 300 transactions after the snapshot.
    let inserts: String = (2001..=2300)
        .map(|i| format!("INSERT INTO nc.t VALUES ({i}, 'later');"))
        .collect();
    exec(&m, &inserts).await;
    let (su, tu) = (m.url(), t.url());
    // The replica cannot apply them while the table is locked there.
    let term = with_table_locked(&t, 4, on_terminal(&catchup_args(&stage, "s1", &su, &tu))).await;
    assert_eq!(term.code, 0, "{}", term.screen);
    assert!(
        term.raw.contains("0/300 (eta ") && term.raw.contains("transactions: 300 behind, "),
        "the bar did not count what is behind:\n{}",
        term.raw
    );
    assert!(term.raw.contains("s behind the master"), "{}", term.raw);
    assert!(!term.screen.contains("catchup ["), "{}", term.screen);
    assert!(
        term.screen.contains("is replicating and caught up"),
        "{}",
        term.screen
    );

    // verify: the tables compared, of how many.
    let term = with_table_locked(&t, 3, on_terminal(&verify_args(&su, &tu))).await;
    assert_eq!(term.code, 0, "{}", term.screen);
    assert!(
        term.raw.contains("/2 (eta ") && term.raw.contains("tables: comparing `nc`"),
        "verify showed no progress:\n{}",
        term.raw
    );
    assert!(!term.screen.contains("verify ["), "{}", term.screen);
    assert!(term.screen.contains("identical"), "{}", term.screen);
}
