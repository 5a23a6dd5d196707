//! Accounts, roles and grants: copied with their password hashes, equal on
//! master and replica, and replication goes on through account statements.

use std::collections::BTreeMap;

use crate::common::*;

const ACCOUNTS_SQL: &str = "CREATE DATABASE app; USE app; \
    CREATE TABLE t1 (id INT PRIMARY KEY, pub INT, secret INT); CREATE TABLE t2 (id INT PRIMARY KEY); \
    CREATE PROCEDURE p1() SELECT 1; CREATE FUNCTION f1() RETURNS INT DETERMINISTIC RETURN 1; \
    CREATE ROLE r_read; CREATE ROLE r_admin; CREATE ROLE r_nested; \
    GRANT SELECT ON app.* TO r_read; GRANT ALL ON app.* TO r_admin; GRANT r_read TO r_nested; \
    CREATE USER 'app'@'10.0.%' IDENTIFIED BY 'pw1' WITH MAX_QUERIES_PER_HOUR 100 MAX_USER_CONNECTIONS 5; \
    GRANT SELECT (pub), UPDATE (secret, pub) ON app.t1 TO 'app'@'10.0.%'; \
    GRANT r_read TO 'app'@'10.0.%'; SET DEFAULT ROLE r_read FOR 'app'@'10.0.%'; \
    CREATE USER 'ed'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('edpw'); \
    GRANT EXECUTE ON PROCEDURE app.p1 TO 'ed'@'%'; GRANT EXECUTE, ALTER ROUTINE ON FUNCTION app.f1 TO 'ed'@'%'; \
    CREATE USER 'locked'@'localhost' IDENTIFIED BY 'x' ACCOUNT LOCK PASSWORD EXPIRE; \
    CREATE USER 'tls'@'%' IDENTIFIED BY 'y' REQUIRE SSL PASSWORD EXPIRE INTERVAL 30 DAY; \
    GRANT SELECT ON `app\\_%`.* TO 'tls'@'%'; \
    CREATE USER 'multi'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('a') OR mysql_native_password USING PASSWORD('b'); \
    GRANT PROXY ON 'app'@'10.0.%' TO 'multi'@'%'; \
    GRANT r_admin TO 'multi'@'%' WITH ADMIN OPTION; GRANT r_nested TO 'multi'@'%'; \
    GRANT RELOAD, PROCESS ON *.* TO 'multi'@'%' WITH GRANT OPTION; \
    CREATE USER 'nopw'@'127.0.0.1'; \
    GRANT SELECT ON app.t2 TO PUBLIC;";

