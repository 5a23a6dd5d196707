//! TLS on `replseed serve`'s replication link, against real replicas: a
//! replica that verifies serve's certificate replicates over TLS and ends
//! identical (serve logs the TLS version of the session), `--require-ssl`
//! refuses a plain replica with a clear Last_IO_Error, a replica that
//! trusts another CA fails cleanly and gets nothing, and `catchup`
//! replays the archive to a replica over verified TLS. With `--ssl-ca`
//! only a replica with a certificate signed by it gets in; a bad key stops
//! serve naming the file.

use std::path::Path;
use std::time::{Duration, Instant};

use replseed_testkit::TlsFiles;

use crate::common::*;
use crate::serve_limits::{serve, slave_status, PASSWORD};
use crate::tls::make_certs;

/// A master with a snapshot in a local stage, writes after it archived,
/// and a replica loaded from the snapshot. Returns the stage (and its
/// directory), the master, the replica, the snapshot's GTID and the goal.
async fn archived_master_and_loaded_replica(
) -> (tempfile::TempDir, String, MariaDb, MariaDb, String, String) {
    let (dir, stage) = local_stage();
    let m = master().await;
    exec(
        &m,
        "CREATE DATABASE a; USE a; CREATE TABLE a.t (id INT PRIMARY KEY, v INT, c VARCHAR(60)); \
         INSERT INTO a.t SELECT seq, seq, 'before' FROM seq_1_to_1000;",
    )
    .await;
    let snap = extract_ok(&m.url(), &stage, "s1", &["--no-accounts", "--json"]).await;
    let gtid = snap["gtid"].as_str().unwrap().to_string();
    exec(
        &m,
        "USE a; INSERT INTO a.t SELECT seq, seq, 'after' FROM seq_1001_to_2000; \
         UPDATE a.t SET v = v + 1 WHERE id <= 300; DELETE FROM a.t WHERE id > 1900;",
    )
    .await;
    let goal = scalar(&m, "SELECT @@gtid_binlog_pos").await;
    archive_now(&m, &stage).await;
    let t = replica(2).await;
    load_ok(&stage, "s1", &t.url(), &["--no-accounts"]).await;
    (dir, stage, m, t, gtid, goal)
}

/// serve's TLS flags for `files`.
fn tls_flags(files: &TlsFiles) -> Vec<String> {
    vec![
        "--ssl-cert".into(),
        files.cert.display().to_string(),
        "--ssl-key".into(),
        files.key.display().to_string(),
    ]
}

/// `CHANGE MASTER` options of a replica that verifies serve against `ca`.
fn verified(ca: &Path) -> String {
    format!(
        ", MASTER_SSL=1, MASTER_SSL_CA='{}', MASTER_SSL_VERIFY_SERVER_CERT=1",
        ca.display()
    )
}

