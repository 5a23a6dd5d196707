//! Fidelity on schemas real fleets carry: keys an AUTO_INCREMENT column
//! needs, definitions written by non-UTF-8 clients, JSON in a non-UTF-8
//! column, enabled events, values the target would change, and a retry
//! right after a refused provision.

use std::time::Duration;

use arrow::array::RecordBatchReader;
use mysql_async::prelude::Queryable;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_tenant_auto_increment_keys_load_and_replicate() {
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE mt; USE mt; \
         CREATE TABLE t (tenant INT NOT NULL, id BIGINT NOT NULL AUTO_INCREMENT, v VARCHAR(20), \
           PRIMARY KEY (tenant, id), KEY v (v), KEY id (id)) ENGINE=InnoDB; \
         INSERT INTO t (tenant, v) SELECT seq % 7, CONCAT('v', seq) FROM seq_1_to_30000; \
         CREATE TABLE u (a INT NOT NULL, b INT NOT NULL AUTO_INCREMENT, c INT, \
           PRIMARY KEY (a, b), UNIQUE KEY bc (b, c)) ENGINE=InnoDB; \
         INSERT INTO u (a, c) SELECT seq % 3, seq FROM seq_1_to_1000;",
    )
    .await;
    let t = replica(2).await;
    let (_d, stage) = local_stage();
    provision_ok(&m, &t, &stage, &[]).await;
    assert_identical(&m, &t, &["mt"]).await;
    still_replicating(
        &m,
        &t,
        "INSERT INTO mt.t (tenant, v) VALUES (3, 'after'); INSERT INTO mt.u (a, c) VALUES (1, 5)",
    )
    .await;
    assert_identical(&m, &t, &["mt"]).await;
}

