//! Splitting a big table across workers along any index.
//!
//! A table whose primary key is one integer is split by arithmetic on its
//! `MIN`/`MAX` (`worker::plan_jobs`). Every other big table is split along
//! a *split key*, chosen by [`choose`]:
//!
//! 1. its primary key (any number of columns, strings, dates, decimals);
//! 2. without one, a unique key whose columns are all NOT NULL;
//! 3. without one, the first column of another index (not unique: rows with
//!    equal values stay in one job; NULLs get a job of their own).
//!
//! Boundaries are found inside the snapshot by walking the index:
//! `SELECT key ... WHERE key > previous ORDER BY key LIMIT 1 OFFSET n-1`, one
//! statement per boundary (an index scan, covering for a secondary index).
//! Each job then reads `previous < key <= boundary`. Comparisons are
//! written out column by column (`a > ? OR (a = ? AND b > ?)`), which
//! MariaDB's range optimizer turns into index ranges. Bounds travel as
//! text the server converts back exactly: strings as the hex of their bytes
//! converted to the column's own character set and collation (so a latin1
//! key compares as latin1, whatever the session's character set), numbers
//! and temporal values as their text. Keys with ENUM, SET, JSON, spatial,
//! INET or UUID columns, or an index on a column prefix, are not split.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use replseed_db::{qualified, quote_ident, DbError, Server};
use replseed_stage::manifest::Table;
use replseed_stage::types::ColumnKind;

/// An index of the table, as `information_schema.STATISTICS` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexInfo {
    /// `PRIMARY` or the index name.
    pub name: String,
    /// UNIQUE (or PRIMARY).
    pub unique: bool,
    /// BTREE, HASH, FULLTEXT, SPATIAL.
    pub kind: String,
    /// Columns in index order: (name, prefix length if only a prefix is indexed).
    pub columns: Vec<(String, Option<u64>)>,
}

/// How a table is split: the index to walk and the columns compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitKey {
    /// Index name (`PRIMARY` for the primary key).
    pub index: String,
    /// Compared columns, in index order.
    pub columns: Vec<KeyColumn>,
    /// Whether the columns identify a row (otherwise rows with equal
    /// values stay in one job).
    pub unique: bool,
    /// Whether the (single, non-unique) column can be NULL: those rows get
    /// a job of their own.
    pub nullable: bool,
}

/// One compared column and how its bound values travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    /// Column name.
    pub name: String,
    /// How a bound is read and written back.
    pub form: BoundForm,
}

/// How a bound value of one column is read out and bound back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundForm {
    /// Integers, YEAR, FLOAT, DOUBLE: the value itself.
    Native,
    /// DECIMAL and temporal types: `CAST(col AS CHAR)`, bound as text the
    /// server converts back to the column's type exactly.
    Text,
    /// Strings: `HEX(col)`, bound as `CONVERT(UNHEX(?) USING cs) COLLATE coll`.
    Chars {
        /// Character set.
        charset: String,
        /// Collation.
        collation: String,
    },
    /// Binary strings: `HEX(col)`, bound as `UNHEX(?)`.
    Bytes,
}

/// A job's range on the split key.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyRange {
    /// `lo < key <= hi`; an open end is `None`.
    Between {
        /// Exclusive lower bound (bound values, one per column).
        lo: Option<Vec<Value>>,
        /// Inclusive upper bound.
        hi: Option<Vec<Value>>,
    },
    /// Rows whose (single, non-unique) key column is NULL.
    Null,
}

fn form_of(table: &Table, column: &str) -> Option<(BoundForm, bool)> {
    let c = table.columns.iter().find(|c| c.name == column)?;
    let form = match c.kind {
        ColumnKind::Int { .. } | ColumnKind::Year | ColumnKind::Float | ColumnKind::Double => {
            BoundForm::Native
        }
        ColumnKind::Decimal { .. }
        | ColumnKind::Date
        | ColumnKind::DateTime
        | ColumnKind::Timestamp
        | ColumnKind::Time => BoundForm::Text,
        ColumnKind::Utf8Text | ColumnKind::OtherText => BoundForm::Chars {
            charset: c.charset.clone()?,
            collation: c.collation.clone()?,
        },
        ColumnKind::Binary => BoundForm::Bytes,
        _ => return None,
    };
    Some((form, c.nullable))
}

