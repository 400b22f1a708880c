//! Issue 4: borrowing managers (not `OwnedManager`) on cancellation (SPEC §5):
//! finished in place before the drop returns on a multi-thread runtime;
//! abandoned, reported (error event naming the manager) and counted on a
//! current-thread runtime.

mod driver_util;

use std::time::Duration;

use async_contextlib::{drain, stats, with_scope};
use driver_util::{
    Borrowing, ExitWork, Owned, Probe, capture, current_thread, forever, gen_borrowing, gen_owned,
    multi_thread, stats_lock,
};
use futures::poll;

fn sleep_ms(ms: u64) -> ExitWork {
    ExitWork::Sleep(Duration::from_millis(ms))
}

#[test]
fn borrowing_exit_finishes_before_drop_returns_on_multi_thread() {
    let _l = stats_lock();
    multi_thread().block_on(async {
        let probe = Probe::new();
        {
            let p = &*probe;
            let mut fut = Box::pin(async move {
                with_scope!(Borrowing { id: "hand", probe: p, work: sleep_ms(10) },
                            gen_borrowing("gen", p, sleep_ms(10)) => { forever().await })
            });
            assert!(poll!(fut.as_mut()).is_pending());
            assert_eq!(probe.entered(), 2);
            drop(fut);
            // No await since the drop: both exits ran (and slept) in place.
            assert_eq!(probe.exited(), 2);
            assert_eq!(probe.log(), ["gen:cancelled", "hand:cancelled"]);
        }
        drain().await;
        assert_eq!(probe.exit_started(), 2);
    });
}

/// The same, cancelled by `tokio::time::timeout`. (Not inside a spawned
/// task: a scope over a borrowing manager is not `Send` today — "implementation
/// of `AsyncContextManager` is not general enough", see the issue-4 report.)
#[test]
fn borrowing_exit_finishes_in_place_under_tokio_timeout() {
    let _l = stats_lock();
    multi_thread().block_on(async {
        let probe = Probe::new();
        let p = probe.clone();
        let r = tokio::time::timeout(Duration::from_millis(5), async {
            with_scope!(Borrowing { id: "hand", probe: &p, work: sleep_ms(5) } => { forever().await })
        })
        .await;
        assert!(r.is_err());
        assert_eq!(p.exited(), 1, "finished before the timeout returned");
        assert_eq!(probe.log(), ["hand:cancelled"]);
    });
}

/// Owned and borrowing managers mixed: the in-place exit runs the queued
/// owned exits inside it first, so the order stays innermost-first.
#[test]
fn mixed_owned_and_borrowing_keep_innermost_first_on_multi_thread() {
    let _l = stats_lock();
    multi_thread().block_on(async {
        let probe = Probe::new();
        {
            let p = &*probe;
            let owned = probe.clone();
            let mut fut = Box::pin(async move {
                with_scope!(Owned::new("a", &owned), Borrowing { id: "b", probe: p, work: sleep_ms(1) } => {
                    with_scope!(gen_owned("c", owned.clone(), sleep_ms(3)), gen_borrowing("d", p, ExitWork::Nothing),
                                Owned::new("e", &owned).work(sleep_ms(3)) => {
                        forever().await
                    })
                })
            });
            assert!(poll!(fut.as_mut()).is_pending());
            drop(fut);
        }
        drain().await;
        assert_eq!(
            probe.log(),
            ["e:cancelled", "d:cancelled", "c:cancelled", "b:cancelled", "a:cancelled"]
        );
        assert_eq!(probe.exited(), 5);
    });
}

#[test]
fn borrowing_cancelled_mid_exit_finishes_in_place_on_multi_thread() {
    let _l = stats_lock();
    multi_thread().block_on(async {
        let probe = Probe::new();
        {
            let p = &*probe;
            let mut fut = Box::pin(async move {
                with_scope!(Borrowing { id: "hand", probe: p, work: sleep_ms(10) },
                            gen_borrowing("gen", p, sleep_ms(10)) => { 1 })
            });
            assert!(poll!(fut.as_mut()).is_pending());
            assert_eq!(probe.log(), ["gen:success"]);
            drop(fut); // mid-exit of `gen`; `hand` not exited yet
            assert_eq!(probe.exited(), 2);
        }
        drain().await;
        assert_eq!(probe.log(), ["gen:success", "hand:cancelled"]);
        assert_eq!(probe.exit_started(), 2, "no exit ran twice");
    });
}