/// Definitions as a client in another character set wrote them.
const NON_UTF8_OBJECTS: &[(&str, &str)] = &[
    (
        "latin1",
        "CREATE TRIGGER l1 BEFORE INSERT ON t FOR EACH ROW SET NEW.note = CONCAT(NEW.note, ' caf\u{e9}'); \
         CREATE VIEW vl1 AS SELECT id, 'na\u{ef}ve \u{e9}t\u{e9}' AS label FROM t; \
         CREATE PROCEDURE pl1() SELECT 'Gr\u{fc}\u{df}e' AS greeting /* \u{e0} bient\u{f4}t */; \
         CREATE FUNCTION fl1() RETURNS VARCHAR(20) DETERMINISTIC RETURN 'se\u{f1}or'; \
         CREATE EVENT el1 ON SCHEDULE EVERY 1 DAY DISABLE COMMENT 'daily' DO INSERT INTO t (note) VALUES ('d\u{e9}j\u{e0} vu');",
    ),
    (
        "cp1251",
        "CREATE TRIGGER c1 BEFORE UPDATE ON t FOR EACH ROW SET NEW.note = '\u{41f}\u{440}\u{438}\u{432}\u{435}\u{442}'; \
         CREATE VIEW vc1 AS SELECT '\u{41c}\u{43e}\u{441}\u{43a}\u{432}\u{430}' AS city;",
    ),
    (
        "koi8r",
        "CREATE PROCEDURE pk1() SELECT '\u{414}\u{430}' AS yes;",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_from_non_utf8_clients_are_byte_identical() {
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE cs; CREATE TABLE cs.t (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(100) CHARACTER SET utf8mb4)",
    )
    .await;
    // Each client sends its own bytes: the statements are transcoded to
    // the client's character set before they are sent.
    for (charset, sql) in NON_UTF8_OBJECTS {
        let mut c = m.conn().await.unwrap();
        c.query_drop(format!("SET NAMES {charset}")).await.unwrap();
        c.query_drop("USE cs").await.unwrap();
        for stmt in sql.split("; ") {
            let bytes = encode(charset, stmt);
            c.query_drop(bytes)
                .await
                .unwrap_or_else(|e| panic!("{charset}: {stmt}: {e}"));
        }
        c.disconnect().await.ok();
    }
    let t = replica(2).await;
    let (_d, stage) = local_stage();
    provision_ok(&m, &t, &stage, &[]).await;
    assert_identical(&m, &t, &["cs"]).await;
    // The raw definitions, and what information_schema makes of them.
    let raw = "SET character_set_results=binary; SELECT 1";
    for sql in [
        "SELECT TRIGGER_NAME, HEX(ACTION_STATEMENT), CHARACTER_SET_CLIENT, COLLATION_CONNECTION FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA='cs' ORDER BY 1",
        "SELECT TABLE_NAME, HEX(VIEW_DEFINITION), CHARACTER_SET_CLIENT, COLLATION_CONNECTION FROM information_schema.VIEWS WHERE TABLE_SCHEMA='cs' ORDER BY 1",
        "SELECT ROUTINE_NAME, HEX(ROUTINE_DEFINITION), CHARACTER_SET_CLIENT, COLLATION_CONNECTION FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA='cs' ORDER BY 1",
        "SELECT EVENT_NAME, HEX(EVENT_DEFINITION), HEX(EVENT_COMMENT), CHARACTER_SET_CLIENT FROM information_schema.EVENTS WHERE EVENT_SCHEMA='cs' ORDER BY 1",
    ] {
        let a = rows_text(&m, sql).await;
        let b = rows_text(&t, sql).await;
        assert!(!a.is_empty(), "{sql}");
        assert_eq!(a, b, "{sql}");
    }
    for (kind, name, col) in [
        ("TRIGGER", "l1", 2),
        ("TRIGGER", "c1", 2),
        ("VIEW", "vl1", 1),
        ("VIEW", "vc1", 1),
        ("PROCEDURE", "pl1", 2),
        ("PROCEDURE", "pk1", 2),
        ("FUNCTION", "fl1", 2),
        ("EVENT", "el1", 3),
    ] {
        let sql = format!("SHOW CREATE {kind} cs.{name}");
        let a = raw_column(&m, raw, &sql, col).await;
        let b = raw_column(&t, raw, &sql, col).await;
        assert_eq!(hex::encode(&a), hex::encode(&b), "{sql}");
    }
    // The trigger still writes the right text on the replica.
    still_replicating(&m, &t, "INSERT INTO cs.t (note) VALUES ('x')").await;
    assert_eq!(
        scalar(&t, "SELECT HEX(note) FROM cs.t ORDER BY id DESC LIMIT 1").await,
        scalar(&m, "SELECT HEX(note) FROM cs.t ORDER BY id DESC LIMIT 1").await
    );
    assert_eq!(
        scalar(&t, "SELECT note FROM cs.t ORDER BY id DESC LIMIT 1").await,
        "x caf\u{e9}"
    );
}

/// `s` in a client character set (the few this test uses).
fn encode(charset: &str, s: &str) -> Vec<u8> {
    s.chars()
        .map(|ch| {
            let c = ch as u32;
            if c < 0x80 {
                return c as u8;
            }
            match charset {
                "latin1" if c <= 0xff => c as u8,
                // Cyrillic А..я: cp1251 0xC0..0xFF in order.
                "cp1251" if (0x410..=0x44f).contains(&c) => (c - 0x410 + 0xc0) as u8,
                "koi8r" => match ch {
                    'Д' => 0xe4,
                    'а' => 0xc1,
                    _ => panic!("no koi8r byte for {ch}"),
                },
                _ => panic!("no {charset} byte for {ch}"),
            }
        })
        .collect()
}

async fn rows_text(db: &MariaDb, sql: &str) -> Vec<Vec<String>> {
    let mut c = db.conn().await.unwrap();
    let r = query(&mut c, sql).await;
    c.disconnect().await.ok();
    r.iter().map(|r| r.iter().map(text).collect()).collect()
}

async fn raw_column(db: &MariaDb, setup: &str, sql: &str, col: usize) -> Vec<u8> {
    let mut c = db.conn().await.unwrap();
    c.query_drop(setup).await.unwrap();
    let r = query(&mut c, sql).await;
    c.disconnect().await.ok();
    match &r[0][col] {
        mysql_async::Value::Bytes(b) => b.clone(),
        other => panic!("{sql}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_in_a_non_utf8_column_is_copied() {
    let m = master().await;
    exec(
        &m,
        "SET NAMES utf8mb4; CREATE DATABASE js; CREATE TABLE js.t (id INT PRIMARY KEY, \
           j LONGTEXT CHARACTER SET latin1 CHECK (json_valid(j)), \
           k JSON, l TEXT CHARACTER SET cp1251 CHECK (json_valid(l))); \
         INSERT INTO js.t VALUES (1, '{\"caf\u{e9}\": \"cr\u{e8}me\"}', '{\"a\": [1, 2.50, \"\u{1f600}\"]}', '[\"\u{41f}\"]'), \
           (2, NULL, NULL, NULL), (3, '[]', '{}', '{\"x\": null}');",
    )
    .await;
    let t = replica(2).await;
    let (_d, stage) = local_stage();
    provision_ok(&m, &t, &stage, &[]).await;
    assert_identical(&m, &t, &["js"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enabled_event_never_runs_on_the_replica() {
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE ev; CREATE TABLE ev.ticks (id INT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6)); \
         CREATE EVENT ev.tick ON SCHEDULE EVERY 1 SECOND ON COMPLETION PRESERVE ENABLE DO INSERT INTO ev.ticks (at) VALUES (NOW(6));",
    )
    .await;
    let t = MariaDb::start_with(MariaDbOptions {
        server_id: 2,
        extra_args: vec!["--event-scheduler=ON".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let (_d, stage) = local_stage();
    provision_ok(&m, &t, &stage, &[]).await;
    assert_eq!(
        scalar(
            &t,
            "SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_NAME='tick'"
        )
        .await,
        "SLAVESIDE_DISABLED"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Only the master's ticks, replicated: the replica wrote no transaction of its own.
    let own = scalar(&t, "SELECT @@gtid_binlog_pos").await;
    assert!(
        !own.split(',').any(|g| g.split('-').nth(1) == Some("2")),
        "replica's own GTIDs: {own}"
    );
    exec(&m, "ALTER EVENT ev.tick DISABLE").await;
    still_replicating(&m, &t, "INSERT INTO ev.ticks (at) VALUES (NOW(6))").await;
    assert_eq!(
        scalar(&t, "SELECT CONCAT(COUNT(*), ' ', MAX(id)) FROM ev.ticks").await,
        scalar(&m, "SELECT CONCAT(COUNT(*), ' ', MAX(id)) FROM ev.ticks").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_target_would_change_stops_the_load_naming_it() {
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE wv; USE wv; CREATE TABLE wv.t (id INT PRIMARY KEY, note VARCHAR(40)); \
         INSERT INTO wv.t SELECT seq, IF(seq = 777, 'a rather long note', 'ok') FROM seq_1_to_1000;",
    )
    .await;
    let (dir, stage) = local_stage();
    extract_ok(&m.url(), &stage, "w1", &[]).await;
    // A target whose column is narrower than the data (here: a manifest
    // edited by hand) would truncate one value silently.
    let path = dir.path().join("w1/manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("`note` varchar(40)", "`note` varchar(5)"),
    )
    .unwrap();
    let t = replica(2).await;
    let err = load_fails(&stage, "w1", &t.url(), &[]).await;
    assert!(err.contains("w1/data/wv/t/"), "names the chunk: {err}");
    assert!(err.contains("`note`"), "names the column: {err}");
    assert!(err.contains("a rather long note"), "names the value: {err}");
    assert_eq!(
        scalar(&t, "SELECT COUNT(*) FROM wv.t").await,
        "0",
        "nothing half-loaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_provision_costs_nothing_and_force_succeeds_at_once() {
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE rp; USE rp; CREATE TABLE rp.t (id INT PRIMARY KEY); INSERT INTO rp.t SELECT seq FROM seq_1_to_100;",
    )
    .await;
    let t = replica(2).await;
    exec(
        &t,
        "CREATE DATABASE rp; USE rp; CREATE TABLE rp.t (id INT PRIMARY KEY, x INT)",
    )
    .await;
    let (_d, stage) = local_stage();
    let args = provision_args(&m, &t, &stage, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = replseed_fails(&args, &[], 1).await;
    assert!(err.contains("table `rp`.`t`"), "{err}");
    assert!(err.contains("nothing was extracted"), "{err}");
    let published = snapshot_ids(&stage, &[]).await;
    assert!(published.is_empty(), "published: {published:?}");
    // The retry, within the same second.
    let j = replseed_ok(&[&args[..], &["--force", "--json"]].concat(), &[]).await;
    assert_eq!(j["ok"], true, "{j}");
    assert_identical(&m, &t, &["rp"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_enum_and_set_shape_survives_with_its_invalid_values() {
    let m = master().await;
    exec(
        &m,
        "SET NAMES utf8mb4; SET sql_mode=''; CREATE DATABASE en; USE en; \
         CREATE TABLE e (id INT PRIMARY KEY, \
           a ENUM('a','b','c d','') NULL, \
           b ENUM('x','y') NOT NULL DEFAULT 'y', \
           n ENUM('2','1','0'), \
           q ENUM('it''s','back\\\\slash','tab\\there'), \
           l ENUM('caf\u{e9}','na\u{ef}ve') CHARACTER SET latin1, \
           cs ENUM('A','a','B') CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, \
           s SET('p','q',''), \
           t SET('x','y') NOT NULL, \
           w SET('a0','a1','a2','a3','a4','a5','a6','a7','a8','a9','b0','b1','b2','b3','b4','b5','b6','b7','b8','b9', \
                 'c0','c1','c2','c3','c4','c5','c6','c7','c8','c9','d0','d1','d2','d3','d4','d5','d6','d7','d8','d9', \
                 'e0','e1','e2','e3','e4','e5','e6','e7','e8','e9','f0','f1','f2','f3','f4','f5','f6','f7','f8','f9', \
                 'g0','g1','g2','g3')); \
         INSERT INTO e VALUES \
           (1, 'a', 'x', '2', 'it''s', 'caf\u{e9}', 'A', 'p', 'x', 'a0'), \
           (2, '', 'y', '0', 'back\\\\slash', 'na\u{ef}ve', 'a', '', '', ''), \
           (3, 'zzz', 'zzz', 'zzz', 'zzz', 'zzz', 'zzz', ',', 'x,y', 'a0,g3'), \
           (4, NULL, 'y', NULL, NULL, NULL, NULL, NULL, 'y', NULL), \
           (5, 0, 0, 3, 3, 2, 3, 7, 3, 18446744073709551615), \
           (6, 'c d', 'x', '1', 'tab\\there', 'caf\u{e9}', 'B', 'q,', 'y,x', 'g3,a0');",
    )
    .await;
    // The invalid value and the '' member look the same as labels; only
    // the member numbers tell them apart.
    assert_eq!(
        scalar(
            &m,
            "SELECT CONCAT(a+0, ' ', b+0, ' ', n+0) FROM en.e WHERE id=3"
        )
        .await,
        "0 0 0"
    );
    assert_eq!(scalar(&m, "SELECT a+0 FROM en.e WHERE id=2").await, "4");
    assert_eq!(
        scalar(
            &m,
            "SELECT CONCAT(s+0, ' ', (SELECT s+0 FROM en.e WHERE id=2)) FROM en.e WHERE id=3"
        )
        .await,
        "4 0"
    );
    let t = replica(2).await;
    let (dir, stage) = local_stage();
    let j = provision_ok(&m, &t, &stage, &[]).await;
    assert_identical(&m, &t, &["en"]).await;
    let numbers = "SELECT GROUP_CONCAT(CONCAT_WS(':', id, a+0, b+0, n+0, q+0, l+0, cs+0, s+0, t+0, w+0) ORDER BY id) FROM en.e";
    assert_eq!(scalar(&t, numbers).await, scalar(&m, numbers).await);
    // The labels stay readable in the Parquet file, next to the numbers.
    let id = j["snapshot"].as_str().unwrap();
    let chunk = std::fs::read_dir(dir.path().join(id).join("data/en/e"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(chunk).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let names: Vec<String> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert!(
        names.contains(&"a".to_string()) && names.contains(&"a#index".to_string()),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subset_replica_replicates_its_databases_and_reports_a_lost_filter() {
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE keep_1; CREATE TABLE keep_1.t (id INT PRIMARY KEY, v INT); \
         CREATE DATABASE other; CREATE TABLE other.t (id INT PRIMARY KEY, v INT); \
         INSERT INTO keep_1.t VALUES (1, 1); INSERT INTO other.t VALUES (1, 1); \
         CREATE PROCEDURE other.old() SELECT 1; CREATE VIEW other.w AS SELECT 2 AS two;",
    )
    .await;
    let t = replica(2).await;
    let (_d, stage) = local_stage();
    let j = provision_ok(&m, &t, &stage, &["--databases", "keep_1"]).await;
    assert_eq!(j["ok"], true, "{j}");
    // `other` is there with its routines and no table or view, so that
    // statements about its routines apply (catchup's filters.rs).
    assert_eq!(
        scalar(
            &t,
            "SELECT CONCAT((SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='other'), ',', \
             (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='other'), ',', \
             (SELECT GROUP_CONCAT(ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA='other'))"
        )
        .await,
        "1,0,old"
    );
    // Writes inside and outside the subset, DDL included, with any default database.
    exec(
        &m,
        "USE keep_1; INSERT INTO other.t VALUES (2, 2); UPDATE other.t SET v = 3; \
         INSERT INTO keep_1.t VALUES (2, 2); USE other; INSERT INTO keep_1.t VALUES (3, 3); \
         CREATE TABLE other.t2 (id INT); ALTER TABLE keep_1.t ADD COLUMN w INT; \
         CREATE PROCEDURE other.p() SELECT 1; CREATE FUNCTION other.f() RETURNS INT DETERMINISTIC RETURN 1; \
         CREATE EVENT other.e ON SCHEDULE EVERY 1 DAY DISABLE DO SELECT 1; \
         CREATE VIEW other.v AS SELECT 1 AS one; CREATE TRIGGER other.tr BEFORE INSERT ON other.t FOR EACH ROW SET NEW.v = 9; \
         ALTER DATABASE other CHARACTER SET latin1; CREATE DATABASE other_2; \
         USE keep_1; ALTER PROCEDURE other.p COMMENT 'x'; DROP PROCEDURE other.p; DROP FUNCTION other.f; \
         DROP PROCEDURE other.old; CREATE PROCEDURE other_2.p() SELECT 2; CREATE TABLE other_2.t (id INT); \
         DROP EVENT other.e;",
    )
    .await;
    still_replicating(&m, &t, "DO 1").await;
    // Tables, views and triggers outside the subset stay out; routines and
    // databases follow the master's.
    assert_eq!(
        scalar(
            &t,
            "SELECT CONCAT((SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA LIKE 'other%'), ',', \
             (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA LIKE 'other%'), ',', \
             (SELECT GROUP_CONCAT(CONCAT(ROUTINE_SCHEMA, '.', ROUTINE_NAME) ORDER BY 1) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA LIKE 'other%'), ',', \
             (SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='other'))"
        )
        .await,
        "0,0,other_2.p,latin1"
    );
    exec(&m, "DROP DATABASE other; DROP DATABASE other_2;").await;
    still_replicating(&m, &t, "INSERT INTO keep_1.t VALUES (4, 4, 4)").await;
    assert_identical(&m, &t, &["keep_1"]).await;
    let v = replseed(&verify_args(&m.url(), &t.url()), &[]).await;
    assert!(
        v.status.success(),
        "verify of the subset: {}",
        String::from_utf8_lossy(&v.stderr)
    );

    // The filter is lost (as after a restart without it in my.cnf).
    exec(
        &t,
        "STOP SLAVE; SET GLOBAL replicate_wild_do_table=''; START SLAVE",
    )
    .await;
    let id = j["snapshot"].as_str().unwrap();
    let (mu, tu) = (m.url(), t.url());
    let err = replseed_fails(&catchup_args(&stage, id, &mu, &tu), &[], 1).await;
    assert!(
        err.contains("replicate_wild_do_table = keep\\_1.%"),
        "{err}"
    );
    let out = replseed(&verify_args(&mu, &tu), &[]).await;
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // verify's differences are a report, on stdout; its error on stderr.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("replication filter"), "{said}");
}
