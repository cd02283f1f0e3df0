//! The fault-injection soak (see `statuslist_tests::soak`): a short profile in the ordinary
//! test run; `SOAK_SECONDS=1800 scripts/soak` (or `--minutes N`) for the long one, and
//! `SOAK_SEED=S` replays a run's fault schedule.

use statuslist_tests::service::binary;
use statuslist_tests::soak::{Profile, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_faults_nothing_is_issued_twice_and_no_revocation_is_lost() {
    let profile = Profile::from_env(60);
    let summary = run(&binary(), &profile).await;
    println!("{summary}");
    eprintln!("{summary}");
    assert!(summary.issued > 0 && summary.revoked > 0, "{summary}");
    assert!(
        summary.worker_kills > 0
            && summary.pauses > 0
            && summary.pg_restarts > 0
            && summary.blackholes > 0,
        "not every fault ran: {summary}"
    );
    assert!(
        summary.clean(),
        "{summary}\nunexpected_503={} retry_mismatches={}\n{}",
        summary.unexpected_503,
        summary.retry_mismatches,
        summary.problems.join("\n")
    );
}
