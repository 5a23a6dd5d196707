//! Accounts, roles and grants on the target: the snapshot's accounts object
//! (see `replseed_db::accounts`), compared with what the target has, and
//! created after every other object (grants name tables and routines).
//!
//! An account the target already has identically is left as it is; one
//! that differs is a conflict like any other object (`--force` drops and
//! recreates exactly it). The `PUBLIC` role is the server's own: it gets the
//! snapshot's grants when they differ.

use std::collections::{HashMap, HashSet};

use mysql_async::Conn;
use replseed_db::accounts::{self, Account, AccountSet, Step};
use replseed_db::{rows, text, Server};

use crate::bookkeeping::{set_state, ObjKey, States};
use crate::conflict::Conflict;
use crate::{LoadError, LoadPlan};

/// The bookkeeping key of an account.
pub fn key(a: &Account) -> ObjKey {
    ObjKey::new("account", &a.user, &a.host)
}

fn kind(a: &Account) -> &'static str {
    if a.role {
        "role"
    } else {
        "account"
    }
}

/// The snapshot's accounts, unless the load skips them or the snapshot has
/// none; for a snapshot of some databases, what a replica of them holds
/// ([`AccountSet::on_subset`]: no grants on tables or routines it leaves out).
pub async fn of_snapshot(plan: &LoadPlan) -> Result<Option<AccountSet>, LoadError> {
    if !plan.accounts {
        return Ok(None);
    }
    let set = if let Some(preview) = &plan.preview_accounts {
        preview.clone()
    } else {
        let Some(f) = &plan.manifest.accounts else {
            return Ok(None);
        };
        let bytes = plan.stage.read_file(f).await?;
        serde_json::from_slice(&bytes).map_err(|e| LoadError::Object {
            object: format!("accounts `{}`", f.path),
            detail: format!("unreadable ({e}); the snapshot is damaged"),
        })?
    };
    Ok(Some(match &plan.manifest.subset {
        Some(dbs) => set.on_subset(dbs),
        None => set,
    }))
}

fn by_name(set: &AccountSet) -> HashMap<(String, String, bool), &Account> {
    set.accounts
        .iter()
        .map(|a| ((a.user.clone(), a.host.clone(), a.role), a))
        .collect()
}

/// The snapshot's accounts the target has with another definition or other
/// grants (not counting those an interrupted load of this snapshot made).
pub async fn conflicts(
    conn: &mut Conn,
    server: &Server,
    set: &AccountSet,
    ours: &States,
) -> Result<Vec<Conflict>, LoadError> {
    let have = accounts::read(conn, server).await?;
    let have = by_name(&have);
    let mut out = Vec::new();
    for a in &set.accounts {
        if ours.contains_key(&key(a)) {
            continue;
        }
        if let Some(t) = have.get(&(a.user.clone(), a.host.clone(), a.role)) {
            if *t != a {
                out.push(Conflict {
                    key: key(a),
                    kind: kind(a).into(),
                    found: kind(a).into(),
                });
            }
        }
    }
    Ok(out)
}

/// Checks that the target has every authentication plugin the accounts use.
pub async fn check_plugins(
    conn: &mut Conn,
    server: &Server,
    set: &AccountSet,
) -> Result<(), LoadError> {
    let active: HashSet<String> = rows(
        conn,
        server,
        "SELECT LOWER(PLUGIN_NAME) FROM information_schema.PLUGINS WHERE PLUGIN_TYPE='AUTHENTICATION' AND PLUGIN_STATUS='ACTIVE'",
        (),
    )
    .await?
    .iter()
    .map(|r| text(&r[0]))
    .collect();
    for a in &set.accounts {
        for p in a.plugins() {
            if !active.contains(&p.to_ascii_lowercase()) {
                return Err(LoadError::Preflight {
                    server: server.name(),
                    detail: format!(
                        "account {} authenticates with the plugin {p}, which this server has not loaded; install it (INSTALL SONAME 'auth_{p}', and plugin_load_add in the config file) or load with --no-accounts",
                        a.name()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// `DROP USER`/`DROP ROLE` for a conflicting account, for `--force`.
pub fn drop_statement(key: &ObjKey, found: &str) -> String {
    let a = Account {
        user: key.db.clone(),
        host: key.name.clone(),
        role: found == "role",
        create: None,
        grants: Vec::new(),
    };
    a.drop_statement()
}

/// Creates the accounts the target does not have as in the snapshot.
pub async fn create(
    conn: &mut Conn,
    server: &Server,
    snapshot: &str,
    set: &AccountSet,
    ours: &mut States,
) -> Result<(), LoadError> {
    let have = accounts::read(conn, server).await?;
    let have_by = by_name(&have);
    let mut todo: Vec<&Account> = Vec::new();
    for a in &set.accounts {
        if ours.get(&key(a)).is_some_and(|s| s == "created") {
            continue;
        }
        match have_by.get(&(a.user.clone(), a.host.clone(), a.role)) {
            Some(t) if *t == a => {}
            Some(_) => {
                // Ours from an interrupted run, or replaced by --force (its
                // conflict was dropped already): recreate it.
                replseed_db::exec(conn, server, &a.drop_statement(), ()).await?;
                todo.push(a);
            }
            None => todo.push(a),
        }
    }
    for a in &todo {
        set_state(conn, server, snapshot, &key(a), "pending").await?;
    }
    let public = (have.public_grants != set.public_grants).then_some(set.public_grants.as_slice());
    let mut steps: Vec<(Step, String)> = todo.iter().flat_map(|a| a.replay()).collect();
    // Role grants again for every account: recreating a role drops its grants.
    if todo.iter().any(|a| a.role) {
        for a in &set.accounts {
            if !todo.contains(&a) {
                steps.extend(
                    a.replay()
                        .into_iter()
                        .filter(|(s, _)| *s >= Step::RoleGrant),
                );
            }
        }
    }
    steps.sort_by_key(|(s, _)| *s);
    for (_, sql) in &steps {
        replseed_db::exec(conn, server, sql, ())
            .await
            .map_err(|e| LoadError::Object {
                object: "accounts".into(),
                detail: format!("{}: {}", e.what, e.message),
            })?;
    }
    if let Some(public) = public {
        accounts::set_public_grants(conn, server, &have.public_grants, public).await?;
    }
    for a in &todo {
        set_state(conn, server, snapshot, &key(a), "created").await?;
        ours.insert(key(a), "created".into());
    }
    Ok(())
}
