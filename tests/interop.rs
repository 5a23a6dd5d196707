//! Other tools read a snapshot as ordinary Parquet: pyarrow and DuckDB
//! (installed by ci/install-deps.sh) read every table of the all-types
//! fixture, with the MariaDB types in the field metadata.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_and_duckdb_read_the_snapshot() {
    let m = master().await;
    load_fixture(&m).await;
    let dir = tempfile::tempdir().unwrap();
    extract_ok(&m.url(), &file_stage(dir.path()), "io", &[]).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop_check.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(dir.path())
        .arg("io")
        .output()
        .await
        .expect("python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pyarrow/duckdb could not read the snapshot (ci/install-deps.sh installs them):\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let n: usize = stdout
        .split_whitespace()
        .nth(4)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(n >= 20, "{stdout}");
}
