//! The row encoder (issue 19, `replseed_binlog::rows`) against the row
//! events a real master writes for the same rows: tables of every type the
//! snapshot format carries get their rows in one INSERT each on a
//! throwaway master (binlog ROW, FULL image); `replseed extract` stages
//! them; the chunks are encoded and each TABLE_MAP and WRITE_ROWS body must
//! equal the master's byte for byte. Only the event headers (timestamp,
//! log_pos) differ; the master runs with `binlog_row_metadata=NO_LOG`, the
//! 10.11 default, so its table maps carry no optional metadata, as ours.
//! The master takes our table_id, which is the stream's to choose.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::RecordBatch;
use mysql_async::prelude::Queryable;
use replseed_binlog::event::{RawEvent, HEADER_LEN, MAGIC};
use replseed_binlog::rows::write_rows::{STMT_END_F, TABLE_MAP_EVENT, WRITE_ROWS_EVENT_V1};
use replseed_binlog::rows::{RowsEncoder, TableShape};
use replseed_stage::manifest::{Database, Table};
use replseed_stage::types::{ColumnKind, ColumnSpec};
use replseed_stage::{open_chunk, Stage};

use crate::common::*;

/// The fixture's tables whose rows go in in one INSERT each (ints, nums,
/// temporal, the first rows of strings, misc, gen), then tables for what
/// the fixture lacks: 2-byte CHAR and VARCHAR prefixes, CHAR in UCS-2 and
/// UTF-32, ENUM of 300 members, SETs of every width, every fraction width,
/// an invisible NOT NULL column, system-versioned tables, and enough rows
/// to split one statement into many Write_rows events.
fn schema_sql() -> String {
    let f = ALL_TYPES_SQL;
    let cut = |from: &str, to: &str| {
        let a = f.find(from).expect("fixture marker");
        let b = a + f[a..].find(to).expect("fixture marker");
        f[a..b].to_string()
    };
    let header = &f[..f.find("CREATE DATABASE `we").expect("fixture marker")];
    let members = |n: usize| {
        (0..n)
            .map(|i| format!("'m{i}'"))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{header}USE fx;\n{}{}\
CREATE TABLE wide (
  id INT NOT NULL PRIMARY KEY,
  c70 CHAR(70), c255 CHAR(255) CHARACTER SET latin1, v64 VARCHAR(64), v300 VARCHAR(300) CHARACTER SET latin1,
  cu CHAR(3) CHARACTER SET ucs2, c32 CHAR(3) CHARACTER SET utf32, b255 BINARY(255),
  e300 ENUM({}), s9 SET({}), s17 SET({}), s25 SET({}), s33 SET({}),
  t2 TIME(2), t3 TIME(3), t4 TIME(4), t5 TIME(5),
  dt1 DATETIME(1), dt2 DATETIME(2), dt4 DATETIME(4), dt5 DATETIME(5),
  ts1 TIMESTAMP(1) NULL DEFAULT NULL, ts3 TIMESTAMP(3) NULL DEFAULT NULL,
  nn INT NOT NULL INVISIBLE DEFAULT 5, d1 DECIMAL(1,0), d10 DECIMAL(10,9) UNSIGNED, y YEAR
);
INSERT INTO wide (id, c70, c255, v64, v300, cu, c32, b255, e300, s9, s17, s25, s33, t2, t3, t4, t5,
  dt1, dt2, dt4, dt5, ts1, ts3, nn, d1, d10, y) VALUES
 (1, REPEAT('é', 70), REPEAT('x', 255), REPEAT('€', 64), REPEAT('y', 300), 'a ', 'ü', 'bin',
  'm299', 'm0,m8', 'm16', 'm1,m24', 'm32,m0', '-01:02:03.45', '838:59:59.999', '-00:00:00.0001', '12:00:00.00001',
  '2024-01-01 00:00:00.1', '0000-00-00 00:00:00', '2024-02-00 01:02:03.1234', '1000-01-01 00:00:00.00001',
  '1970-01-01 00:00:01.9', '2038-01-19 03:14:07.999', -7, -9, 0.000000001, 2155),
 (2, 'a   ', '', '', '', '', '', REPEAT(0x00, 255), 'm0', '', 'm0,m1,m2,m3,m4,m5,m6,m7,m8', '', 'm0,m1,m30,m31,m32',
  '00:00:00', '-838:59:59.999', '100:00:00.0001', '-00:00:00.00001', '0000-00-00 00:00:00.0', '9999-12-31 23:59:59.99',
  '2000-01-01 00:00:00', '2000-00-00 00:00:00.00001', '0000-00-00 00:00:00', NULL, 0, 9, 9.999999999, 0),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, NULL, NULL, NULL);

CREATE TABLE ver (id INT NOT NULL PRIMARY KEY, x INT) WITH SYSTEM VERSIONING;
INSERT INTO ver VALUES (1, 1), (2, NULL);
CREATE TABLE ver2 (
  id INT NOT NULL, x VARCHAR(10),
  vs TIMESTAMP(6) GENERATED ALWAYS AS ROW START INVISIBLE,
  ve TIMESTAMP(6) GENERATED ALWAYS AS ROW END INVISIBLE,
  PERIOD FOR SYSTEM_TIME (vs, ve),
  PRIMARY KEY (id)
) WITH SYSTEM VERSIONING;
INSERT INTO ver2 (id, x) VALUES (1, 'a'), (2, 'b');

CREATE TABLE many (id INT NOT NULL PRIMARY KEY, pad VARCHAR(60), n BIGINT);
INSERT INTO many SELECT seq, REPEAT('z', seq % 61), seq * 1000003 FROM seq_1_to_3000;
",
        cut("CREATE TABLE ints", "-- Every byte value"),
        cut("CREATE TABLE misc", "CREATE TABLE ver "),
        members(300),
        members(9),
        members(17),
        members(25),
        members(33),
    )
}

