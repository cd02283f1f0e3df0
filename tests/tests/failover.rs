//! Never twice through a failover (see `statuslist_tests::failover`): a real primary and
//! streaming standby, the standby cut off, the primary crashed, the standby promoted,
//! under `/issue`, `/revoke`, `/suspend` and `/reinstate` load. A short profile here;
//! `scripts/failover` runs longer.

use std::time::Duration;

use statuslist_tests::failover::{Figures, Mode, Plan, run};
use statuslist_tests::service::binary;

fn seconds(var: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// Asynchronous replication, the standby cut off for 4 s before the primary crashes, and
/// one of the two workers killed with the primary: nothing answered twice; everything the
/// surviving worker acknowledged is on the new primary (written back); the lists issuing
/// before are sealed, and the dead worker is reported as not having written back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn asynchronous_cut_off_crash_and_promotion_never_answer_a_slot_twice() {
    let figures = run(
        &binary(),
        &Plan {
            mode: Mode::Asynchronous,
            before_cut: seconds("FAILOVER_BEFORE_SECONDS", 3),
            cut_for: seconds("FAILOVER_CUT_SECONDS", 4),
            after: seconds("FAILOVER_AFTER_SECONDS", 6),
            clients: 16,
            kill_a_worker: true,
        },
    )
    .await;
    never_twice_nothing_lost_by_survivors(&figures);
    assert!(!figures.sealed.is_empty(), "no list sealed: {figures}");
    assert_eq!(figures.silent_workers, ["worker-1"], "{figures}");
}

/// Synchronous replication: the crash and promotion lose nothing and answer nothing
/// twice; both calls are answered again after the promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synchronous_crash_and_promotion_lose_nothing() {
    let figures = run(
        &binary(),
        &Plan {
            mode: Mode::Synchronous,
            before_cut: seconds("FAILOVER_BEFORE_SECONDS", 4),
            cut_for: Duration::ZERO,
            after: seconds("FAILOVER_AFTER_SECONDS", 6),
            clients: 16,
            kill_a_worker: false,
        },
    )
    .await;
    never_twice_nothing_lost_by_survivors(&figures);
    assert!(figures.silent_workers.is_empty(), "{figures}");
}

/// Prints the figures; load ran, no slot was answered twice, nothing the surviving
/// workers acknowledged is missing, and both calls were answered after the promotion.
fn never_twice_nothing_lost_by_survivors(figures: &Figures) {
    println!("{figures}");
    eprintln!("{figures}");
    assert!(figures.issued > 0 && figures.revoked > 0, "{figures}");
    assert_eq!(figures.twice, 0, "{figures}");
    assert_eq!(figures.survivors_missing_issuances, 0, "{figures}");
    assert_eq!(figures.survivors_missing_revocations, 0, "{figures}");
    assert!(figures.survivors_checked_statuses > 0, "{figures}");
    assert_eq!(figures.survivors_wrong_statuses, 0, "{figures}");
    assert!(
        figures.resume_issue_ms.is_some(),
        "no issuance after the promotion: {figures}"
    );
    assert!(
        figures.resume_revoke_ms.is_some(),
        "no revocation after the promotion: {figures}"
    );
}
