//! Master -> stage -> replica: every type and object compares identical.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_types_round_trip_through_a_file_stage() {
    let master = master().await;
    load_fixture(&master).await;
    let replica = replica(2).await;
    let (_dir, stage) = local_stage();
    let ex = extract_ok(
        &master.url(),
        &stage,
        "fx1",
        &["--threads", "3", "--chunk-rows", "5000", "--json"],
    )
    .await;
    assert_eq!(ex["snapshot"], "fx1");
    load_ok(&stage, "fx1", &replica.url(), &["--threads", "3"]).await;
    assert_identical(&master, &replica, FIXTURE_DBS).await;
}
