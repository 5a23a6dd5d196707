//! Tables: what `information_schema` says about every table of a database
//! (read once per database), and each table's manifest entry and plan built
//! from it: its columns as copied, its key, and the index it is split along.

use std::collections::{BTreeMap, HashMap, HashSet};

use mysql_async::{Conn, Value};
use replseed_db::{qualified, rows, text, Server};
use replseed_stage::manifest::Table;
use replseed_stage::types::{
    assign_sidecars, implicit_period_columns, json_check_column, period_is_copyable, ColumnKind,
    ColumnSpec,
};

use super::{opt_s, u, TablePlan};
use crate::split::{choose, IndexInfo};
use crate::ExtractError;

/// A table as `information_schema.TABLES` lists it.
pub(super) struct Listed {
    pub name: String,
    /// `SYSTEM VERSIONED` rather than `BASE TABLE`.
    pub versioned: bool,
    pub engine: String,
    /// `TABLE_ROWS`, an estimate.
    pub est_rows: u64,
}

/// The facts about every table of one database, by table name.
pub(super) struct Facts {
    /// `information_schema.COLUMNS` rows, in ordinal order: TABLE_NAME,
    /// COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME,
    /// COLLATION_NAME, IS_NULLABLE, EXTRA, IS_GENERATED,
    /// GENERATION_EXPRESSION, NUMERIC_PRECISION, NUMERIC_SCALE.
    columns: BTreeMap<String, Vec<Vec<Value>>>,
    /// Primary key columns, in key order.
    pks: HashMap<String, Vec<String>>,
    /// Every index, for splitting big tables (`split.rs`).
    indexes: HashMap<String, Vec<IndexInfo>>,
    /// (table, column) of the columns a `json_valid` check makes JSON.
    json_cols: HashSet<(String, String)>,
    /// Tables that reference, or are referenced by, a foreign key.
    fk_tables: HashSet<String>,
}

impl Facts {
    /// Reads the facts of every table of `db`.
    pub(super) async fn read(
        conn: &mut Conn,
        server: &Server,
        db: &str,
    ) -> Result<Facts, ExtractError> {
        let mut columns: BTreeMap<String, Vec<Vec<Value>>> = BTreeMap::new();
        for r in rows(
            conn,
            server,
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME, \
             IS_NULLABLE, EXTRA, IS_GENERATED, GENERATION_EXPRESSION, NUMERIC_PRECISION, NUMERIC_SCALE \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=? ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (db,),
        )
        .await?
        {
            columns.entry(text(&r[0])).or_default().push(r);
        }
        let mut pks: HashMap<String, Vec<String>> = HashMap::new();
        let mut indexes: HashMap<String, Vec<IndexInfo>> = HashMap::new();
        for r in rows(
            conn,
            server,
            "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME, NON_UNIQUE, SUB_PART, INDEX_TYPE \
             FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA=? ORDER BY TABLE_NAME, INDEX_NAME='PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
            (db,),
        )
        .await?
        {
            let (table, index, column) = (text(&r[0]), text(&r[1]), text(&r[2]));
            if index == "PRIMARY" {
                pks.entry(table.clone()).or_default().push(column.clone());
            }
            let list = indexes.entry(table).or_default();
            if list.last().is_none_or(|i| i.name != index) {
                list.push(IndexInfo {
                    name: index,
                    unique: text(&r[3]) == "0",
                    kind: text(&r[5]),
                    columns: Vec::new(),
                });
            }
            let ix = list.last_mut().expect("index just pushed");
            ix.columns.push((column, u(&r[4])));
        }
        let mut json_cols: HashSet<(String, String)> = HashSet::new();
        for r in rows(
            conn,
            server,
            "SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA=? AND LEVEL='Column'",
            (db,),
        )
        .await?
        {
            if let Some(col) = json_check_column(&text(&r[1])) {
                json_cols.insert((text(&r[0]), col));
            }
        }
        let mut fk_tables: HashSet<String> = HashSet::new();
        for r in rows(
            conn,
            server,
            "SELECT TABLE_NAME, REFERENCED_TABLE_NAME, UNIQUE_CONSTRAINT_SCHEMA FROM information_schema.REFERENTIAL_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA=? OR UNIQUE_CONSTRAINT_SCHEMA=?",
            (db, db),
        )
        .await?
        {
            fk_tables.insert(text(&r[0]));
            if text(&r[2]) == db {
                fk_tables.insert(text(&r[1]));
            }
        }
        Ok(Facts {
            columns,
            pks,
            indexes,
            json_cols,
            fk_tables,
        })
    }
}

