//! A property test of the LOAD DATA encoder against a real server: random
//! bytes and text full of the bytes LOAD DATA treats specially (NUL, tab,
//! newline, backslash, `\N`), and NULLs, go through `TextEncoder` and
//! `LOAD DATA LOCAL INFILE ... CHARACTER SET binary` and come back
//! byte-identical.

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, Int32Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::Value;
use replseed_load::encode::TextEncoder;
use replseed_stage::types::{ColumnKind, ColumnSpec};

use crate::common::*;

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Bytes biased towards the ones LOAD DATA escapes.
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n)
            .map(|_| match self.below(8) {
                0 => b'\\',
                1 => b'\t',
                2 => b'\n',
                3 => 0,
                4 => b'N',
                _ => self.next() as u8,
            })
            .collect()
    }
    fn text(&mut self, max: u64) -> String {
        let n = self.below(max + 1);
        (0..n)
            .map(|_| match self.below(9) {
                0 => '\\',
                1 => '\t',
                2 => '\n',
                3 => '\0',
                4 => 'N',
                5 => 'é',
                6 => '😀',
                7 => '\r',
                _ => char::from(b' ' + self.below(95) as u8),
            })
            .collect()
    }
}

fn spec(name: &str, column_type: &str, kind: ColumnKind, charset: Option<&str>) -> ColumnSpec {
    ColumnSpec {
        name: name.into(),
        column_type: column_type.into(),
        data_type: column_type.split('(').next().unwrap().into(),
        charset: charset.map(Into::into),
        collation: None,
        nullable: true,
        invisible: false,
        auto_increment: false,
        kind,
        raw_column: None,
        index_column: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_data_encoding_round_trips_random_bytes() {
    let db = master().await;
    exec(
        &db,
        "CREATE DATABASE enc; CREATE TABLE enc.t (id INT PRIMARY KEY, b MEDIUMBLOB, v VARBINARY(300), \
         s TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin) ENGINE=InnoDB",
    )
    .await;
    let columns = vec![
        spec(
            "id",
            "int(11)",
            ColumnKind::Int {
                bits: 32,
                unsigned: false,
            },
            None,
        ),
        spec("b", "mediumblob", ColumnKind::Binary, None),
        spec("v", "varbinary(300)", ColumnKind::Binary, None),
        spec("s", "text", ColumnKind::Utf8Text, Some("utf8mb4")),
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("b", DataType::Binary, true),
        Field::new("v", DataType::Binary, true),
        Field::new("s", DataType::Utf8, true),
    ]));
    let encoder = TextEncoder::new(&columns, &schema).expect("plan");
    let mut conn = db.conn().await.unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut id = 0;
    for round in 0..6 {
        let n = 1500;
        let ids: Vec<i32> = (0..n).map(|i| id + i).collect();
        id += n;
        let mut b = Vec::new();
        let mut v = Vec::new();
        let mut s = Vec::new();
        for _ in 0..n {
            b.push((rng.below(10) > 0).then(|| rng.bytes(if round == 5 { 70_000 } else { 200 })));
            v.push((rng.below(10) > 0).then(|| rng.bytes(300)));
            s.push((rng.below(10) > 0).then(|| rng.text(100)));
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int32Array::from(ids.clone())) as ArrayRef,
                Arc::new(BinaryArray::from_iter(b.iter().map(|x| x.as_deref()))),
                Arc::new(BinaryArray::from_iter(v.iter().map(|x| x.as_deref()))),
                Arc::new(StringArray::from_iter(s.iter().map(|x| x.as_deref()))),
            ],
        )
        .unwrap();
        let mut text = Vec::new();
        encoder.encode_rows(&batch, 0, batch.num_rows(), &mut text);
        conn.set_infile_handler(async move {
            Ok(futures::stream::iter([Ok(Bytes::from(text))]).boxed())
        });
        conn.query_drop(
            "LOAD DATA LOCAL INFILE 'x' INTO TABLE enc.t CHARACTER SET binary \
             FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' (id, b, v, s)",
        )
        .await
        .unwrap();
        assert_eq!(conn.affected_rows(), n as u64, "round {round}");
        let back: Vec<(i32, Value, Value, Value)> = conn
            .exec(
                "SELECT id, b, v, s FROM enc.t WHERE id BETWEEN ? AND ? ORDER BY id",
                (ids[0], ids[ids.len() - 1]),
            )
            .await
            .unwrap();
        assert_eq!(back.len(), n as usize);
        let bytes = |v: &Value| match v {
            Value::NULL => None,
            Value::Bytes(b) => Some(b.clone()),
            other => panic!("unexpected {other:?}"),
        };
        for (i, (rid, rb, rv, rs)) in back.iter().enumerate() {
            assert_eq!(*rid, ids[i]);
            assert_eq!(bytes(rb), b[i], "round {round}, row {rid}, column b");
            assert_eq!(bytes(rv), v[i], "round {round}, row {rid}, column v");
            assert_eq!(
                bytes(rs),
                s[i].as_ref().map(|x| x.as_bytes().to_vec()),
                "round {round}, row {rid}, column s"
            );
        }
    }
    conn.disconnect().await.ok();
}
