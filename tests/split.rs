//! Big tables split across workers along any index: composite and string
//! primary keys, unique keys, and tables without a key (along another
//! index). Each copy must be identical, and the table must really have been
//! read as several jobs.

use std::collections::BTreeSet;

use crate::common::*;

/// The jobs a table was read in, from its chunk paths (`<job>-<part>.parquet`).
fn jobs(show: &serde_json::Value, table: &str) -> usize {
    let t = show["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == table)
        .unwrap_or_else(|| panic!("table {table} in the snapshot"));
    t["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let p = c["path"].as_str().unwrap();
            p.rsplit('/').next().unwrap()[..5].to_string()
        })
        .collect::<BTreeSet<_>>()
        .len()
}

const AWKWARD: &str = "
CREATE DATABASE sp; USE sp;
-- latin1, case- and accent-insensitive, trailing spaces, an empty string
CREATE TABLE s_latin1 (k VARCHAR(20) CHARACTER SET latin1 COLLATE latin1_swedish_ci NOT NULL,
  n INT NOT NULL, v INT, PRIMARY KEY (k, n)) ENGINE=InnoDB;
INSERT INTO s_latin1 SELECT ELT(seq % 8 + 1, 'a', 'B', CONVERT(x'E9' USING latin1), 'Ä ', 'z z', '', 'ñ', 'A'), seq, seq * 3
  FROM seq_1_to_6000;
-- binary keys with 0x00 and 0xFF bytes, of different lengths
CREATE TABLE s_bin (k VARBINARY(16) NOT NULL PRIMARY KEY, v INT);
INSERT INTO s_bin SELECT CONCAT(CHAR(seq % 256), UNHEX(LPAD(HEX(seq * 2654435761 % 4294967296), 8, '0')), IF(seq % 3 = 0, x'00FF', '')), seq
  FROM seq_1_to_6000;
-- decimal and datetime(6) composite key, negative numbers
CREATE TABLE s_dec_dt (d DECIMAL(20,6) NOT NULL, t DATETIME(6) NOT NULL, v CHAR(3), PRIMARY KEY (d, t));
INSERT INTO s_dec_dt SELECT (seq % 97) - 48.123456, TIMESTAMP('2020-01-01') + INTERVAL seq * 1234567 MICROSECOND, 'x'
  FROM seq_1_to_6000;
-- no primary key: a unique key of NOT NULL utf8mb4 columns (emoji, collation ties)
CREATE TABLE s_unique (u VARCHAR(30) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL, v INT, UNIQUE KEY uk (u));
INSERT INTO s_unique SELECT CONCAT(ELT(seq % 4 + 1, '😀', 'ß', 'ö', 'x'), seq), seq FROM seq_1_to_6000;
-- no unique key: along a nullable, non-unique index (duplicates and NULLs)
CREATE TABLE s_nokey (g INT, v VARCHAR(10), KEY gk (g));
INSERT INTO s_nokey SELECT IF(seq % 10 = 0, NULL, seq % 37), CONCAT('v', seq) FROM seq_1_to_6000;
-- no index at all: one job
CREATE TABLE s_heap (a INT, b INT);
INSERT INTO s_heap SELECT seq, seq FROM seq_1_to_6000;
-- an ENUM key is not split (its order is not its labels')
CREATE TABLE s_enum (e ENUM('z', 'a', 'm') NOT NULL, n INT NOT NULL, PRIMARY KEY (e, n));
INSERT INTO s_enum SELECT ELT(seq % 3 + 1, 'z', 'a', 'm'), seq FROM seq_1_to_6000;
ANALYZE TABLE s_latin1, s_bin, s_dec_dt, s_unique, s_nokey, s_heap, s_enum;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_with_any_key_are_split_and_copied_exactly() {
    let m = master().await;
    exec(&m, AWKWARD).await;
    let (_dir, stage) = local_stage();
    extract_ok(
        &m.url(),
        &stage,
        "sp1",
        &["--chunk-rows", "1000", "--threads", "3"],
    )
    .await;
    let show = replseed_ok(
        &["snapshots", "show", "sp1", "--stage", &stage, "--json"],
        &[],
    )
    .await;
    for t in ["s_latin1", "s_bin", "s_dec_dt", "s_unique", "s_nokey"] {
        let n = jobs(&show, t);
        assert!(n >= 4, "{t} was read in {n} job(s)");
    }
    assert_eq!(jobs(&show, "s_heap"), 1);
    assert_eq!(jobs(&show, "s_enum"), 1);
    let t = replica(2).await;
    load_ok(&stage, "sp1", &t.url(), &[]).await;
    assert_identical(&m, &t, &["sp"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_composite_key_table_is_split_at_the_default_chunk_size() {
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE big; USE big; \
         CREATE TABLE orders (tenant VARCHAR(12) CHARACTER SET latin1 NOT NULL, id INT NOT NULL, \
           amount DECIMAL(12,2), note VARCHAR(40), PRIMARY KEY (tenant, id)); \
         INSERT INTO orders SELECT CONCAT('t', seq % 53), seq, seq / 100, LEFT(MD5(seq), 30) FROM seq_1_to_1300000; \
         CREATE TABLE events (at DATETIME NOT NULL, kind INT, KEY (at)); \
         INSERT INTO events SELECT TIMESTAMP('2026-01-01') + INTERVAL (seq DIV 3) SECOND, seq % 5 FROM seq_1_to_900000; \
         ANALYZE TABLE orders, events;",
    )
    .await;
    let (_dir, stage) = local_stage();
    // Defaults: 500,000 rows per chunk, 4 threads.
    extract_ok(&m.url(), &stage, "big1", &[]).await;
    let show = replseed_ok(
        &["snapshots", "show", "big1", "--stage", &stage, "--json"],
        &[],
    )
    .await;
    assert!(jobs(&show, "orders") >= 2, "orders read in one job");
    assert!(jobs(&show, "events") >= 2, "events read in one job");
    let t = replica(2).await;
    load_ok(&stage, "big1", &t.url(), &[]).await;
    assert_identical(&m, &t, &["big"]).await;
}
