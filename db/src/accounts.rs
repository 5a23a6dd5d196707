//! Accounts, roles and grants of a server, read in a form that can be
//! staged, compared and replayed.
//!
//! * Every account and role comes from `mysql.global_priv`; an account's
//!   definition is its `SHOW CREATE USER` (password hash, plugins, TLS
//!   requirements, limits, lock and expiry: `SHOW GRANTS` lacks the last
//!   two), its privileges the lines of `SHOW GRANTS` granted to it.
//! * Accounts every server has of its own are skipped: `root`, `mysql` and
//!   `mariadb.sys` on any host, anonymous accounts, and the `PUBLIC` role
//!   (whose grants are carried separately).
//! * Replay order ([`Account::replay`]): roles, users, privileges, role
//!   grants, proxies, default roles. The `ON *.*` line loses its
//!   `IDENTIFIED ...`/`REQUIRE`/limits tail: replaying it would reset the
//!   password (and clear `PASSWORD EXPIRE`).

use mysql_async::Conn;
use serde::{Deserialize, Serialize};

use crate::{exec, rows, text, DbError, Server};

/// One account or role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// User (or role) name.
    pub user: String,
    /// Host; empty for a role.
    pub host: String,
    /// Whether this is a role.
    pub role: bool,
    /// `SHOW CREATE USER` (users only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<String>,
    /// `SHOW GRANTS` lines granted to this account, sorted.
    pub grants: Vec<String>,
}

/// A server's accounts, as staged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSet {
    /// Accounts and roles, roles first, then by name.
    pub accounts: Vec<Account>,
    /// Grants of the `PUBLIC` role, sorted.
    pub public_grants: Vec<String>,
}

/// Whether an account belongs to the server itself and is never copied.
pub fn is_system_account(user: &str, role: bool) -> bool {
    user.is_empty()
        || (role && user == "PUBLIC")
        || matches!(user, "root" | "mysql" | "mariadb.sys")
}