/// The split key of `table` among its `indexes`, or `None` when the table
/// can only be read as one job.
pub fn choose(table: &Table, indexes: &[IndexInfo]) -> Option<SplitKey> {
    if table.system_versioned {
        return None;
    }
    let usable = |ix: &IndexInfo| {
        matches!(ix.kind.as_str(), "BTREE" | "") && ix.columns.iter().all(|(_, p)| p.is_none())
    };
    let full = |ix: &IndexInfo| -> Option<SplitKey> {
        let mut columns = Vec::new();
        for (name, _) in &ix.columns {
            let (form, nullable) = form_of(table, name)?;
            if nullable {
                return None;
            }
            columns.push(KeyColumn {
                name: name.clone(),
                form,
            });
        }
        Some(SplitKey {
            index: ix.name.clone(),
            columns,
            unique: true,
            nullable: false,
        })
    };
    // The primary key, then a unique key of NOT NULL columns.
    if let Some(pk) = indexes.iter().find(|i| i.name == "PRIMARY") {
        return if usable(pk) { full(pk) } else { None };
    }
    if let Some(k) = indexes
        .iter()
        .filter(|i| i.unique && usable(i))
        .find_map(full)
    {
        return Some(k);
    }
    // The leading column of any other index.
    indexes
        .iter()
        .filter(|i| i.kind == "BTREE" && i.columns.first().is_some_and(|(_, p)| p.is_none()))
        .find_map(|ix| {
            let name = &ix.columns[0].0;
            let (form, nullable) = form_of(table, name)?;
            Some(SplitKey {
                index: ix.name.clone(),
                columns: vec![KeyColumn {
                    name: name.clone(),
                    form,
                }],
                unique: false,
                nullable,
            })
        })
}

impl KeyColumn {
    /// The expression that reads a bound out of a row.
    fn read_expr(&self) -> String {
        let c = quote_ident(&self.name);
        match &self.form {
            BoundForm::Native => c,
            BoundForm::Text => format!("CAST({c} AS CHAR)"),
            BoundForm::Chars { .. } | BoundForm::Bytes => format!("HEX({c})"),
        }
    }

    /// The placeholder expression a bound is bound into.
    fn placeholder(&self) -> String {
        match &self.form {
            BoundForm::Native | BoundForm::Text => "?".into(),
            BoundForm::Chars { charset, collation } => format!(
                "CONVERT(UNHEX(?) USING {}) COLLATE {}",
                quote_ident(charset),
                quote_ident(collation)
            ),
            BoundForm::Bytes => "UNHEX(?)".into(),
        }
    }
}

impl SplitKey {
    /// `key > lo` (`strict`) or `key <= hi`, column by column, with the
    /// values to bind in order.
    fn compare(&self, bound: &[Value], greater: bool, out: &mut Vec<Value>) -> String {
        let n = self.columns.len();
        let mut terms = Vec::new();
        for i in 0..n {
            let mut parts = Vec::new();
            for (j, c) in self.columns.iter().enumerate().take(i) {
                parts.push(format!("{} = {}", quote_ident(&c.name), c.placeholder()));
                out.push(bound[j].clone());
            }
            let c = &self.columns[i];
            let op = match (greater, i + 1 == n) {
                (true, _) => ">",
                (false, true) => "<=",
                (false, false) => "<",
            };
            parts.push(format!("{} {op} {}", quote_ident(&c.name), c.placeholder()));
            out.push(bound[i].clone());
            terms.push(format!("({})", parts.join(" AND ")));
        }
        format!("({})", terms.join(" OR "))
    }

    /// The `WHERE` condition of a job's range (without `WHERE`), and its
    /// parameters.
    pub fn condition(&self, range: &KeyRange) -> (String, Vec<Value>) {
        let mut params = Vec::new();
        let cond = match range {
            KeyRange::Null => format!("{} IS NULL", quote_ident(&self.columns[0].name)),
            KeyRange::Between { lo, hi } => {
                let mut parts = Vec::new();
                if let Some(lo) = lo {
                    parts.push(self.compare(lo, true, &mut params));
                }
                if let Some(hi) = hi {
                    parts.push(self.compare(hi, false, &mut params));
                }
                if !self.unique && self.nullable {
                    // NULLs are in their own job.
                    parts.push(format!(
                        "{} IS NOT NULL",
                        quote_ident(&self.columns[0].name)
                    ));
                }
                if parts.is_empty() {
                    "TRUE".into()
                } else {
                    parts.join(" AND ")
                }
            }
        };
        (cond, params)
    }

