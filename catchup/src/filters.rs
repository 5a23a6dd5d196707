//! Replication filters of a subset replica: a replica loaded from a
//! snapshot of some databases (`--databases`) must replicate exactly those,
//! or the first write to another database stops it (ERROR 1146).
//!
//! The filter is `replicate_wild_do_table` with one `db.%` pattern per
//! database: it applies to row events by their table's database and to DDL
//! by the tables it names, whatever the default database of the session
//! on the master was (`replicate_do_db` would go by the latter for
//! statements). MariaDB lets it be set while the replica is stopped, but a
//! restart forgets it: the my.cnf line makes it permanent.
//!
//! Account statements (`CREATE/ALTER/DROP/RENAME USER`, `SET PASSWORD`,
//! `GRANT`/`REVOKE`, roles, `SET DEFAULT ROLE`) are logged as statements,
//! and a replica applies the table filter to them twice (MariaDB's
//! `sql_parse.cc` and `sql_acl.cc`, `Grant_tables::open_and_lock`):
//! - first by the object a `GRANT`/`REVOKE` names on a table, its columns
//!   or a routine (it counts as an updated table): one outside the subset
//!   matches no pattern and the statement is skipped (`ER_SLAVE_IGNORED_TABLE`,
//!   which replication passes over), so it never fails for the table's absence;
//! - then by the privilege tables it writes (`mysql.global_priv`,
//!   `mysql.tables_priv`, ...): without a pattern for them every account
//!   statement is skipped silently. A snapshot with accounts therefore adds
//!   `mysql.%`, which lets through exactly what a full replica gets of the
//!   `mysql` schema. Grants on `*.*` and on databases (`db.*`) name no
//!   table and reach the replica whatever the database.
//!
//! The subset replica then holds what `AccountSet::on_subset` describes.
//!
//! Statements about routines and events (`CREATE/ALTER/DROP PROCEDURE`,
//! `FUNCTION`, `EVENT`) name no table, so no table pattern filters them,
//! and `replicate_do_db` would go by the session's default database, which
//! is not the routine's (`USE keep; CREATE PROCEDURE other.p` is logged
//! with `keep`). They run on every replica, and one about a database the
//! replica lacks stops it (ERROR 1049). So a subset replica holds every
//! database of the master with its routines and events and no table
//! ([`Manifest::outside_subset`](replseed_stage::Manifest::outside_subset)), and
//! the filter ends with `%.`: a replica checks `CREATE/ALTER/DROP
//! DATABASE d` against the patterns as `d.` (`Rpl_filter::db_ok_with_wild_table`),
//! which `%.` matches and no table `d.t` does, so databases created later
//! reach it too. Views and triggers name a table and stay filtered.

use mysql_async::Conn;
use replseed_db::{exec, first, text, DbError, Server};
use replseed_stage::manifest::Manifest;

/// The pattern that lets account statements through (see the module doc).
const ACCOUNTS_PATTERN: &str = "mysql.%";

/// The pattern that lets every database's own statements through and no
/// table: a replica matches `CREATE/ALTER/DROP DATABASE d` against the
/// patterns as the string `d.`, which `%.` matches, while a table `d.t`
/// needs something after the dot (see the module doc).
const DATABASES_PATTERN: &str = "%.";