fn quote_name(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

impl Account {
    /// The grantee as `SHOW GRANTS` prints it: `` `u`@`h` `` or `` `role` ``.
    pub fn grantee(&self) -> String {
        if self.role {
            quote_name(&self.user)
        } else {
            format!("{}@{}", quote_name(&self.user), quote_name(&self.host))
        }
    }

    /// `u@h` (or the role name), for messages.
    pub fn name(&self) -> String {
        if self.role {
            format!("role {}", self.user)
        } else {
            format!("{}@{}", self.user, self.host)
        }
    }

    /// The statement that removes this account.
    pub fn drop_statement(&self) -> String {
        if self.role {
            format!("DROP ROLE IF EXISTS {}", self.grantee())
        } else {
            format!("DROP USER IF EXISTS {}", self.grantee())
        }
    }

    /// The authentication plugins the account uses (`IDENTIFIED VIA p`).
    pub fn plugins(&self) -> Vec<String> {
        let Some(create) = &self.create else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for part in create
            .split(" VIA ")
            .skip(1)
            .chain(create.split(" OR ").skip(1))
        {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }

    /// The statements that create the account, by [`Step`].
    pub fn replay(&self) -> Vec<(Step, String)> {
        let mut out = Vec::new();
        match (&self.create, self.role) {
            (_, true) => out.push((Step::Create, format!("CREATE ROLE {}", self.grantee()))),
            (Some(c), false) => out.push((Step::Create, c.clone())),
            (None, false) => {}
        }
        let grantee = self.grantee();
        for g in &self.grants {
            if g.starts_with("SET DEFAULT ROLE ") {
                out.push((Step::DefaultRole, g.clone()));
            } else if g.starts_with("GRANT PROXY ON ") {
                out.push((Step::Proxy, g.clone()));
            } else if g.starts_with("GRANT `") {
                out.push((Step::RoleGrant, g.clone()));
            } else if let Some(line) = privilege_line(g, &grantee) {
                out.push((Step::Privileges, line));
            }
        }
        out
    }
}

/// Replay steps, in the order they must run over all accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// `CREATE ROLE` / `CREATE USER`.
    Create,
    /// Privileges on objects.
    Privileges,
    /// `GRANT role TO ...` (every role exists by then).
    RoleGrant,
    /// `GRANT PROXY`.
    Proxy,
    /// `SET DEFAULT ROLE`.
    DefaultRole,
}

/// A privilege line ready to replay: the `ON *.*` line without the
/// account's authentication, TLS and limits (which `CREATE USER` sets);
/// `None` for a bare `GRANT USAGE ON *.*`.
fn privilege_line(line: &str, grantee: &str) -> Option<String> {
    if !line.contains(" ON *.* TO ") {
        return Some(line.to_string());
    }
    let to = format!(" TO {grantee}");
    let at = line.find(&to)? + to.len();
    let (head, tail) = line.split_at(at);
    let grant_option = tail.contains("GRANT OPTION");
    if head.starts_with("GRANT USAGE ON *.* TO ") && !grant_option {
        return None;
    }
    Some(if grant_option {
        format!("{head} WITH GRANT OPTION")
    } else {
        head.to_string()
    })
}

/// The lines of `SHOW GRANTS` that grant something to `grantee` (a role's
/// listing also shows the grants of the roles it holds).
fn own_lines(lines: Vec<String>, grantee: &str) -> Vec<String> {
    let to = format!(" TO {grantee}");
    let for_ = format!(" FOR {grantee}");
    let mut own: Vec<String> = lines
        .into_iter()
        .filter(|l| {
            let ends = |p: &str| {
                l.find(p)
                    .map(|i| &l[i + p.len()..])
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
            };
            ends(&to) || ends(&for_)
        })
        .collect();
    own.sort();
    own
}

async fn grants_for(
    conn: &mut Conn,
    server: &Server,
    grantee: &str,
) -> Result<Vec<String>, DbError> {
    let r = rows(conn, server, &format!("SHOW GRANTS FOR {grantee}"), ()).await?;
    Ok(own_lines(r.iter().map(|r| text(&r[0])).collect(), grantee))
}

/// Reads every account and role of `server` but the server's own.
/// Accounts the server cannot show (a host name under
/// `skip_name_resolve`) are left out with a warning.
pub async fn read(conn: &mut Conn, server: &Server) -> Result<AccountSet, DbError> {
    let list = rows(
        conn,
        server,
        "SELECT User, Host, IFNULL(JSON_VALUE(Priv, '$.is_role'), 0) FROM mysql.global_priv",
        (),
    )
    .await?;
    let mut accounts = Vec::new();
    for r in list {
        let (user, host) = (text(&r[0]), text(&r[1]));
        let role = matches!(text(&r[2]).as_str(), "1" | "true");
        if is_system_account(&user, role) {
            continue;
        }
        let mut a = Account {
            user,
            host,
            role,
            create: None,
            grants: Vec::new(),
        };
        let grantee = a.grantee();
        if !role {
            match crate::first(conn, server, &format!("SHOW CREATE USER {grantee}"), ()).await {
                Ok(row) => a.create = row.first().map(text),
                Err(e) if matches!(e.code, Some(1133) | Some(1141)) => {
                    tracing::warn!(account = %a.name(), "the server cannot show this account ({}); it is not copied", e.message);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        a.grants = grants_for(conn, server, &grantee).await?;
        accounts.push(a);
    }
    accounts.sort_by(|a, b| (!a.role, &a.user, &a.host).cmp(&(!b.role, &b.user, &b.host)));
    let public_grants = match grants_for(conn, server, "PUBLIC").await {
        Ok(g) => g,
        Err(e) if matches!(e.code, Some(1141) | Some(1133) | Some(1064)) => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(AccountSet {
        accounts,
        public_grants,
    })
}

/// Gives the `PUBLIC` role the grants `want` instead of `have` (the
/// caller's session has `sql_log_bin=0`): the lines only `have` has are
/// revoked, those only `want` has are granted.
pub async fn set_public_grants(
    conn: &mut Conn,
    server: &Server,
    have: &[String],
    want: &[String],
) -> Result<(), DbError> {
    for g in have.iter().filter(|g| !want.contains(g)) {
        if let Some(revoke) = revoke_line(g) {
            exec(conn, server, &revoke, ()).await?;
        }
    }
    for g in want.iter().filter(|g| !have.contains(g)) {
        if let Some(line) = privilege_line(g, "PUBLIC") {
            exec(conn, server, &line, ()).await?;
        }
    }
    Ok(())
}

/// The `REVOKE` that undoes a `GRANT privs ON obj TO grantee` line.
fn revoke_line(line: &str) -> Option<String> {
    let rest = line.strip_prefix("GRANT ")?;
    let to = rest.rfind(" TO ")?;
    let (what, grantee) = (&rest[..to], &rest[to + 4..]);
    let grantee = grantee.split(" WITH ").next()?;
    Some(format!("REVOKE {what} FROM {grantee}"))
}

/// What a privilege line grants on.
#[derive(Debug, PartialEq, Eq)]
enum Scope {
    /// `ON *.*`, a role, a proxy or a default role: the account's own.
    Account,
    /// `ON db.*`.
    Database,
    /// A table, its columns, or a routine of database `.0`.
    Object(String),
}

/// One identifier at the start of `s` (`` `a``b` `` or bare), and the rest.
fn ident(s: &str) -> Option<(String, &str)> {
    if let Some(body) = s.strip_prefix('`') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '`' {
                if body[i + 1..].starts_with('`') {
                    chars.next();
                    out.push('`');
                } else {
                    return Some((out, &body[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        let end = s.find(['.', ' ']).unwrap_or(s.len());
        Some((s[..end].to_string(), &s[end..]))
    }
}

/// The scope of a `SHOW GRANTS` line (`GRANT privs [(cols)] ON [PROCEDURE|
/// FUNCTION|PACKAGE [BODY]] obj TO ...`); quoted names may hold anything.
fn scope(line: &str) -> Scope {
    if !line.starts_with("GRANT ") || line.starts_with("GRANT PROXY ON ") {
        return Scope::Account;
    }
    // The first ` ON ` outside backquotes.
    let mut quoted = false;
    let mut at = None;
    for (i, c) in line.char_indices() {
        match c {
            '`' => quoted = !quoted,
            ' ' if !quoted && line[i..].starts_with(" ON ") => {
                at = Some(i + 4);
                break;
            }
            _ => {}
        }
    }
    let Some(at) = at else {
        return Scope::Account; // GRANT role TO ...
    };
    let mut obj = &line[at..];
    for kind in ["PROCEDURE ", "FUNCTION ", "PACKAGE BODY ", "PACKAGE "] {
        if let Some(rest) = obj.strip_prefix(kind) {
            obj = rest;
            break;
        }
    }
    if obj.starts_with("*.*") {
        return Scope::Account;
    }
    match ident(obj) {
        Some((_, rest)) if rest.starts_with(".*") => Scope::Database,
        Some((db, _)) => Scope::Object(db),
        None => Scope::Account,
    }
}

impl AccountSet {
    /// What a replica of the databases `dbs` holds of these accounts: every
    /// account and role with its definition, its global and database-level
    /// grants (a database need not exist to be granted on), its roles,
    /// proxies and default role, and its grants on the tables, columns and
    /// routines of `dbs` only: what the subset replica's replication filter
    /// lets through afterwards (`replseed_catchup::filters`).
    pub fn on_subset(&self, dbs: &[String]) -> AccountSet {
        let keep = |g: &String| match scope(g) {
            Scope::Object(db) => dbs.contains(&db),
            Scope::Account | Scope::Database => true,
        };
        AccountSet {
            accounts: self
                .accounts
                .iter()
                .map(|a| Account {
                    grants: a.grants.iter().filter(|g| keep(g)).cloned().collect(),
                    ..a.clone()
                })
                .collect(),
            public_grants: self
                .public_grants
                .iter()
                .filter(|g| keep(g))
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(grants: &[&str]) -> Account {
        Account {
            user: "app".into(),
            host: "10.0.%".into(),
            role: false,
            create: Some("CREATE USER `app`@`10.0.%` IDENTIFIED VIA ed25519 USING 'x' OR mysql_native_password USING '*AB' OR unix_socket ACCOUNT LOCK".into()),
            grants: grants.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn replay_strips_the_global_tail_and_orders_steps() {
        let a = user(&[
            "GRANT USAGE ON *.* TO `app`@`10.0.%` IDENTIFIED BY PASSWORD '*AB' WITH MAX_QUERIES_PER_HOUR 5",
            "GRANT SELECT, RELOAD ON *.* TO `app`@`10.0.%` IDENTIFIED BY PASSWORD '*AB' WITH GRANT OPTION",
            "GRANT SELECT (`c`) ON `db`.`t` TO `app`@`10.0.%`",
            "GRANT `r1` TO `app`@`10.0.%` WITH ADMIN OPTION",
            "GRANT PROXY ON `x`@`%` TO `app`@`10.0.%`",
            "SET DEFAULT ROLE `r1` FOR `app`@`10.0.%`",
        ]);
        let steps = a.replay();
        let kinds: Vec<Step> = steps.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            kinds,
            vec![
                Step::Create,
                Step::Privileges,
                Step::Privileges,
                Step::RoleGrant,
                Step::Proxy,
                Step::DefaultRole
            ]
        );
        assert_eq!(
            steps[1].1,
            "GRANT SELECT, RELOAD ON *.* TO `app`@`10.0.%` WITH GRANT OPTION"
        );
        assert_eq!(
            a.plugins(),
            vec!["ed25519", "mysql_native_password", "unix_socket"]
        );
    }

    #[test]
    fn a_roles_listing_keeps_its_own_lines() {
        let lines = vec![
            "GRANT `r_read` TO `r_nested`".to_string(),
            "GRANT USAGE ON *.* TO `r_nested`".to_string(),
            "GRANT USAGE ON *.* TO `r_read`".to_string(),
            "GRANT SELECT ON `app`.* TO `r_read`".to_string(),
            "GRANT INSERT ON `app`.* TO `r_nested_x`".to_string(),
        ];
        assert_eq!(
            own_lines(lines, "`r_nested`"),
            vec![
                "GRANT USAGE ON *.* TO `r_nested`",
                "GRANT `r_read` TO `r_nested`"
            ]
        );
        assert_eq!(
            revoke_line("GRANT SELECT, INSERT ON `test`.* TO PUBLIC WITH GRANT OPTION").as_deref(),
            Some("REVOKE SELECT, INSERT ON `test`.* FROM PUBLIC")
        );
        assert!(is_system_account("root", false));
        assert!(is_system_account("PUBLIC", true));
        assert!(!is_system_account("PUBLIC", false));
    }

    #[test]
    fn a_subset_keeps_the_account_and_its_grants_on_the_subset() {
        let a = user(&[
            "GRANT PROCESS ON *.* TO `app`@`10.0.%`",
            "GRANT SELECT ON `other`.* TO `app`@`10.0.%`",
            "GRANT SELECT ON `keep`.`t` TO `app`@`10.0.%`",
            "GRANT SELECT (`a ON b`), UPDATE (`x`) ON `other`.`t` TO `app`@`10.0.%`",
            "GRANT SELECT ON `oth``er`.`t` TO `app`@`10.0.%`",
            "GRANT EXECUTE ON PROCEDURE `keep`.`p` TO `app`@`10.0.%`",
            "GRANT EXECUTE ON FUNCTION `other`.`f` TO `app`@`10.0.%`",
            "GRANT EXECUTE ON PACKAGE BODY `other`.`pk` TO `app`@`10.0.%`",
            "GRANT `r1` TO `app`@`10.0.%`",
            "GRANT PROXY ON `x`@`%` TO `app`@`10.0.%`",
            "SET DEFAULT ROLE `r1` FOR `app`@`10.0.%`",
        ]);
        let set = AccountSet {
            accounts: vec![a.clone()],
            public_grants: vec![
                "GRANT SELECT ON `other`.`t2` TO PUBLIC".into(),
                "GRANT SELECT ON `keep`.`t2` TO PUBLIC".into(),
            ],
        };
        let sub = set.on_subset(&["keep".to_string()]);
        assert_eq!(sub.accounts[0].create, a.create);
        let kept: Vec<&str> = sub.accounts[0].grants.iter().map(String::as_str).collect();
        assert_eq!(
            kept,
            vec![
                "GRANT PROCESS ON *.* TO `app`@`10.0.%`",
                "GRANT SELECT ON `other`.* TO `app`@`10.0.%`",
                "GRANT SELECT ON `keep`.`t` TO `app`@`10.0.%`",
                "GRANT EXECUTE ON PROCEDURE `keep`.`p` TO `app`@`10.0.%`",
                "GRANT `r1` TO `app`@`10.0.%`",
                "GRANT PROXY ON `x`@`%` TO `app`@`10.0.%`",
                "SET DEFAULT ROLE `r1` FOR `app`@`10.0.%`",
            ]
        );
        assert_eq!(
            sub.public_grants,
            vec!["GRANT SELECT ON `keep`.`t2` TO PUBLIC"]
        );
        assert_eq!(
            scope("GRANT SELECT ON `oth``er`.`t` TO `u`@`%`"),
            Scope::Object("oth`er".into())
        );
    }
}