    /// `ORDER BY` of the key.
    fn order(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The index hint that makes every job and every step of the walk use
    /// the split key's index.
    pub fn hint(&self) -> String {
        format!("FORCE INDEX ({})", quote_ident(&self.index))
    }
}

/// Walks the split key's index inside the caller's snapshot and returns the
/// ranges of about `rows_per_job` rows each, in key order (the NULL job
/// last). `None` when the table turned out to be small.
pub async fn ranges(
    conn: &mut Conn,
    server: &Server,
    db: &str,
    table: &str,
    key: &SplitKey,
    rows_per_job: u64,
) -> Result<Vec<KeyRange>, DbError> {
    let what = format!("finding the chunk boundaries of {db}.{table}");
    let select: Vec<String> = key.columns.iter().map(KeyColumn::read_expr).collect();
    let mut out = Vec::new();
    let mut lo: Option<Vec<Value>> = None;
    loop {
        let range = KeyRange::Between {
            lo: lo.clone(),
            hi: None,
        };
        let (cond, params) = key.condition(&range);
        let sql = format!(
            "SELECT {} FROM {} {} WHERE {cond} ORDER BY {} LIMIT 1 OFFSET {}",
            select.join(", "),
            qualified(db, table),
            key.hint(),
            key.order(),
            rows_per_job.saturating_sub(1)
        );
        let row: Option<Row> = conn
            .exec_first(sql.as_str(), params)
            .await
            .map_err(|e| server.err(what.clone(), &e))?;
        let Some(row) = row else { break };
        let hi = row.unwrap();
        out.push(KeyRange::Between {
            lo: lo.take(),
            hi: Some(hi.clone()),
        });
        lo = Some(hi);
    }
    out.push(KeyRange::Between { lo, hi: None });
    if !key.unique && key.nullable {
        out.push(KeyRange::Null);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use replseed_stage::types::ColumnSpec;

    fn col(name: &str, kind: ColumnKind, nullable: bool) -> ColumnSpec {
        ColumnSpec {
            name: name.into(),
            column_type: String::new(),
            data_type: String::new(),
            charset: Some("latin1".into()),
            collation: Some("latin1_swedish_ci".into()),
            nullable,
            invisible: false,
            auto_increment: false,
            kind,
            index_column: None,
            raw_column: None,
        }
    }

    fn table(columns: Vec<ColumnSpec>) -> Table {
        Table {
            name: "t".into(),
            engine: "InnoDB".into(),
            transactional: true,
            create_sql: String::new(),
            system_versioned: false,
            all_columns: columns.iter().map(|c| c.name.clone()).collect(),
            columns,
            primary_key: Vec::new(),
            has_foreign_keys: false,
            rows: 0,
            bytes: 0,
            chunks: Vec::new(),
        }
    }

    fn index(name: &str, unique: bool, cols: &[&str]) -> IndexInfo {
        IndexInfo {
            name: name.into(),
            unique,
            kind: "BTREE".into(),
            columns: cols.iter().map(|c| (c.to_string(), None)).collect(),
        }
    }

    #[test]
    fn the_primary_key_comes_first_then_unique_then_any_index() {
        let t = table(vec![
            col("a", ColumnKind::OtherText, false),
            col(
                "b",
                ColumnKind::Int {
                    bits: 32,
                    unsigned: false,
                },
                false,
            ),
            col("e", ColumnKind::Enum, false),
            col(
                "n",
                ColumnKind::Int {
                    bits: 32,
                    unsigned: false,
                },
                true,
            ),
        ]);
        let pk = index("PRIMARY", true, &["a", "b"]);
        let k = choose(&t, &[index("u", true, &["b"]), pk.clone()]).unwrap();
        assert_eq!(k.index, "PRIMARY");
        assert_eq!(k.columns.len(), 2);
        assert!(k.unique);
        // A unique key with a nullable column cannot identify rows: its
        // first column still splits the table, NULLs in a job of their own.
        let k = choose(
            &t,
            &[index("u", true, &["n"]), index("k", false, &["b", "a"])],
        )
        .unwrap();
        assert_eq!((k.index.as_str(), k.unique, k.nullable), ("u", false, true));
        assert_eq!(k.columns.len(), 1);
        let k = choose(&t, &[index("k", false, &["b", "a"])]).unwrap();
        assert_eq!(
            (k.index.as_str(), k.unique, k.nullable),
            ("k", false, false)
        );
        let k = choose(&t, &[index("k", false, &["n"])]).unwrap();
        assert!(k.nullable);
        // An ENUM key, or a primary key that cannot be used: one job.
        assert!(choose(&t, &[index("PRIMARY", true, &["e"])]).is_none());
        let mut prefix = index("PRIMARY", true, &["a"]);
        prefix.columns[0].1 = Some(10);
        assert!(choose(&t, &[prefix, index("k", false, &["b"])]).is_none());
        assert!(choose(&t, &[]).is_none());
    }

    #[test]
    fn conditions_compare_column_by_column() {
        let t = table(vec![
            col("a", ColumnKind::OtherText, false),
            col(
                "b",
                ColumnKind::Int {
                    bits: 32,
                    unsigned: false,
                },
                false,
            ),
        ]);
        let k = choose(&t, &[index("PRIMARY", true, &["a", "b"])]).unwrap();
        let lo = vec![Value::from("6B31"), Value::Int(5)];
        let hi = vec![Value::from("6B39"), Value::Int(2)];
        let (cond, params) = k.condition(&KeyRange::Between {
            lo: Some(lo),
            hi: Some(hi),
        });
        let s = "CONVERT(UNHEX(?) USING `latin1`) COLLATE `latin1_swedish_ci`";
        assert_eq!(
            cond,
            format!(
                "((`a` > {s}) OR (`a` = {s} AND `b` > ?)) AND ((`a` < {s}) OR (`a` = {s} AND `b` <= ?))"
            )
        );
        assert_eq!(params.len(), 6);
        assert_eq!(params[2], Value::Int(5));
        let (all, none) = k.condition(&KeyRange::Between { lo: None, hi: None });
        assert_eq!((all.as_str(), none.len()), ("TRUE", 0));
    }
}
