//! Each server gets only its own password: not the master's on a target,
//! not the master's in a replica's master.info, none in `ps`; and each
//! command's `--help` lists only the flags it uses.

use mysql_async::prelude::Queryable;

use crate::common::*;

/// The general log of `db` (log_output=TABLE), every argument as text.
async fn general_log(db: &MariaDb) -> Vec<String> {
    let mut c = db.conn().await.unwrap();
    let rows: Vec<(String, Vec<u8>)> = c
        .query("SELECT command_type, argument FROM mysql.general_log")
        .await
        .unwrap();
    c.disconnect().await.ok();
    rows.into_iter()
        .map(|(t, a)| format!("{t}: {}", String::from_utf8_lossy(&a)))
        .collect()
}

async fn logged_server(id: u32) -> MariaDb {
    MariaDb::start_with(MariaDbOptions {
        server_id: id,
        extra_args: vec!["--general-log=1".into(), "--log-output=TABLE".into()],
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_password_never_reaches_a_target_nor_its_master_info() {
    let source_pw = "Src-Admin-Pw1";
    let repl_pw = "Repl-Only-Pw2";
    let m = master().await;
    exec(
        &m,
        &format!(
            "CREATE DATABASE c; CREATE TABLE c.t (id INT PRIMARY KEY); INSERT INTO c.t VALUES (1),(2); \
             CREATE USER 'admin'@'%' IDENTIFIED BY '{source_pw}'; GRANT ALL ON *.* TO 'admin'@'%'; \
             CREATE USER 'repl'@'%' IDENTIFIED BY '{repl_pw}'; GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';"
        ),
    )
    .await;
    // The target's root has no password: a password sent to it is refused
    // and the general log says `using password: YES`.
    let t = logged_server(2).await;
    let dir = tempfile::tempdir().unwrap();
    let (_s, stage) = local_stage();
    let cnf = dir.path().join("my.cnf");
    let src = format!("mysql://admin@127.0.0.1:{}", m.port);
    let args = |cnf: &std::path::Path| {
        [
            "provision",
            "--source",
            &src,
            "--target",
            &t.url(),
            "--stage",
            &stage,
            "--replication-user",
            "repl",
            "--defaults-file",
            cnf.to_str().unwrap(),
        ]
        .map(String::from)
    };

    // No replication password: refused before anything is extracted or
    // loaded, naming where to give it.
    std::fs::write(&cnf, format!("[replseed-source]\npassword={source_pw}\n")).unwrap();
    let a = args(&cnf);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let err = replseed_fails(&a, &[], 1).await;
    assert!(
        err.contains("REPLSEED_REPLICATION_PASSWORD") && err.contains("[replseed-replication]"),
        "{err}"
    );
    assert!(!err.contains(source_pw), "{err}");
    assert_eq!(
        std::fs::read_dir(_s.path()).unwrap().count(),
        0,
        "nothing staged"
    );
    assert_eq!(
        scalar(&t, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ('c','replseed')").await,
        "0"
    );

    // Each role's password in its own group; a generic password is ignored.
    std::fs::write(
        &cnf,
        format!(
            "[client]\npassword=Generic-Pw3\n[replseed-source]\npassword={source_pw}\n\
             [replseed-replication]\npassword={repl_pw}\n"
        ),
    )
    .unwrap();
    let a = args(&cnf);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    replseed_ok(&a, &[]).await;
    still_replicating(&m, &t, "INSERT INTO c.t VALUES (3)").await;
    let log = general_log(&t).await;
    assert!(
        log.iter().any(|l| l.contains("CHANGE MASTER")),
        "the log is on: {log:?}"
    );
    for l in &log {
        assert!(
            !l.contains(source_pw) && !l.contains("Generic-Pw3"),
            "the target saw another server's password: {l}"
        );
        assert!(
            !l.contains("using password: YES"),
            "a password was sent to the target: {l}"
        );
    }
    // The replica keeps the replication user's password, not the master's.
    let info = std::fs::read_to_string(t.dir.join("data/master.info")).unwrap();
    assert!(info.contains(repl_pw), "master.info: {info}");
    assert!(!info.contains(source_pw), "master.info: {info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_a_url_is_not_in_the_command_line_of_a_running_replseed() {
    let pw = "Cmdline-Pw4";
    let m = master().await;
    exec(
        &m,
        &format!(
            "CREATE DATABASE a; CREATE TABLE a.t (id INT PRIMARY KEY); CREATE USER 'arch'@'%' IDENTIFIED BY '{pw}'; \
             GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO 'arch'@'%';"
        ),
    )
    .await;
    let (_s, stage) = local_stage();
    // The archive starts where the oldest snapshot does.
    extract_ok(&m.url(), &stage, "s1", &[]).await;
    let src = format!("mysql://arch:{pw}@127.0.0.1:{}", m.port);
    let mut child = spawn_replseed(&["archive", "--source", &src, "--stage", &stage], &[]);
    let pid = child.id().unwrap();
    // Following the master: its dump thread for `arch` is there.
    let start = std::time::Instant::now();
    while scalar(
        &m,
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER='arch' AND COMMAND LIKE 'Binlog Dump%'",
    )
    .await
        != "1"
    {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().await.unwrap();
            panic!("archive exited: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(start.elapsed().as_secs() < 60, "the archiver never connected");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(!cmdline.contains(pw), "{cmdline}");
    assert!(
        cmdline.contains(&format!("mysql://arch:{}@127.0.0.1", "x".repeat(pw.len()))),
        "{cmdline}"
    );
    drop(child);
}

/// `replseed <cmd> --help`, the long flags it lists.
async fn help_flags(cmd: &[&str]) -> Vec<String> {
    let out = replseed(&[cmd, &["--help"]].concat(), &[]).await;
    assert!(out.status.success(), "{cmd:?} --help");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut flags: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("-h, ")
                .or(l.strip_prefix("-V, "))
                .unwrap_or(l);
            l.strip_prefix("--")
                .map(|f| f.split([' ', '=', '<', ',']).next().unwrap().to_string())
        })
        .collect();
    flags.sort();
    flags
}

#[tokio::test]
async fn each_command_help_lists_only_its_own_flags() {
    let creds = [
        "defaults-file",
        "source-password-file",
        "target-password-file",
        "replication-password-file",
        "stage-key-file",
    ];
    // The credential flags each command uses (the others are not listed).
    let expect: [(&[&str], &[&str]); 12] = [
        (
            &["extract"],
            &["defaults-file", "source-password-file", "stage-key-file"],
        ),
        (
            &["load"],
            &["defaults-file", "target-password-file", "stage-key-file"],
        ),
        (&["catchup"], &creds),
        (&["provision"], &creds),
        (
            &["verify"],
            &[
                "defaults-file",
                "source-password-file",
                "target-password-file",
            ],
        ),
        (
            &["archive"],
            &["defaults-file", "source-password-file", "stage-key-file"],
        ),
        (
            &["serve"],
            &[
                "defaults-file",
                "replication-password-file",
                "stage-key-file",
            ],
        ),
        (&["snapshots", "list"], &["stage-key-file"]),
        (&["snapshots", "show"], &["stage-key-file"]),
        (&["snapshots", "verify"], &["stage-key-file"]),
        (&["snapshots", "delete"], &["stage-key-file"]),
        (&["snapshots", "prune"], &["stage-key-file"]),
    ];
    for (cmd, want) in expect {
        let flags = help_flags(cmd).await;
        let listed: Vec<&str> = creds
            .iter()
            .copied()
            .filter(|c| flags.iter().any(|f| f == c))
            .collect();
        assert_eq!(listed, want, "`{}` --help lists {flags:?}", cmd.join(" "));
    }
    // Only the commands that set up replication take a replication password.
    for cmd in [&["extract"][..], &["load"], &["verify"], &["archive"]] {
        let flags = help_flags(cmd).await;
        assert!(
            !flags.iter().any(|f| f.starts_with("replication-")),
            "{cmd:?}: {flags:?}"
        );
    }
}
