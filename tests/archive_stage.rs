//! What `snapshots list|show|prune` say and do about the binlog archive:
//! the GTID range it holds, whether each snapshot can be caught up from it,
//! and pruning the segments no kept snapshot needs.

use crate::common::*;

fn seqs(segs: &[serde_json::Value]) -> Vec<u64> {
    segs.iter().map(|s| s["seq"].as_u64().unwrap()).collect()
}

async fn writes(m: &MariaDb, base: u64) {
    exec(
        m,
        &format!(
            "USE a; INSERT INTO a.t SELECT seq + {base}, seq, 'w' FROM seq_1_to_200; \
             UPDATE a.t SET v = v + 1 WHERE id BETWEEN {base} AND {base} + 50; \
             DELETE FROM a.t WHERE id = {base} + 7;"
        ),
    )
    .await;
}

async fn list(stage: &str) -> serde_json::Value {
    replseed_ok(&["snapshots", "list", "--stage", stage, "--json"], &[]).await
}

/// Per snapshot id: `archive` in `snapshots list --json`.
fn verdicts(list: &serde_json::Value) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["archive"].as_bool().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn verdict(id: &str, yes: bool) -> (String, bool) {
    (id.to_string(), yes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_report_the_archive_and_prune_drops_only_what_no_kept_snapshot_needs() {
    let (dir, stage) = local_stage();
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE a; USE a; CREATE TABLE a.t (id INT PRIMARY KEY, v INT, c VARCHAR(20)); \
         INSERT INTO a.t SELECT seq, seq, 'before' FROM seq_1_to_1000;",
    )
    .await;
    let s0 = extract_ok(&m.url(), &stage, "s0", &["--no-accounts", "--json"]).await;
    // No archive yet: nothing can be caught up from it.
    let l = list(&stage).await;
    assert!(l["archive_range"].is_null(), "{l}");
    assert_eq!(verdicts(&l), vec![verdict("s0", false)]);

    writes(&m, 10_000).await;
    exec(&m, "FLUSH BINARY LOGS").await;
    let s1 = extract_ok(&m.url(), &stage, "s1", &["--no-accounts", "--json"]).await;
    writes(&m, 20_000).await;
    // The archive starts at the oldest snapshot, s0.
    archive_now(&m, &stage).await;
    writes(&m, 30_000).await;
    exec(&m, "FLUSH BINARY LOGS").await;
    let s2 = extract_ok(&m.url(), &stage, "s2", &["--no-accounts", "--json"]).await;
    writes(&m, 40_000).await;
    archive_now(&m, &stage).await;
    let goal = scalar(&m, "SELECT @@gtid_binlog_pos").await;

    let (g0, g1, g2) = (
        s0["gtid"].as_str().unwrap(),
        s1["gtid"].as_str().unwrap(),
        s2["gtid"].as_str().unwrap(),
    );
    assert!(d0(g0) < d0(g1) && d0(g1) < d0(g2), "{g0} {g1} {g2}");
    let segs = archive_segments(dir.path());
    // One segment per master binlog file at least: s0..s1, s1.., ..s2, s2..
    assert!(segs.len() >= 4, "{segs:?}");
    assert_eq!(segs[0]["start_state"].as_str().unwrap(), g0);

    let l = list(&stage).await;
    let r = &l["archive_range"];
    assert_eq!(r["start_state"].as_str().unwrap(), g0, "{l}");
    assert_eq!(r["end_state"].as_str().unwrap(), goal, "{l}");
    assert_eq!(r["segments"].as_u64().unwrap(), segs.len() as u64, "{l}");
    assert_eq!(r["first_seq"], 1, "{l}");
    let stored: u64 = segs
        .iter()
        .map(|s| s["bytes_stored"].as_u64().unwrap())
        .sum();
    assert_eq!(r["bytes_stored"].as_u64().unwrap(), stored, "{l}");
    assert!(stored > 0);
    assert_eq!(r["chain_breaks"].as_array().unwrap().len(), 0, "{l}");
    assert_eq!(
        verdicts(&l),
        vec![
            verdict("s0", true),
            verdict("s1", true),
            verdict("s2", true)
        ],
        "{l}"
    );

    // A trimmed archive: its first segment is gone, so it starts after s0.
    for ext in ["json", "bin.zst"] {
        std::fs::remove_file(
            dir.path()
                .join(format!(".binlog/segments/000000000001.{ext}")),
        )
        .unwrap();
    }
    let segs = archive_segments(dir.path());
    let start = segs[0]["start_state"].as_str().unwrap().to_string();
    assert!(d0(g0) < d0(&start) && d0(&start) <= d0(g1), "{start}");
    let l = list(&stage).await;
    assert_eq!(l["archive_range"]["start_state"].as_str().unwrap(), start);
    assert_eq!(l["archive_range"]["first_seq"], 2, "{l}");
    assert_eq!(
        verdicts(&l),
        vec![
            verdict("s0", false),
            verdict("s1", true),
            verdict("s2", true)
        ],
        "{l}"
    );
    // The human list says the same, and names the range.
    let out = replseed(&["snapshots", "list", "--stage", &stage], &[]).await;
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{human}");
    for (id, word) in [("s0", "no"), ("s1", "yes"), ("s2", "yes")] {
        let line = human
            .lines()
            .find(|l| l.starts_with(&format!("{id}  ")))
            .unwrap_or_else(|| panic!("no line for {id}:\n{human}"));
        assert!(line.ends_with(&format!("archive {word}")), "{line}");
    }
    assert!(
        human.contains(&format!("binlog archive: '{start}' .. '{goal}'")),
        "{human}"
    );
    // `show`: the verdict, why, and the range.
    let show0 = replseed_ok(
        &["snapshots", "show", "s0", "--stage", &stage, "--json"],
        &[],
    )
    .await;
    assert_eq!(show0["archive"], false, "{show0}");
    assert!(
        show0["archive_reason"]
            .as_str()
            .unwrap()
            .contains("starts at"),
        "{show0}"
    );
    assert_eq!(show0["archive_range"], l["archive_range"]);
    let show2 = replseed_ok(
        &["snapshots", "show", "s2", "--stage", &stage, "--json"],
        &[],
    )
    .await;
    assert_eq!(show2["archive"], true, "{show2}");
    assert!(show2["archive_reason"].is_null(), "{show2}");
    let out = replseed(&["snapshots", "show", "s0", "--stage", &stage], &[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("catch-up   from the archive: no (the archive starts at"),
        "{text}"
    );

    // Keep s2: exactly the segments entirely before it go, lowest first.
    let before: Vec<u64> = segs
        .iter()
        .take_while(|s| d0(s["end_state"].as_str().unwrap()) <= d0(g2))
        .map(|s| s["seq"].as_u64().unwrap())
        .collect();
    assert!(before.len() >= 2, "{segs:?}");
    let p = prune(&stage, 1).await;
    assert_eq!(p["kept"], serde_json::json!(["s2"]), "{p}");
    let mut deleted: Vec<String> = p["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    deleted.sort();
    assert_eq!(deleted, vec!["s0", "s1"], "{p}");
    assert_eq!(p["in_use"].as_array().unwrap().len(), 0, "{p}");
    assert_eq!(p["segments_deleted"], serde_json::json!(before), "{p}");
    let left = archive_segments(dir.path());
    assert_eq!(
        seqs(&left),
        seqs(&segs)[before.len()..].to_vec(),
        "only those segments were removed"
    );
    for s in &before {
        for ext in ["json", "bin.zst"] {
            assert!(!dir
                .path()
                .join(format!(".binlog/segments/{s:012}.{ext}"))
                .exists());
        }
    }
    // What is left still reaches back to s2, and on to the master's position.
    assert!(d0(left[0]["start_state"].as_str().unwrap()) <= d0(g2));
    assert!(d0(left[0]["end_state"].as_str().unwrap()) > d0(g2));
    let l = list(&stage).await;
    assert_eq!(verdicts(&l), vec![verdict("s2", true)], "{l}");
    assert_eq!(l["archive_range"]["end_state"].as_str().unwrap(), goal);
    assert_eq!(
        l["archive_range"]["chain_breaks"].as_array().unwrap().len(),
        0
    );

    // Again: nothing more to remove.
    let p = prune(&stage, 1).await;
    assert_eq!(p["segments_deleted"], serde_json::json!([]), "{p}");
    assert_eq!(seqs(&archive_segments(dir.path())), seqs(&left));
}
