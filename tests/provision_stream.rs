//! `replseed serve --snapshot` (issue 19): a stock, empty replica with
//! only CHANGE MASTER and START SLAVE gets the snapshot through its own IO
//! and SQL threads, then the archive from the snapshot's GTID, and stays a
//! replica; a replica holding a database of the snapshot stops before
//! anything changes; `--force` replaces the snapshot's objects.

use crate::common::*;

const SCHEMA: &str = "
SET foreign_key_checks=0;
CREATE DATABASE p CHARACTER SET utf8mb4;
USE p;
CREATE TABLE child (id INT PRIMARY KEY, a_id INT NOT NULL, KEY (a_id),
  FOREIGN KEY (a_id) REFERENCES a (id)) ENGINE=InnoDB;
CREATE TABLE a (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40), d DECIMAL(10,2),
  t DATETIME(3), KEY k (v)) ENGINE=InnoDB;
INSERT INTO a (v, d, t) SELECT CONCAT('row', seq), seq / 7, '2024-01-01 00:00:00.123' + INTERVAL seq SECOND FROM seq_1_to_5000;
INSERT INTO child SELECT seq, seq FROM seq_1_to_300;
CREATE TABLE l1 (id INT PRIMARY KEY, c VARCHAR(10)) CHARACTER SET latin1 COMMENT 'caf\u{e9}';
INSERT INTO l1 VALUES (1, 'd\u{e9}j\u{e0}'), (2, NULL);
CREATE TABLE my (id INT PRIMARY KEY, x INT) ENGINE=MyISAM;
INSERT INTO my VALUES (1, 1), (2, 2);
CREATE SEQUENCE s START WITH 100;
DO NEXTVAL(s);
CREATE VIEW va AS SELECT id, v FROM a WHERE id < 10;
CREATE VIEW vb AS SELECT COUNT(*) AS n FROM va;
CREATE FUNCTION f(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
CREATE TRIGGER tr BEFORE INSERT ON child FOR EACH ROW SET NEW.id = NEW.id;
CREATE EVENT ev ON SCHEDULE EVERY 1 DAY DO DELETE FROM my WHERE id > 1000;
";

/// A master holding SCHEMA, its snapshot `s1` (in chunks of 1000 rows),
/// writes after the snapshot, and the archive holding them.
async fn setup() -> (MariaDb, tempfile::TempDir, String) {
    let m = master().await;
    exec(&m, SCHEMA).await;
    let (dir, stage) = local_stage();
    extract_ok(
        &m.url(),
        &stage,
        "s1",
        &["--databases", "p", "--chunk-rows", "1000"],
    )
    .await;
    // Written after the snapshot: they come from the archive.
    exec(
        &m,
        "INSERT INTO p.a (v) VALUES ('after'); UPDATE p.l1 SET c = 'x' WHERE id = 2",
    )
    .await;
    archive_now(&m, &stage).await;
    (m, dir, stage)
}

/// CHANGE MASTER to serve, as a user would, and START SLAVE.
async fn point_at(t: &MariaDb, port: u16) {
    exec(
        t,
        &format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, MASTER_USER='repl', \
             MASTER_PASSWORD='s3cret', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE"
        ),
    )
    .await;
}

/// Waits until the replica has the master's current GTID position
/// (archived first), panicking with its slave status if it does not.
async fn caught_up(m: &MariaDb, t: &MariaDb, stage: &str) {
    archive_now(m, stage).await;
    let goal = scalar(m, "SELECT @@gtid_binlog_pos").await;
    let reached = scalar(t, &format!("SELECT MASTER_GTID_WAIT('{goal}', 120)")).await;
    if reached != "0" {
        let (io, sql, err) = slave_status(t).await;
        panic!("replica did not reach {goal}: IO {io}, SQL {sql}: {err}");
    }
}

/// Slave_IO_Running, Slave_SQL_Running and Last_SQL_Error / Last_IO_Error.
async fn slave_status(t: &MariaDb) -> (String, String, String) {
    use mysql_async::prelude::Queryable;
    let mut c = t.conn().await.unwrap();
    let r: Vec<mysql_async::Row> = c.query("SHOW SLAVE STATUS").await.unwrap();
    let r = &r[0];
    let get = |k: &str| r.get::<Option<String>, _>(k).flatten().unwrap_or_default();
    (
        get("Slave_IO_Running"),
        get("Slave_SQL_Running"),
        format!("{} / {}", get("Last_SQL_Error"), get("Last_IO_Error")),
    )
}