/// One table's plan: its `SHOW CREATE TABLE`, its columns and key from
/// `facts`, and the index it is split along.
pub(super) async fn table(
    conn: &mut Conn,
    server: &Server,
    db: &str,
    t: Listed,
    facts: &Facts,
) -> Result<TablePlan, ExtractError> {
    let r = rows(
        conn,
        server,
        &format!("SHOW CREATE TABLE {}", qualified(db, &t.name)),
        (),
    )
    .await?;
    let create_sql = text(&r[0][1]);
    let name = t.name;
    let cols = facts.columns.get(&name).cloned().unwrap_or_default();
    let Columns {
        specs,
        all_columns,
        explicit_period,
    } = columns(db, &name, &cols, t.versioned, facts)?;
    let primary_key = primary_key(&name, &cols, t.versioned, explicit_period, facts);
    let transactional = t.engine.eq_ignore_ascii_case("InnoDB");
    let mut plan = TablePlan {
        db: db.to_string(),
        est_rows: t.est_rows,
        split: None,
        table: Table {
            name: name.clone(),
            engine: t.engine,
            transactional,
            create_sql,
            system_versioned: t.versioned,
            columns: specs,
            all_columns,
            primary_key,
            has_foreign_keys: facts.fk_tables.contains(&name),
            rows: 0,
            bytes: 0,
            chunks: Vec::new(),
        },
    };
    plan.split = choose(
        &plan.table,
        facts.indexes.get(&name).map(Vec::as_slice).unwrap_or(&[]),
    );
    Ok(plan)
}

/// A table's columns as copied.
struct Columns {
    /// The stored columns (generated ones are recomputed by the replica),
    /// with their sidecars.
    specs: Vec<ColumnSpec>,
    /// Every column's name, generated ones included.
    all_columns: Vec<String>,
    /// The table declares its ROW START / ROW END columns.
    explicit_period: bool,
}

/// Classifies the columns of table `name` (its `COLUMNS` rows `cols`).
fn columns(
    db: &str,
    name: &str,
    cols: &[Vec<Value>],
    versioned: bool,
    facts: &Facts,
) -> Result<Columns, ExtractError> {
    let mut specs = Vec::new();
    let mut all_columns = Vec::new();
    let mut explicit_period = false;
    for c in cols {
        let cname = text(&c[1]);
        all_columns.push(cname.clone());
        let extra = text(&c[7]);
        let generated = text(&c[8]) == "ALWAYS";
        let gen_expr = text(&c[9]);
        let period = gen_expr == "ROW START" || gen_expr == "ROW END";
        if period {
            explicit_period = true;
        }
        if generated && !period {
            continue; // recomputed by the replica
        }
        let data_type = text(&c[2]);
        let column_type = text(&c[3]);
        let charset = opt_s(&c[4]);
        let is_json = facts.json_cols.contains(&(name.to_string(), cname.clone()));
        let kind = ColumnKind::classify(
            &data_type,
            &column_type,
            charset.as_deref(),
            u(&c[10]),
            u(&c[11]),
            is_json,
        )
        .map_err(|e| ExtractError::Unsupported {
            table: format!("{db}.{name}"),
            detail: format!("column `{cname}`: {e}"),
        })?;
        if period && !period_is_copyable(&data_type) {
            return Err(ExtractError::Unsupported {
                table: format!("{db}.{name}"),
                detail: "transaction-precise system versioning (ROW START of type BIGINT) cannot be copied: its history refers to the master's transaction ids".into(),
            });
        }
        specs.push(ColumnSpec {
            name: cname,
            column_type,
            data_type,
            charset,
            collation: opt_s(&c[5]),
            nullable: text(&c[6]) == "YES",
            invisible: extra.contains("INVISIBLE"),
            auto_increment: extra.contains("auto_increment"),
            kind,
            raw_column: None,
            index_column: None,
        });
    }
    if versioned && !explicit_period {
        specs.extend(implicit_period_columns());
    }
    assign_sidecars(&mut specs);
    Ok(Columns {
        specs,
        all_columns,
        explicit_period,
    })
}

/// The key rows are ordered and identified by: the primary key, completed
/// with the row end column for a system-versioned table (its history makes
/// the declared key non-unique).
fn primary_key(
    name: &str,
    cols: &[Vec<Value>],
    versioned: bool,
    explicit_period: bool,
    facts: &Facts,
) -> Vec<String> {
    let mut primary_key = facts.pks.get(name).cloned().unwrap_or_default();
    if versioned {
        let end = if explicit_period {
            cols.iter()
                .find(|c| text(&c[9]) == "ROW END")
                .map(|c| text(&c[1]))
        } else {
            Some("ROW_END".to_string())
        };
        if let Some(end) = end {
            if !primary_key.is_empty() && !primary_key.contains(&end) {
                primary_key.push(end);
            }
        }
    }
    primary_key
}
