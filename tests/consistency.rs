//! One consistent cut while the master commits: the recorded GTID matches
//! the data exactly, across workers and engines; and a replica provisioned
//! under load converges to the master.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use replseed_stage::manifest::Manifest;

use crate::common::*;

/// Writers: each InnoDB transaction inserts row `i` into w1 and w2 (one GTID);
/// a second writer inserts into the MyISAM table (one GTID each).
struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
    committed: Arc<AtomicU64>,
}

async fn start_writers(master: &MariaDb) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    {
        let (stop, url, committed) = (stop.clone(), master.url(), committed.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = mysql_async::Conn::from_url(url).await.unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                c.query_drop(format!(
                    "BEGIN; INSERT INTO cons.w1 VALUES ({i}, REPEAT('a', {})); INSERT INTO cons.w2 VALUES ({i}); UPDATE cons.counter SET n = n + 1; COMMIT",
                    i % 50
                ))
                .await
                .unwrap();
                committed.fetch_add(1, Ordering::Relaxed);
            }
            i
        }));
    }
    {
        let (stop, url) = (stop.clone(), master.url());
        tasks.push(tokio::spawn(async move {
            let mut c = mysql_async::Conn::from_url(url).await.unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                c.query_drop(format!("INSERT INTO cons.my VALUES ({i})"))
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            i
        }));
    }
    Writers {
        stop,
        tasks,
        committed,
    }
}

impl Writers {
    async fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for t in self.tasks {
            out.push(t.await.unwrap());
        }
        out
    }
}

const SCHEMA: &str = "CREATE DATABASE cons; USE cons; \
    CREATE TABLE cons.w1 (id BIGINT PRIMARY KEY, pad VARCHAR(60)) ENGINE=InnoDB; \
    CREATE TABLE cons.w2 (id BIGINT PRIMARY KEY) ENGINE=InnoDB; \
    CREATE TABLE cons.counter (n BIGINT NOT NULL) ENGINE=InnoDB; INSERT INTO cons.counter VALUES (0); \
    CREATE TABLE cons.my (id BIGINT PRIMARY KEY) ENGINE=MyISAM; \
    CREATE TABLE cons.filler (id INT PRIMARY KEY, pad VARCHAR(200)); \
    INSERT INTO cons.filler SELECT seq, REPEAT('f', 200) FROM seq_1_to_150000;";