/// One statement's row events on the master.
struct Statement {
    map: RawEvent,
    rows: Vec<RawEvent>,
}

/// `db.table` of a table map body.
fn mapped_table(body: &[u8]) -> String {
    let dl = body[8] as usize;
    let db = String::from_utf8_lossy(&body[9..9 + dl]);
    let tl = body[10 + dl] as usize;
    let t = String::from_utf8_lossy(&body[11 + dl..11 + dl + tl]);
    format!("{db}.{t}")
}

/// Every row statement in the master's binlog files, by `db.table`.
fn master_statements(m: &MariaDb) -> BTreeMap<String, Vec<Statement>> {
    let data = m.dir.join("data");
    let mut files: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("mariadb-bin.")
                && !p.to_string_lossy().ends_with(".index")
                && !p.to_string_lossy().ends_with(".state")
        })
        .collect();
    files.sort();
    let mut out: BTreeMap<String, Vec<Statement>> = BTreeMap::new();
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(bytes[..4], MAGIC, "{}", f.display());
        let (mut at, mut checksummed, mut open) = (4, false, None::<String>);
        while at + HEADER_LEN <= bytes.len() {
            let size = u32::from_le_bytes(bytes[at + 9..at + 13].try_into().unwrap()) as usize;
            let raw = bytes[at..at + size].to_vec();
            at += size;
            let kind = raw[4];
            if kind == 15 {
                // The format description always ends in its checksum byte
                // and a CRC32.
                checksummed = raw[size - 5] == 1;
                continue;
            }
            let e = RawEvent::new(raw, checksummed).unwrap();
            if kind == TABLE_MAP_EVENT {
                let name = mapped_table(e.body());
                out.entry(name.clone()).or_default().push(Statement {
                    map: e,
                    rows: Vec::new(),
                });
                open = Some(name);
            } else if kind == WRITE_ROWS_EVENT_V1 {
                let name = open.clone().expect("Write_rows after a table map");
                let flags = u16::from_le_bytes([e.body()[6], e.body()[7]]);
                out.get_mut(&name).unwrap().last_mut().unwrap().rows.push(e);
                if flags & STMT_END_F != 0 {
                    open = None;
                }
            }
        }
    }
    out
}

