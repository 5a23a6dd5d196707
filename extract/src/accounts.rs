//! The master's accounts, roles and grants, taken at the snapshot's cut.
//!
//! Privilege tables are not transactional, so they are not in the workers'
//! snapshot, and `BACKUP STAGE BLOCK_DDL` does not hold account statements
//! back. They are read right after the cut instead, and the binary log
//! between the cut and the end of the read is checked for account changes
//! (account statements and writes to the privilege tables): with none
//! there, the accounts read are exactly those at the cut. Otherwise the
//! extract stops, since a replica would replay the change on top of it.

use mysql_async::Conn;
use replseed_db::accounts::{self, AccountSet};
use replseed_db::{quote_str, rows, text, Server};

use crate::ExtractError;

/// Statements that change accounts (MariaDB logs them as statements).
const ACL_STATEMENTS: &[&str] = &[
    "GRANT ",
    "REVOKE ",
    "CREATE USER",
    "ALTER USER",
    "DROP USER",
    "RENAME USER",
    "SET PASSWORD",
    "CREATE ROLE",
    "DROP ROLE",
    "SET DEFAULT ROLE",
    "CREATE OR REPLACE USER",
    "CREATE OR REPLACE ROLE",
    "FLUSH PRIVILEGES",
];

/// Privilege tables whose direct writes change accounts.
const PRIVILEGE_TABLES: &[&str] = &[
    "global_priv",
    "user",
    "db",
    "tables_priv",
    "columns_priv",
    "procs_priv",
    "proxies_priv",
    "roles_mapping",
];

/// Whether a binlog event's `Info` changes accounts.
fn changes_accounts(event_type: &str, info: &str) -> bool {
    match event_type {
        "Query" => {
            // `use `db`; GRANT ...` or a bare statement, possibly commented.
            let stmt = info
                .split_once("; ")
                .filter(|(head, _)| head.starts_with("use "))
                .map_or(info, |(_, rest)| rest);
            let upper = stmt.trim_start().to_ascii_uppercase();
            ACL_STATEMENTS.iter().any(|s| upper.starts_with(s))
        }
        "Table_map" => PRIVILEGE_TABLES
            .iter()
            .any(|t| info.contains(&format!("(mysql.{t})"))),
        _ => false,
    }
}

/// Reads the accounts (no check: the caller holds them still).
pub async fn read(conn: &mut Conn, server: &Server) -> Result<AccountSet, ExtractError> {
    accounts::read(conn, server)
        .await
        .map_err(|e| privilege_error(server, e))
}

fn privilege_error(server: &Server, e: replseed_db::DbError) -> ExtractError {
    match e.code {
        Some(1142) | Some(1044) => ExtractError::Privilege {
            server: server.name(),
            detail: format!(
                "cannot read the accounts ({}); or extract with --no-accounts",
                e.message
            ),
            grant: "GRANT SELECT ON mysql.*".into(),
        },
        _ => e.into(),
    }
}

/// Reads the accounts and checks that none changed since the cut at
/// `file:pos`.
pub async fn read_at_cut(
    conn: &mut Conn,
    server: &Server,
    file: &str,
    pos: u64,
) -> Result<AccountSet, ExtractError> {
    let set = read(conn, server).await?;
    if let Some(change) = first_change_since(conn, server, file, pos).await? {
        return Err(ExtractError::Inconsistent {
            server: server.name(),
            detail: format!("accounts changed while the snapshot was taken ({change})"),
        });
    }
    Ok(set)
}

/// The first account change in the binary log from `file:pos` to its end.
async fn first_change_since(
    conn: &mut Conn,
    server: &Server,
    file: &str,
    pos: u64,
) -> Result<Option<String>, ExtractError> {
    let logs: Vec<String> = rows(conn, server, "SHOW BINARY LOGS", ())
        .await?
        .iter()
        .map(|r| text(&r[0]))
        .collect();
    let Some(start) = logs.iter().position(|l| l == file) else {
        return Err(ExtractError::SourceConfig {
            server: server.name(),
            detail: format!("the snapshot's binlog {file} was purged during the extract; retry"),
        });
    };
    for (i, log) in logs[start..].iter().enumerate() {
        // SHOW BINLOG EVENTS takes literals only.
        let sql = if i == 0 {
            format!("SHOW BINLOG EVENTS IN {} FROM {pos}", quote_str(log))
        } else {
            format!("SHOW BINLOG EVENTS IN {}", quote_str(log))
        };
        for ev in rows(conn, server, &sql, ()).await? {
            let (kind, info) = (text(&ev[2]), text(&ev[5]));
            if changes_accounts(&kind, &info) {
                return Ok(Some(format!(
                    "{log}:{}: {}",
                    text(&ev[1]),
                    info.chars().take(80).collect::<String>()
                )));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_changes_are_recognized() {
        assert!(changes_accounts(
            "Query",
            "use `shop`; GRANT SELECT ON shop.* TO 'a'@'%'"
        ));
        assert!(changes_accounts(
            "Query",
            "CREATE USER 'x'@'%' IDENTIFIED BY PASSWORD '*AB'"
        ));
        assert!(changes_accounts(
            "Table_map",
            "table_id: 41 (mysql.global_priv)"
        ));
        assert!(!changes_accounts(
            "Query",
            "use `shop`; CREATE TABLE grants (id INT)"
        ));
        assert!(!changes_accounts("Table_map", "table_id: 42 (shop.user)"));
        assert!(!changes_accounts("Query", "BEGIN"));
    }
}