/// Waits until the replica's IO thread reports an error other than
/// `before` (the previous one, until its restart clears it); (errno, error).
async fn io_error(t: &MariaDb, before: &str) -> (String, String) {
    let start = Instant::now();
    loop {
        let st = slave_status(t).await;
        if st.0 != "0" && st.1 != before {
            return st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the replica got no IO error"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The TLS version serve logged for a session, asserting there was one.
fn logged_tls(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("TLS session"))
        .unwrap_or_else(|| panic!("serve logged no TLS session:\n{log}"));
    let version = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("version="))
        .unwrap_or_else(|| panic!("no version in {line:?}"));
    assert!(
        version == "TLSv1_3" || version == "TLSv1_2",
        "not a TLS 1.2/1.3 session: {line:?}"
    );
    assert!(line.contains("cipher="), "{line:?}");
    version.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_verifying_serves_certificate_replicates_over_tls_and_ends_identical() {
    let certs = tempfile::tempdir().unwrap();
    let files = make_certs(certs.path(), "IP:127.0.0.1");
    let (_dir, stage, m, t, gtid, goal) = archived_master_and_loaded_replica().await;
    let flags = tls_flags(&files);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut s = serve(&stage, &flags).await;
    replicate_from_with(
        &t,
        s.port,
        "repl",
        PASSWORD,
        &gtid,
        &goal,
        &verified(&files.ca),
    )
    .await;
    assert_identical(&m, &t, &["a"]).await;
    logged_tls(&s.log());
    s.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_ssl_refuses_a_plain_replica_and_another_ca_fails_cleanly() {
    let certs = tempfile::tempdir().unwrap();
    let files = make_certs(certs.path(), "IP:127.0.0.1");
    let other = tempfile::tempdir().unwrap();
    let other = make_certs(other.path(), "IP:127.0.0.1");
    let (_dir, stage, m, t, gtid, goal) = archived_master_and_loaded_replica().await;
    let mut flags = tls_flags(&files);
    flags.push("--require-ssl".into());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut s = serve(&stage, &flags).await;
    let point = |options: String| {
        format!(
            "STOP SLAVE; SET GLOBAL gtid_slave_pos = '{gtid}'; \
             CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl', \
             MASTER_PASSWORD='{PASSWORD}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1{options}; \
             START SLAVE;",
            s.port
        )
    };

    // Plain: refused, and the replica says why.
    exec(&t, &point(", MASTER_SSL=0".into())).await;
    let (errno, plain_error) = io_error(&t, "").await;
    assert!(
        plain_error.contains("insecure transport") && plain_error.contains("MASTER_SSL=1"),
        "{errno}: {plain_error}"
    );
    s.wait_log("plain login refused: TLS is required").await;

    // TLS, but trusting another CA: the replica refuses serve's certificate.
    exec(&t, &point(verified(&other.ca))).await;
    let (errno, error) = io_error(&t, &plain_error).await;
    assert_eq!(errno, "2026", "{error}");
    assert!(error.contains("SSL"), "{error}");
    exec(&t, "STOP SLAVE").await;
    assert_eq!(
        scalar(&t, "SELECT COUNT(*) FROM a.t").await,
        "1000",
        "nothing was replicated over a link that failed"
    );
    assert!(
        !s.log().contains("TLS session"),
        "a session got through: {}",
        s.log()
    );

    // TLS verified against the right CA: it works.
    replicate_from_with(
        &t,
        s.port,
        "repl",
        PASSWORD,
        &gtid,
        &goal,
        &verified(&files.ca),
    )
    .await;
    assert_identical(&m, &t, &["a"]).await;
    logged_tls(&s.log());
    s.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catchup_replays_the_archive_over_verified_tls() {
    let certs = tempfile::tempdir().unwrap();
    let files = make_certs(certs.path(), "IP:127.0.0.1");
    let (_dir, stage, m, t, _gtid, _goal) = archived_master_and_loaded_replica().await;
    // The master forgets the snapshot's binlogs: only the archive has them.
    purge_all(&m).await;
    let (cert, key, ca) = (
        files.cert.display().to_string(),
        files.key.display().to_string(),
        files.ca.display().to_string(),
    );
    let (murl, turl) = (m.url(), t.url());
    let mut args = catchup_args(&stage, "s1", &murl, &turl);
    args.extend_from_slice(&[
        "--archive-listen",
        "127.0.0.1:0",
        "--archive-ssl-cert",
        &cert,
        "--archive-ssl-key",
        &key,
        "--archive-ssl-ca",
        &ca,
    ]);
    let out = replseed(&args, &[]).await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "catchup failed:\n{log}");
    assert!(log.contains("replicating from the binlog archive"), "{log}");
    logged_tls(&log);
    assert_identical(&m, &t, &["a"]).await;
    still_replicating(
        &m,
        &t,
        "INSERT INTO a.t (id, v, c) VALUES (9001, 1, 'after')",
    )
    .await;
    assert_identical(&m, &t, &["a"]).await;
}

/// A client certificate signed by the CA `make_certs` left in `dir`:
/// (certificate, key).
fn client_cert(dir: &Path) -> (String, String) {
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for args in [
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=replica",
        ][..],
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.pem",
            "-days",
            "2",
            "-extfile",
            "client.ext",
        ][..],
    ] {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }
    let p = |f: &str| dir.join(f).display().to_string();
    (p("client.pem"), p("client.key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ssl_ca_only_a_replica_with_a_certificate_it_signed_gets_in() {
    let certs = tempfile::tempdir().unwrap();
    let files = make_certs(certs.path(), "IP:127.0.0.1");
    let (cert, key) = client_cert(certs.path());
    let (_dir, stage, m, t, gtid, goal) = archived_master_and_loaded_replica().await;
    let mut flags = tls_flags(&files);
    flags.extend(["--ssl-ca".into(), files.ca.display().to_string()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut s = serve(&stage, &flags).await;

    // TLS, verified, but no client certificate: refused in the handshake.
    exec(
        &t,
        &format!(
            "STOP SLAVE; SET GLOBAL gtid_slave_pos = '{gtid}'; \
             CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl', \
             MASTER_PASSWORD='{PASSWORD}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1{}; \
             START SLAVE;",
            s.port,
            verified(&files.ca)
        ),
    )
    .await;
    let (errno, error) = io_error(&t, "").await;
    // Under TLS 1.3 the client sends its (missing) certificate after it
    // considers the handshake done: serve's alert then arrives as a lost
    // connection (2013) rather than an SSL error (2026).
    assert!(errno == "2026" || errno == "2013", "{errno}: {error}");
    exec(&t, "STOP SLAVE").await;
    assert!(!s.log().contains("TLS session"), "{}", s.log());

    let with_cert = format!(
        "{}, MASTER_SSL_CERT='{cert}', MASTER_SSL_KEY='{key}'",
        verified(&files.ca)
    );
    replicate_from_with(&t, s.port, "repl", PASSWORD, &gtid, &goal, &with_cert).await;
    assert_identical(&m, &t, &["a"]).await;
    logged_tls(&s.log());
    s.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_mismatched_key_stops_serve_naming_the_file() {
    let certs = tempfile::tempdir().unwrap();
    let files = make_certs(certs.path(), "IP:127.0.0.1");
    let other = tempfile::tempdir().unwrap();
    let other = make_certs(other.path(), "IP:127.0.0.1");
    let (_dir, stage) = local_stage();
    let env = [("REPLSEED_REPLICATION_PASSWORD".into(), PASSWORD.into())];
    let missing = certs.path().join("nope.key").display().to_string();
    let cert = files.cert.display().to_string();
    for (key, says) in [
        (missing.clone(), missing.clone()),
        (
            other.key.display().to_string(),
            "does not go with the certificate".into(),
        ),
    ] {
        let err = replseed_fails(
            &[
                "serve",
                "--stage",
                &stage,
                "--listen",
                "127.0.0.1:0",
                "--ssl-cert",
                &cert,
                "--ssl-key",
                &key,
            ],
            &env,
            2,
        )
        .await;
        assert!(err.contains(&says) && err.contains("--ssl-key"), "{err}");
    }
}