/// An `information_schema.COLUMNS` row: table, column, COLUMN_TYPE,
/// DATA_TYPE, charset, collation, IS_NULLABLE, precision, scale.
type ColumnRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    Option<u64>,
    Option<u64>,
);

/// The generated columns of `db`'s tables, described as the manifest
/// describes stored ones (the manifest leaves them out).
async fn generated_columns(m: &MariaDb, db: &str) -> BTreeMap<String, Vec<ColumnSpec>> {
    let mut c = m.conn().await.unwrap();
    let rows: Vec<ColumnRow> = c
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, DATA_TYPE, CHARACTER_SET_NAME, COLLATION_NAME, \
             IS_NULLABLE, NUMERIC_PRECISION, NUMERIC_SCALE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND IS_GENERATED = 'ALWAYS'",
            (db,),
        )
        .await
        .unwrap();
    c.disconnect().await.ok();
    let mut out: BTreeMap<String, Vec<ColumnSpec>> = BTreeMap::new();
    for (t, name, ct, dt, cs, coll, nullable, p, s) in rows {
        let kind = ColumnKind::classify(&dt, &ct, cs.as_deref(), p, s, false).unwrap();
        out.entry(t).or_default().push(ColumnSpec {
            name,
            column_type: ct,
            data_type: dt,
            charset: cs,
            collation: coll,
            nullable: nullable == "YES",
            invisible: false,
            auto_increment: false,
            kind,
            index_column: None,
            raw_column: None,
        });
    }
    out
}

/// Every batch of a table's chunks, in order.
fn table_batches(stage_dir: &Path, t: &Table) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for c in &t.chunks {
        let f = std::fs::File::open(stage_dir.join(&c.path)).unwrap();
        let (reader, _) = open_chunk(f, 1024).unwrap();
        out.extend(reader.map(|b| b.unwrap()));
    }
    out
}

/// Asserts two event bodies are equal, showing where they part.
fn assert_same_body(what: &str, ours: &[u8], master: &[u8]) {
    if ours == master {
        return;
    }
    let at = ours
        .iter()
        .zip(master)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(master.len()));
    let from = at.saturating_sub(16);
    let window = |b: &[u8]| hex::encode(&b[from.min(b.len())..(at + 24).min(b.len())]);
    panic!(
        "{what}: bodies differ at byte {at} (ours {} bytes, master {} bytes)\n  ours   [{from}..]: {}\n  master [{from}..]: {}",
        ours.len(),
        master.len(),
        window(ours),
        window(master)
    );
}

fn shape_of(db: &Database, t: &Table, generated: &BTreeMap<String, Vec<ColumnSpec>>) -> TableShape {
    let none = Vec::new();
    TableShape::with_generated(db, t, generated.get(&t.name).unwrap_or(&none)).unwrap()
}

/// A master holding the tables, their snapshot, and the master's events.
struct Setup {
    m: MariaDb,
    dir: tempfile::TempDir,
    db: Database,
    master: BTreeMap<String, Vec<Statement>>,
    generated: BTreeMap<String, Vec<ColumnSpec>>,
}