/// The replica's gtid_slave_pos without the made-up domain, and that domain's GTID.
async fn slave_pos(t: &MariaDb) -> (String, Vec<String>) {
    let pos = scalar(t, "SELECT @@gtid_slave_pos").await;
    let (ours, master): (Vec<&str>, Vec<&str>) = pos
        .split(',')
        .filter(|g| !g.is_empty())
        .partition(|g| g.starts_with(&format!("{}-", reserved_domain())));
    (
        master.join(","),
        ours.iter().map(|s| s.to_string()).collect(),
    )
}

/// The reserved domain of made-up groups (`serve/provision/policy.rs`).
fn reserved_domain() -> u32 {
    replseed_binlog::serve::provision::policy::DOMAIN
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_replica_is_provisioned_and_replicates() {
    let (m, _dir, stage) = setup().await;
    let (_serve, port) = serve_on_a_free_port_with(&stage, &["--snapshot", "s1"]).await;
    let t = replica(2).await;
    point_at(&t, port).await;
    caught_up(&m, &t, &stage).await;
    assert_identical(&m, &t, &["p"]).await;
    // The master writes again: it arrives through the archive.
    exec(
        &m,
        "INSERT INTO p.a (v) VALUES ('later'); INSERT INTO p.child VALUES (1000, 1)",
    )
    .await;
    caught_up(&m, &t, &stage).await;
    assert_identical(&m, &t, &["p"]).await;
    let (io, sql, err) = slave_status(&t).await;
    assert_eq!((io.as_str(), sql.as_str()), ("Yes", "Yes"), "{err}");
    // gtid_slave_pos: the master's position, and one made-up GTID.
    let (master_part, ours) = slave_pos(&t).await;
    assert_eq!(master_part, scalar(&m, "SELECT @@gtid_binlog_pos").await);
    assert_eq!(ours.len(), 1, "{ours:?}");
    // The event came over disabled on the replica, as load makes it.
    let status = scalar(
        &t,
        "SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_NAME='ev'",
    )
    .await;
    assert_eq!(status, "SLAVESIDE_DISABLED");
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_holding_a_snapshot_database_stops_unchanged() {
    let (_m, _dir, stage) = setup().await;
    let (_serve, port) = serve_on_a_free_port_with(&stage, &["--snapshot", "s1"]).await;
    let t = replica(2).await;
    exec(&t, "SET sql_log_bin=0; CREATE DATABASE p; CREATE TABLE p.mine (x INT); INSERT INTO p.mine VALUES (7)").await;
    point_at(&t, port).await;
    let start = std::time::Instant::now();
    let err = loop {
        let (_, sql, err) = slave_status(&t).await;
        if sql == "No" {
            break err;
        }
        assert!(
            start.elapsed().as_secs() < 60,
            "the SQL thread did not stop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        err.contains("database `p` of snapshot s1 already exists on this replica"),
        "{err}"
    );
    let tables = scalar(
        &t,
        "SELECT GROUP_CONCAT(TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA='p'",
    )
    .await;
    assert_eq!(tables, "mine");
    assert_eq!(scalar(&t, "SELECT x FROM p.mine").await, "7");
    assert_eq!(scalar(&t, "SELECT @@gtid_slave_pos").await, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn force_replaces_the_snapshot_objects_only() {
    let (m, _dir, stage) = setup().await;
    let (_serve, port) = serve_on_a_free_port_with(&stage, &["--snapshot", "s1", "--force"]).await;
    let t = replica(2).await;
    exec(
        &t,
        "SET sql_log_bin=0; CREATE DATABASE p; CREATE TABLE p.mine (x INT); INSERT INTO p.mine VALUES (7); \
         CREATE TABLE p.a (other INT); INSERT INTO p.a VALUES (1); CREATE VIEW p.va AS SELECT 1 AS one",
    )
    .await;
    point_at(&t, port).await;
    caught_up(&m, &t, &stage).await;
    // Not the snapshot's: kept.
    assert_eq!(scalar(&t, "SELECT x FROM p.mine").await, "7");
    exec(&t, "SET sql_log_bin=0; DROP TABLE p.mine").await;
    assert_identical(&m, &t, &["p"]).await;
}