/// Issue 8 (case 9): on a current-thread runtime — `#[tokio::test]`'s
/// default — an exit that needs no reactor (returning a connection,
/// releasing a lock) runs in place to completion, before the drop returns.
#[test]
fn borrowing_exits_needing_no_reactor_finish_in_place_on_current_thread() {
    let _l = stats_lock();
    current_thread().block_on(async {
        let before = stats();
        let probe = Probe::new();
        {
            let p = &*probe;
            let mut fut = Box::pin(async move {
                with_scope!(Borrowing { id: "hand-borrow", probe: p, work: ExitWork::Nothing },
                            gen_borrowing("gen-borrow", p, ExitWork::Nothing) => { forever().await })
            });
            assert!(poll!(fut.as_mut()).is_pending());
            drop(fut);
            // No await since the drop: both exits already ran.
            assert_eq!(probe.exited(), 2);
        }
        assert_eq!(probe.log(), ["gen-borrow:cancelled", "hand-borrow:cancelled"]);
        let after = stats();
        assert_eq!(after.abandoned - before.abandoned, 0);
        assert_eq!(after.exited - before.exited, 2);
        assert_eq!(after.active, before.active);
    });
}

/// One that waits on the runtime's own timer cannot progress while its
/// thread finishes it in place: it is abandoned at the in-place limit,
/// reported with the fix, counted, and no longer active.
#[test]
fn borrowing_exit_waiting_on_its_own_runtime_is_abandoned_at_the_limit_on_current_thread() {
    let _l = stats_lock();
    let (_sub, events) = capture();
    let limit = async_contextlib::in_place_limit();
    async_contextlib::set_in_place_limit(Duration::from_millis(50));
    current_thread().block_on(async {
        let before = stats();
        let probe = Probe::new();
        {
            let p = &*probe;
            let mut fut = Box::pin(async move {
                with_scope!(Borrowing { id: "hand-borrow", probe: p, work: sleep_ms(60_000) } => {
                    forever().await
                })
            });
            assert!(poll!(fut.as_mut()).is_pending());
            let started = std::time::Instant::now();
            drop(fut);
            assert!(started.elapsed() < Duration::from_secs(5), "bounded");
        }
        drain().await;
        assert_eq!(probe.exit_started(), 1);
        assert_eq!(probe.exited(), 0);
        let after = stats();
        assert_eq!(after.abandoned - before.abandoned, 1);
        assert_eq!(
            after.active, before.active,
            "abandoned managers are no longer active"
        );
    });
    async_contextlib::set_in_place_limit(limit);
    assert!(
        events
            .find(
                tracing::Level::ERROR,
                &["hand-borrow", "abandoned", "make the manager owned"]
            )
            .is_some(),
        "no error event naming hand-borrow: {:#?}",
        events.all()
    );
}

/// Owned exits around a borrowing one on a current-thread runtime: the
/// inner owned exit waits on this thread's timer, so it cannot finish
/// before the borrowing one must; past the limit it goes on detached (not
/// lost), the borrowing one runs, then the outer owned one. Nothing is
/// abandoned or lost.
#[test]
fn owned_exits_around_a_borrowing_one_all_run_on_current_thread() {
    let _l = stats_lock();
    let limit = async_contextlib::in_place_limit();
    async_contextlib::set_in_place_limit(Duration::from_millis(50));
    current_thread().block_on(async {
        let before = stats();
        let probe = Probe::new();
        {
            let p = &*probe;
            let owned = probe.clone();
            let mut fut = Box::pin(async move {
                with_scope!(Owned::new("a", &owned), Borrowing { id: "b", probe: p, work: ExitWork::Nothing },
                            gen_owned("c", owned.clone(), sleep_ms(1)) => { forever().await })
            });
            assert!(poll!(fut.as_mut()).is_pending());
            drop(fut);
        }
        drain().await;
        assert_eq!(probe.log(), ["c:cancelled", "b:cancelled", "a:cancelled"]);
        assert_eq!(probe.exited(), 3);
        let after = stats();
        assert_eq!(after.abandoned - before.abandoned, 0);
        assert_eq!(after.lost - before.lost, 0);
        assert_eq!(after.active, before.active);
    });
    async_contextlib::set_in_place_limit(limit);
}