fn seq_of(gtid: &str) -> u64 {
    gtid.split(',')
        .find(|g| g.starts_with("0-1-"))
        .and_then(|g| g.rsplit('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn manifest(dir: &std::path::Path, id: &str) -> Manifest {
    serde_json::from_slice(&std::fs::read(dir.join(id).join("manifest.json")).unwrap()).unwrap()
}

fn rows_of(m: &Manifest, t: &str) -> u64 {
    m.tables().find(|(_, x)| x.name == t).unwrap().1.rows
}

/// Checks that the snapshot is exactly the master at its GTID: every
/// transaction before it, none after.
fn assert_cut(m: &Manifest, base_seq: u64) {
    let (w1, w2, my) = (rows_of(m, "w1"), rows_of(m, "w2"), rows_of(m, "my"));
    assert_eq!(w1, w2, "w1 and w2 were read at different points");
    assert!(
        w1 > 0,
        "the writer had not started: the test proves nothing"
    );
    let seq = seq_of(&m.position.gtid);
    assert_eq!(
        seq - base_seq,
        w1 + my,
        "GTID {} is {} transactions after the start, but the data holds {w1} InnoDB and {my} MyISAM transactions",
        m.position.gtid,
        seq - base_seq
    );
    assert_eq!(
        m.consistency
            .worker_positions
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gtid_matches_the_data_while_writers_commit() {
    let master = master().await;
    exec(&master, SCHEMA).await;
    let base = seq_of(&scalar(&master, "SELECT @@gtid_binlog_pos").await);
    let (dir, stage) = local_stage();
    let writers = start_writers(&master).await;
    while writers.committed.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Lock-free path, then the FTWRL path, both under writes.
    let a = extract_ok(
        &master.url(),
        &stage,
        "lf",
        &["--threads", "4", "--chunk-rows", "20000", "--json"],
    )
    .await;
    let b = extract_ok(
        &master.url(),
        &stage,
        "fl",
        &["--threads", "4", "--lock-free-attempts", "0", "--json"],
    )
    .await;
    let done = writers.stop().await;
    assert!(done[0] > 0);
    assert_eq!(b["consistency"]["method"], "ftwrl");
    let lf = manifest(dir.path(), "lf");
    let fl = manifest(dir.path(), "fl");
    assert_cut(&lf, base);
    assert_cut(&fl, base);
    assert!(
        fl.consistency.commit_blocked_ms < 5_000,
        "commits blocked {} ms",
        fl.consistency.commit_blocked_ms
    );
    assert!(a["consistency"]["ddl_blocked_ms"].as_u64().unwrap() > 0);
    assert!(seq_of(&fl.position.gtid) > seq_of(&lf.position.gtid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_provisioned_under_writes_converges_to_the_master() {
    let master = master().await;
    exec(&master, SCHEMA).await;
    let replica = replica(2).await;
    let (_dir, stage) = local_stage();
    let writers = start_writers(&master).await;
    while writers.committed.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    extract_ok(&master.url(), &stage, "w", &["--threads", "3"]).await;
    load_ok(&stage, "w", &replica.url(), &[]).await;
    // Catch up while the writers still run: exit 0 means caught up with the
    // master's position at the start of the catch-up, and replicating.
    let c = replseed_ok(
        &[
            catchup_args(&stage, "w", &master.url(), &replica.url()),
            vec!["--json"],
        ]
        .concat(),
        &[],
    )
    .await;
    assert_eq!(c["caught_up"], true);
    assert!(
        seq_of(c["gtid_reached"].as_str().unwrap()) >= seq_of(c["gtid_goal"].as_str().unwrap())
    );
    // verify under writes pins both sides to one GTID.
    let v = replseed_ok(
        &[verify_args(&master.url(), &replica.url()), vec!["--json"]].concat(),
        &[],
    )
    .await;
    assert_eq!(v["differences"].as_array().unwrap().len(), 0, "{v}");
    assert!(v["method"].as_str().unwrap().contains("stopped at"));
    writers.stop().await;
    let goal = scalar(&master, "SELECT @@gtid_binlog_pos").await;
    let waited = scalar(&replica, &format!("SELECT MASTER_GTID_WAIT('{goal}', 60)")).await;
    assert_eq!(waited, "0");
    assert_identical(&master, &replica, &["cons"]).await;
    let st = scalar(&replica, "SELECT COUNT(*) FROM cons.w1").await;
    assert_eq!(st, scalar(&master, "SELECT COUNT(*) FROM cons.w1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_waits_while_an_extract_runs() {
    let master = master().await;
    exec(
        &master,
        "CREATE DATABASE d; USE d; CREATE TABLE t (id INT PRIMARY KEY, pad VARCHAR(200)); \
         INSERT INTO t SELECT seq, REPEAT('x', 200) FROM seq_1_to_600000; CREATE TABLE other (id INT PRIMARY KEY);",
    )
    .await;
    let (dir, stage) = local_stage();
    let url = master.url();
    let extract = tokio::spawn(async move {
        extract_ok(
            &url,
            &stage,
            "ddl",
            &["--threads", "1", "--chunk-rows", "10000", "--json"],
        )
        .await
    });
    // Wait until the extract is copying rows.
    for _ in 0..500 {
        if std::fs::read_dir(dir.path().join("ddl/data/d/t"))
            .map(|d| d.count() >= 1)
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // A DDL statement issued now waits for the extract's backup lock.
    let url = master.url();
    let alter = tokio::spawn(async move {
        let mut c = mysql_async::Conn::from_url(url).await.unwrap();
        c.query_drop("ALTER TABLE d.other ADD COLUMN x INT").await
    });
    let mut waited = false;
    for _ in 0..200 {
        let state = scalar(&master, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'ALTER TABLE d.other%' AND STATE LIKE '%backup lock%'").await;
        if state == "1" {
            waited = true;
            break;
        }
        if alter.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let j = extract.await.unwrap();
    assert!(
        waited,
        "the ALTER did not wait for the extract's backup lock"
    );
    assert_eq!(j["snapshot"], "ddl");
    // Once the extract is done, the DDL goes through.
    alter.await.unwrap().unwrap();
    let mut c = master.conn().await.unwrap();
    c.query_drop("ALTER TABLE d.other ADD COLUMN y INT")
        .await
        .unwrap();
}
