//! Snapshot management: list (incomplete prefixes named), show, verify
//! (corrupt chunks named), delete, prune, and immutability of published ids.

use crate::common::*;

async fn small_master() -> MariaDb {
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE shop; USE shop; CREATE TABLE orders (id INT PRIMARY KEY, v VARCHAR(30)); \
         INSERT INTO orders SELECT seq, CONCAT('order ', seq) FROM seq_1_to_3000; \
         CREATE TABLE notes (id INT PRIMARY KEY, t TEXT); INSERT INTO notes VALUES (1, 'hello');",
    )
    .await;
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_verify_delete_and_prune() {
    let m = small_master().await;
    let (dir, stage) = local_stage();
    for id in ["a1", "a2", "a3"] {
        extract_ok(&m.url(), &stage, id, &["--chunk-rows", "1000"]).await;
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // distinct finished_at
    }
    // A prefix without a manifest: what a failed extract would leave.
    std::fs::create_dir_all(dir.path().join("a0/data/shop/orders")).unwrap();
    std::fs::write(
        dir.path().join("a0/data/shop/orders/00000-00000.parquet"),
        b"partial",
    )
    .unwrap();

    let list = replseed_ok(&["snapshots", "list", "--stage", &stage, "--json"], &[]).await;
    let ids: Vec<&str> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["a1", "a2", "a3"]);
    assert_eq!(list["incomplete"][0]["id"], "a0");
    let out = replseed(&["snapshots", "list", "--stage", &stage], &[]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("a0  INCOMPLETE"));

    // show: tables with chunk paths relative to the stage root, that exist.
    let show = replseed_ok(
        &["snapshots", "show", "latest", "--stage", &stage, "--json"],
        &[],
    )
    .await;
    assert_eq!(show["snapshot"], "a3");
    let orders = show["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "orders")
        .unwrap();
    assert_eq!(orders["database"], "shop");
    assert_eq!(orders["rows"], 3000);
    let chunks = orders["chunks"].as_array().unwrap();
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    let total: u64 = chunks.iter().map(|c| c["rows"].as_u64().unwrap()).sum();
    assert_eq!(total, 3000);
    for c in chunks {
        assert!(dir.path().join(c["path"].as_str().unwrap()).is_file());
    }

    // verify: fine, then a flipped byte is named.
    replseed_ok(&["snapshots", "verify", "a3", "--stage", &stage], &[]).await;
    let victim = chunks[1]["path"].as_str().unwrap().to_string();
    let file = dir.path().join(&victim);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    // The bad chunks on stdout, the verdict on stderr.
    let bad = |out: std::process::Output| {
        assert_eq!(out.status.code(), Some(4), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let verify = ["snapshots", "verify", "a3", "--stage", &stage];
    let listed = bad(replseed(&verify, &[]).await);
    assert!(listed.contains(&format!("BAD CHUNK {victim}")), "{listed}");
    assert!(listed.contains("SHA-256"), "{listed}");
    // A missing chunk is named too.
    std::fs::remove_file(&file).unwrap();
    let listed = bad(replseed(&verify, &[]).await);
    assert!(
        listed.contains(&victim) && listed.contains("missing"),
        "{listed}"
    );

    // Published ids are immutable.
    let err = extract_fails(&m.url(), &stage, &["--snapshot", "a2"]).await;
    assert!(err.contains("snapshot `a2` already exists"), "{err}");
    let err = extract_fails(&m.url(), &stage, &["--snapshot", "a0"]).await;
    assert!(
        err.contains("snapshot `a0`") && err.contains("incomplete"),
        "{err}"
    );
    let err = replseed_fails(
        &[
            "extract",
            "--source",
            &m.url(),
            "--stage",
            &stage,
            "--snapshot",
            "../x",
        ],
        &[],
        2,
    )
    .await;
    assert!(err.contains("invalid snapshot id"), "{err}");

    // prune keeps the newest two and removes older leftovers.
    let p = replseed_ok(
        &[
            "snapshots",
            "prune",
            "--stage",
            &stage,
            "--keep",
            "2",
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(p["kept"], serde_json::json!(["a3", "a2"]));
    let deleted: Vec<&str> = p["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        deleted.contains(&"a1") && deleted.contains(&"a0"),
        "{deleted:?}"
    );
    assert!(!dir.path().join("a1").exists());

    replseed_ok(&["snapshots", "delete", "a2", "--stage", &stage], &[]).await;
    let list = replseed_ok(&["snapshots", "list", "--stage", &stage, "--json"], &[]).await;
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 1);
    let err = replseed_fails(&["snapshots", "show", "a2", "--stage", &stage], &[], 1).await;
    assert!(err.contains("no published snapshot `a2`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extract_json_summary_and_databases_filter() {
    let m = small_master().await;
    exec(&m, "CREATE DATABASE other; CREATE TABLE other.t (id INT PRIMARY KEY); INSERT INTO other.t VALUES (1)").await;
    let (_dir, stage) = local_stage();
    let j = replseed_ok(
        &[
            "extract",
            "--source",
            &m.url(),
            "--stage",
            &stage,
            "--databases",
            "shop",
            "--json",
        ],
        &[],
    )
    .await;
    for k in [
        "snapshot",
        "gtid",
        "binlog_file",
        "binlog_pos",
        "tables",
        "rows",
        "bytes",
    ] {
        assert!(!j[k].is_null(), "missing {k} in {j}");
    }
    assert_eq!(j["tables"], 2);
    assert_eq!(j["rows"], 3001);
    let gtid = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    assert_eq!(j["gtid"], gtid.as_str());
    // The default id is the UTC time and a random suffix.
    let id = j["snapshot"].as_str().unwrap();
    assert!(
        id.len() == 23 && id[..16].ends_with('Z') && id.contains('T') && id.as_bytes()[16] == b'-',
        "{id}"
    );

    // Environment variables stand in for flags.
    let env = vec![
        ("REPLSEED_SOURCE".to_string(), m.url()),
        ("REPLSEED_STAGE".to_string(), stage.clone()),
        ("REPLSEED_SNAPSHOT".to_string(), "from-env".to_string()),
        ("REPLSEED_DATABASES".to_string(), "other".to_string()),
        ("REPLSEED_JSON".to_string(), "1".to_string()),
    ];
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_replseed"));
    cmd.arg("extract").env("REPLSEED_NO_PROGRESS", "1");
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["snapshot"], "from-env");
    assert_eq!(j["tables"], 1);

    let err = extract_fails(
        &m.url(),
        &stage,
        &["--snapshot", "n", "--databases", "nope"],
    )
    .await;
    assert!(err.contains("database `nope` does not exist"), "{err}");
    // Nothing was left behind by the failed run.
    let list = replseed_ok(&["snapshots", "list", "--stage", &stage, "--json"], &[]).await;
    assert_eq!(list["incomplete"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_extract_publishes_nothing_and_leaves_nothing() {
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE big; USE big; CREATE TABLE t (id INT PRIMARY KEY, pad VARCHAR(200)); \
         INSERT INTO t SELECT seq, REPEAT(CHAR(65 + seq % 26), 200) FROM seq_1_to_400000;",
    )
    .await;
    let (dir, stage) = local_stage();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_replseed"))
        .args([
            "extract",
            "--source",
            &m.url(),
            "--stage",
            &stage,
            "--snapshot",
            "int",
            "--chunk-rows",
            "20000",
            "--threads",
            "1",
        ])
        .env("REPLSEED_NO_PROGRESS", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it has written some chunks, then ask it to stop (as cron's kill or Ctrl-C would).
    let data = dir.path().join("int/data/big/t");
    for _ in 0..500 {
        if std::fs::read_dir(&data)
            .map(|d| d.count() >= 2)
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted; nothing was published"), "{err}");
    assert!(
        !dir.path().join("int").exists(),
        "the interrupted extract left its chunks"
    );
    // The master's backup lock is gone: DDL runs.
    exec(&m, "ALTER TABLE big.t ADD COLUMN extra INT").await;
}