async fn server(id: u32, ed25519: bool) -> MariaDb {
    MariaDb::start_with(MariaDbOptions {
        server_id: id,
        extra_args: if ed25519 {
            vec!["--plugin-load-add=auth_ed25519".into()]
        } else {
            Vec::new()
        },
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Every account and role but the server's own, as the server shows them,
/// and the privilege tables' rows (grantor and timestamps aside).
async fn accounts(db: &MariaDb) -> BTreeMap<String, String> {
    let mut c = db.conn().await.unwrap();
    let mut out = BTreeMap::new();
    let list = query(
        &mut c,
        "SELECT User, Host, IFNULL(JSON_VALUE(Priv,'$.is_role'),0), IFNULL(JSON_VALUE(Priv,'$.default_role'),'') FROM mysql.global_priv \
         WHERE User NOT IN ('root','mariadb.sys','mysql','','PUBLIC') ORDER BY 1, 2",
    )
    .await;
    for r in list {
        let (u, h, role) = (text(&r[0]), text(&r[1]), text(&r[2]) == "1");
        let who = if role {
            format!("`{u}`")
        } else {
            format!("`{u}`@`{h}`")
        };
        let mut lines = Vec::new();
        if !role {
            lines.push(text(
                &query(&mut c, &format!("SHOW CREATE USER {who}")).await[0][0],
            ));
        }
        let mut grants: Vec<String> = query(&mut c, &format!("SHOW GRANTS FOR {who}"))
            .await
            .iter()
            .map(|g| text(&g[0]))
            .collect();
        grants.sort();
        lines.extend(grants);
        lines.push(format!("default role: {}", text(&r[3])));
        out.insert(who, lines.join("\n"));
    }
    let mut public: Vec<String> = query(&mut c, "SHOW GRANTS FOR PUBLIC")
        .await
        .iter()
        .map(|g| text(&g[0]))
        .collect();
    public.sort();
    out.insert("PUBLIC".into(), public.join("\n"));
    for (name, sql) in [
        ("roles_mapping", "SELECT Host, User, Role, Admin_option FROM mysql.roles_mapping ORDER BY 1, 2, 3"),
        ("tables_priv", "SELECT Host, Db, User, Table_name, Table_priv, Column_priv FROM mysql.tables_priv ORDER BY 1, 2, 3, 4"),
        ("columns_priv", "SELECT Host, Db, User, Table_name, Column_name, Column_priv FROM mysql.columns_priv ORDER BY 1, 2, 3, 4, 5"),
        ("procs_priv", "SELECT Host, Db, User, Routine_name, Routine_type, Proc_priv FROM mysql.procs_priv ORDER BY 1, 2, 3, 4"),
        ("proxies_priv", "SELECT Host, User, Proxied_host, Proxied_user, With_grant FROM mysql.proxies_priv WHERE User <> 'root' ORDER BY 1, 2, 3, 4"),
        ("db", "SELECT * FROM mysql.db ORDER BY Host, Db, User"),
    ] {
        let rows = query(&mut c, sql).await;
        let t: Vec<String> = rows.iter().map(|r| r.iter().map(text).collect::<Vec<_>>().join("|")).collect();
        out.insert(name.into(), t.join("\n"));
    }
    c.disconnect().await.ok();
    out
}

async fn assert_same_accounts(m: &MariaDb, t: &MariaDb) {
    let (a, b) = (accounts(m).await, accounts(t).await);
    assert_same(&a, &b);
}

fn assert_same(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) {
    let mut diffs = Vec::new();
    for k in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if a.get(k) != b.get(k) {
            diffs.push(format!(
                "{k}:\n  master:  {:?}\n  replica: {:?}",
                a.get(k),
                b.get(k)
            ));
        }
    }
    assert!(diffs.is_empty(), "accounts differ:\n{}", diffs.join("\n"));
    assert!(a.len() > 8, "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_copied_and_account_statements_keep_replicating() {
    let m = server(1, true).await;
    exec(&m, ACCOUNTS_SQL).await;
    let t = server(2, true).await;
    let (_d, stage) = local_stage();
    provision_ok(&m, &t, &stage, &[]).await;
    assert_same_accounts(&m, &t).await;
    // Nothing of the replica's own in its binary log.
    assert_eq!(scalar(&t, "SELECT @@gtid_binlog_pos").await, "");

    still_replicating(
        &m,
        &t,
        "GRANT INSERT ON app.t2 TO 'app'@'10.0.%'; ALTER USER 'tls'@'%' REQUIRE NONE; \
         SET PASSWORD FOR 'app'@'10.0.%' = PASSWORD('new'); DROP USER 'locked'@'localhost'; \
         CREATE ROLE r_new; GRANT r_new TO 'ed'@'%'; CREATE USER 'late'@'%' IDENTIFIED BY 'z'; \
         REVOKE UPDATE (secret) ON app.t1 FROM 'app'@'10.0.%'; RENAME USER 'nopw'@'127.0.0.1' TO 'nopw2'@'127.0.0.1'; \
         DROP ROLE r_nested; GRANT SELECT ON app.t1 TO PUBLIC;",
    )
    .await;
    assert_same_accounts(&m, &t).await;
    let v = replseed(&verify_args(&m.url(), &t.url()), &[]).await;
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_differing_account_is_a_conflict_and_force_replaces_exactly_it() {
    let m = server(1, true).await;
    exec(&m, ACCOUNTS_SQL).await;
    let (_d, stage) = local_stage();
    extract_ok(&m.url(), &stage, "a1", &[]).await;

    let t = server(2, true).await;
    exec(
        &t,
        "CREATE USER 'app'@'10.0.%' IDENTIFIED BY 'other'; CREATE USER 'keep'@'%' IDENTIFIED BY 'k'; \
         CREATE USER 'tls'@'%' IDENTIFIED BY 'y' REQUIRE SSL PASSWORD EXPIRE INTERVAL 30 DAY;",
    )
    .await;
    let before = accounts(&t).await;
    let err = load_fails(&stage, "a1", &t.url(), &[]).await;
    assert!(err.contains("account `app`@`10.0.%`"), "{err}");
    assert!(!err.contains("`keep`"), "{err}");
    assert_eq!(accounts(&t).await, before, "nothing changed on a refusal");
    load_ok(&stage, "a1", &t.url(), &["--force"]).await;
    let got = accounts(&t).await;
    let want = accounts(&m).await;
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "{k}");
    }
    assert!(
        got.contains_key("`keep`@`%`"),
        "an account outside the snapshot stays"
    );

    // provision refuses a target with a differing account before it extracts.
    let t4 = server(5, true).await;
    exec(&t4, "CREATE USER 'ed'@'%' IDENTIFIED BY 'not-the-same'").await;
    let (_d2, stage2) = local_stage();
    let err = replseed_fails(
        &[
            "provision",
            "--source",
            &m.url(),
            "--target",
            &t4.url(),
            "--stage",
            &stage2,
        ],
        &[],
        1,
    )
    .await;
    assert!(
        err.contains("account `ed`@`%`") && err.contains("nothing was extracted"),
        "{err}"
    );

    // --no-accounts leaves them out.
    let t2 = server(3, true).await;
    load_ok(&stage, "a1", &t2.url(), &["--no-accounts"]).await;
    assert_eq!(
        scalar(
            &t2,
            "SELECT COUNT(*) FROM mysql.global_priv WHERE User IN ('app','ed','multi')"
        )
        .await,
        "0"
    );

    // A target without the plugin an account needs is refused before any change.
    let t3 = server(4, false).await;
    let err = load_fails(&stage, "a1", &t3.url(), &[]).await;
    assert!(
        err.contains("ed25519") && err.contains("--no-accounts"),
        "{err}"
    );
    assert_eq!(scalar(&t3, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ('app','replseed')").await, "0");
}

const SUBSET_SQL: &str = "CREATE DATABASE keep; CREATE TABLE keep.t (id INT PRIMARY KEY, a INT, b INT); \
    CREATE PROCEDURE keep.p() SELECT 1; \
    CREATE DATABASE other; CREATE TABLE other.t (id INT PRIMARY KEY, a INT); \
    CREATE FUNCTION other.f() RETURNS INT DETERMINISTIC RETURN 1; \
    CREATE ROLE r_keep; GRANT SELECT ON keep.* TO r_keep; \
    CREATE ROLE r_other; GRANT SELECT ON other.t TO r_other; GRANT SELECT (a) ON keep.t TO r_other; \
    CREATE USER 'app'@'%' IDENTIFIED BY 'pw' WITH MAX_USER_CONNECTIONS 3; GRANT PROCESS ON *.* TO 'app'@'%'; \
    GRANT SELECT ON other.t TO 'app'@'%'; GRANT UPDATE (a) ON other.t TO 'app'@'%'; \
    GRANT SELECT ON keep.t TO 'app'@'%'; GRANT UPDATE (a, b) ON keep.t TO 'app'@'%'; \
    GRANT EXECUTE ON PROCEDURE keep.p TO 'app'@'%'; GRANT EXECUTE ON FUNCTION other.f TO 'app'@'%'; \
    GRANT r_keep TO 'app'@'%'; GRANT r_other TO 'app'@'%'; SET DEFAULT ROLE r_keep FOR 'app'@'%'; \
    CREATE USER 'report'@'10.0.0.%' IDENTIFIED BY 'r'; GRANT SELECT ON other.* TO 'report'@'10.0.0.%'; \
    GRANT r_other TO 'report'@'10.0.0.%'; \
    CREATE USER 'gone'@'%'; GRANT SELECT ON other.t TO 'gone'@'%'; \
    GRANT SELECT ON other.t TO PUBLIC; GRANT SELECT ON keep.t TO PUBLIC;";

/// What a replica of every database but `outside` holds of `accounts`:
/// the grants on `outside`'s tables, columns and routines left out.
fn without_objects_of(
    accounts: &BTreeMap<String, String>,
    outside: &str,
) -> BTreeMap<String, String> {
    let on = [
        format!(" ON `{outside}`.`"),
        format!(" ON PROCEDURE `{outside}`.`"),
        format!(" ON FUNCTION `{outside}`.`"),
    ];
    accounts
        .iter()
        .map(|(k, v)| {
            let object_rows = matches!(k.as_str(), "tables_priv" | "columns_priv" | "procs_priv");
            let kept: Vec<&str> = v
                .lines()
                .filter(|l| {
                    if object_rows {
                        l.split('|').nth(1) != Some(outside)
                    } else {
                        !on.iter().any(|o| l.contains(o.as_str()))
                    }
                })
                .collect();
            (k.clone(), kept.join("\n"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subset_replica_holds_and_keeps_the_accounts_and_their_grants_on_the_subset() {
    let m = server(1, false).await;
    exec(&m, SUBSET_SQL).await;
    let t = server(2, false).await;
    let (_d, stage) = local_stage();
    provision_ok(&m, &t, &stage, &["--databases", "keep"]).await;
    let replica = accounts(&t).await;
    assert_same(&without_objects_of(&accounts(&m).await, "other"), &replica);
    assert!(
        replica.contains_key("`gone`@`%`") && replica.len() > 8,
        "{replica:?}"
    );

    // Account statements after the hand-off, on the subset, globally and
    // on the database left out, reach the replica or pass it by.
    still_replicating(
        &m,
        &t,
        "GRANT INSERT ON keep.t TO 'app'@'%'; GRANT INSERT ON other.t TO 'app'@'%'; \
         GRANT SELECT (a) ON other.t TO 'report'@'10.0.0.%'; \
         REVOKE UPDATE (b) ON keep.t FROM 'app'@'%'; REVOKE SELECT ON other.t FROM 'app'@'%'; \
         REVOKE EXECUTE ON FUNCTION other.f FROM 'app'@'%'; \
         ALTER USER 'app'@'%' WITH MAX_QUERIES_PER_HOUR 7; \
         SET PASSWORD FOR 'report'@'10.0.0.%' = PASSWORD('new'); \
         RENAME USER 'report'@'10.0.0.%' TO 'report2'@'10.0.0.%'; DROP USER 'gone'@'%'; \
         CREATE ROLE r_new; GRANT DELETE ON keep.* TO r_new; GRANT r_new TO 'app'@'%'; \
         SET DEFAULT ROLE r_new FOR 'app'@'%'; GRANT RELOAD ON *.* TO r_new; \
         CREATE USER 'late'@'%' IDENTIFIED BY 'l'; GRANT SELECT ON other.* TO 'late'@'%'; \
         GRANT SELECT ON other.t TO 'late'@'%'; GRANT EXECUTE ON PROCEDURE keep.p TO 'late'@'%'; \
         GRANT EXECUTE ON FUNCTION other.f TO 'late'@'%'; REVOKE SELECT ON other.t FROM PUBLIC; \
         INSERT INTO keep.t VALUES (1, 1, 1);",
    )
    .await;
    let replica = accounts(&t).await;
    assert_same(&without_objects_of(&accounts(&m).await, "other"), &replica);
    assert!(replica.contains_key("`late`@`%`") && !replica.contains_key("`gone`@`%`"));
    let (mu, tu) = (m.url(), t.url());
    for extra in [&[][..], &["--databases", "keep"][..]] {
        let v = replseed(&[&verify_args(&mu, &tu)[..], extra].concat(), &[]).await;
        assert!(
            v.status.success(),
            "verify {extra:?}: {}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
    }
}