/// The `replicate_wild_do_table` value a replica of `m` needs, if `m` is a
/// subset: its databases, and the privilege tables when the snapshot has
/// accounts. Wildcards and backslashes in names are escaped.
pub fn wild_do_table(m: &Manifest) -> Result<Option<String>, String> {
    let Some(dbs) = &m.subset else {
        return Ok(None);
    };
    let mut patterns = Vec::new();
    for d in dbs {
        if d.contains(',') {
            return Err(format!(
                "database `{d}` has a comma in its name, which a replication filter cannot express"
            ));
        }
        let escaped: String = d
            .chars()
            .flat_map(|c| match c {
                '_' | '%' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        patterns.push(format!("{escaped}.%"));
    }
    if m.accounts.is_some() {
        patterns.push(ACCOUNTS_PATTERN.into());
    }
    patterns.push(DATABASES_PATTERN.into());
    Ok(Some(patterns.join(",")))
}

/// The databases of a filter made by [`wild_do_table`] (not `mysql`, whose
/// pattern is there for the accounts).
pub fn databases(filter: &str) -> Vec<String> {
    as_set(filter)
        .into_iter()
        .filter(|p| p != ACCOUNTS_PATTERN)
        .filter_map(|p| p.strip_suffix(".%").map(str::to_string))
        .map(|p| {
            let mut out = String::new();
            let mut chars = p.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    out.extend(chars.next());
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect()
}

/// The line of the `[mysqld]` section that makes the filter permanent.
pub fn my_cnf_line(filter: &str) -> String {
    format!("replicate_wild_do_table = {filter}")
}

fn as_set(s: &str) -> std::collections::BTreeSet<String> {
    s.split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The replica's current `replicate_wild_do_table`.
pub async fn current(conn: &mut Conn, server: &Server) -> Result<String, DbError> {
    let r = first(conn, server, "SELECT @@GLOBAL.replicate_wild_do_table", ()).await?;
    Ok(r.first().map(text).unwrap_or_default())
}

/// Sets the filter (the replica must be stopped).
pub async fn set(conn: &mut Conn, server: &Server, filter: &str) -> Result<(), DbError> {
    exec(
        conn,
        server,
        "SET GLOBAL replicate_wild_do_table=?",
        (filter,),
    )
    .await
}

/// `None` when the replica has the filter; otherwise what is wrong and
/// what to do.
pub async fn missing(
    conn: &mut Conn,
    server: &Server,
    filter: &str,
) -> Result<Option<String>, DbError> {
    let now = current(conn, server).await?;
    if as_set(&now) == as_set(filter) {
        return Ok(None);
    }
    Ok(Some(format!(
        "this subset replica's replication filter is missing or changed (replicate_wild_do_table is '{now}', it needs '{filter}'; a restart forgets a filter set at run time): without it the first write to another database stops replication. Add `{}` to the [mysqld] section of its my.cnf and restart it, or run STOP SLAVE; SET GLOBAL replicate_wild_do_table='{filter}'; START SLAVE",
        my_cnf_line(filter)
    )))
}

/// The filter recorded at hand-off for the snapshot this replica
/// replicates from (`None` for a full replica, or no hand-off recorded).
pub async fn recorded(conn: &mut Conn, server: &Server) -> Result<Option<String>, DbError> {
    let r = replseed_db::rows(
        conn,
        server,
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='replseed' AND TABLE_NAME='replication_filters'",
        (),
    )
    .await?;
    if r.first().map(|r| text(&r[0])).as_deref() != Some("1") {
        return Ok(None);
    }
    let r = replseed_db::rows(
        conn,
        server,
        "SELECT f.wild_do_table FROM replseed.replication_filters f JOIN replseed.load_runs r USING (snapshot) \
         WHERE r.status='replicating' ORDER BY r.started_at DESC LIMIT 1",
        (),
    )
    .await?;
    Ok(r.first().map(|r| text(&r[0])).filter(|f| !f.is_empty()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns_escape_wildcards() {
        let m: replseed_stage::Manifest = serde_json::from_value(serde_json::json!({
            "format": "replseed-snapshot", "format_version": 1, "snapshot": "s", "tool_version": "x",
            "started_at": "", "finished_at": "",
            "source": {"version": "", "server_id": 1, "hostname": "", "port": 1, "gtid_domain_id": 0,
                       "lower_case_table_names": 0, "sql_mode": "", "charset": "", "collation": ""},
            "position": {"binlog_file": "", "binlog_pos": 0, "gtid": "", "gtid_source": "", "gtid_binlog_state": ""},
            "consistency": {"method": "", "attempts": 0, "workers": 0, "worker_positions": [],
                            "commit_blocked_ms": 0, "ddl_blocked_ms": 0, "non_transactional_tables": []},
            "settings": {"chunk_rows": 1, "chunk_bytes": 1, "compression": "", "threads": 1},
            "databases": [], "subset": ["shop", "crm_2024", "a%b"], "totals": {"tables": 0, "rows": 0, "bytes": 0, "chunks": 0}
        }))
        .unwrap();
        assert_eq!(
            super::wild_do_table(&m).unwrap().as_deref(),
            Some("shop.%,crm\\_2024.%,a\\%b.%,%.")
        );
        let mut with_accounts = m.clone();
        with_accounts.accounts = Some(replseed_stage::manifest::StagedFile {
            path: "accounts.json".into(),
            bytes: 1,
            sha256: String::new(),
            count: 1,
        });
        let f = super::wild_do_table(&with_accounts).unwrap().unwrap();
        assert_eq!(f, "shop.%,crm\\_2024.%,a\\%b.%,mysql.%,%.");
        assert_eq!(super::databases(&f).len(), 3);
        assert!(super::as_set("a.%, b.%") == super::as_set("b.%,a.%"));
        assert_eq!(
            super::databases("shop.%,crm\\_2024.%"),
            vec!["crm_2024".to_string(), "shop".to_string()]
        );
    }
}