async fn setup() -> Setup {
    let m = MariaDb::start_with(MariaDbOptions {
        extra_args: vec!["--binlog-row-metadata=NO_LOG".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    exec(&m, &schema_sql()).await;
    let (dir, stage) = local_stage();
    extract_ok(&m.url(), &stage, "rows", &["--databases", "fx"]).await;
    let manifest = Stage::open(&stage)
        .unwrap()
        .read_manifest("rows")
        .await
        .unwrap();
    let master = master_statements(&m);
    let generated = generated_columns(&m, "fx").await;
    let db = manifest
        .databases
        .into_iter()
        .find(|d| d.name == "fx")
        .unwrap();
    Setup {
        m,
        dir,
        db,
        master,
        generated,
    }
}

impl Setup {
    /// Our events for table `t`, under the master's table id.
    fn encode(&self, t: &Table) -> Vec<RawEvent> {
        let key = format!("fx.{}", t.name);
        let stmts = self
            .master
            .get(&key)
            .unwrap_or_else(|| panic!("{key}: no row events"));
        assert_eq!(stmts.len(), 1, "{key}: one INSERT, one statement");
        let mut id = [0u8; 8];
        id[..6].copy_from_slice(&stmts[0].map.body()[..6]);
        let enc = RowsEncoder::new(
            shape_of(&self.db, t, &self.generated),
            u64::from_le_bytes(id),
        )
        .unwrap();
        let batches = table_batches(self.dir.path(), t);
        let ours = enc.chunk_events(&batches, self.m.server_id, true).unwrap();
        for e in &ours {
            assert!(e.checksum_ok());
            assert_eq!(e.server_id(), self.m.server_id);
        }
        ours
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn encoder_matches_master_byte_for_byte() {
    let s = setup().await;
    let mut checked = Vec::new();
    for t in &s.db.tables {
        let key = format!("fx.{}", t.name);
        let ours = s.encode(t);
        let st = &s.master[&key][0];
        assert_same_body(&format!("{key} table map"), ours[0].body(), st.map.body());
        if t.all_columns.len() > t.columns.len() {
            // The manifest alone cannot describe the table map.
            let e = TableShape::from_manifest(&s.db, t).unwrap_err().to_string();
            assert!(
                e.contains("`fx`.`gen`") && e.contains("column `v` is generated"),
                "{e}"
            );
            // The master's image holds the generated values, which the
            // snapshot does not store: ours leaves those columns out (see
            // `rows_apply_to_an_empty_replica`).
            continue;
        }
        assert_eq!(
            ours.len() - 1,
            st.rows.len(),
            "{key}: as many Write_rows events as the master's"
        );
        for (i, (o, e)) in ours[1..].iter().zip(&st.rows).enumerate() {
            assert_eq!(o.kind(), e.kind());
            assert_same_body(&format!("{key} Write_rows #{}", i + 1), o.body(), e.body());
        }
        checked.push((t.name.clone(), st.rows.len()));
    }
    let names: Vec<&str> = checked.iter().map(|(n, _)| n.as_str()).collect();
    for t in [
        "ints", "nums", "temporal", "strings", "misc", "wide", "ver", "ver2", "many",
    ] {
        assert!(names.contains(&t), "{t} was not compared: {names:?}");
    }
    // The 5.5 MB row of `strings` and the 3000 rows of `many` split.
    assert!(checked.iter().any(|(n, k)| n == "strings" && *k == 3));
    assert!(checked.iter().any(|(n, k)| n == "many" && *k > 10));
}

/// Our events, wrapped in a binlog file behind the master's format
/// description and applied to an empty replica that has the tables, leave
/// it identical to the master: generated columns included, which our
/// images leave to the replica to compute.
#[tokio::test(flavor = "multi_thread")]
async fn rows_apply_to_an_empty_replica() {
    let s = setup().await;
    let t = replica(2).await;
    let mut ddl = format!("SET SESSION sql_mode='';\n{};\nUSE fx;\n", s.db.create_sql);
    for table in &s.db.tables {
        ddl.push_str(&table.create_sql);
        ddl.push_str(";\n");
    }
    exec(&t, &ddl).await;
    // The master's first binlog file opens with its format description.
    let first = std::fs::read(s.m.dir.join("data/mariadb-bin.000001")).unwrap();
    let fde_len = u32::from_le_bytes(first[4 + 9..4 + 13].try_into().unwrap()) as usize;
    let mut file = first[..4 + fde_len].to_vec();
    for table in &s.db.tables {
        for mut e in s.encode(table) {
            let end = file.len() + e.bytes().len();
            e.set_log_pos(end as u32);
            file.extend_from_slice(e.bytes());
        }
    }
    apply_binlog(&file, &t).unwrap();
    assert_identical(&s.m, &t, &["fx"]).await;
}
