//! Issue 4: `drain`, `drain_timeout`, `stats()`, lost exits at runtime
//! shutdown, `shield`, panicking detached exits, slow-exit warnings.
//! Stats are process-global: every test here holds `stats_lock()` and
//! compares deltas.

mod driver_util;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use async_contextlib::{
    AsyncContextManager, Outcome, OwnedManager, drain, drain_timeout, set_slow_exit_limit, shield,
    stats, with_scope,
};
use driver_util::{
    ExitWork, Owned, Probe, capture, current_thread, forever, gen_owned, multi_thread, on_both,
    stats_lock,
};
use futures::poll;
use tokio::sync::Notify;

const MS: Duration = Duration::from_millis(1);

#[test]
fn stats_count_a_normal_scope() {
    let _l = stats_lock();
    on_both(|_| async {
        let before = stats();
        let probe = Probe::new();
        let n = with_scope!(Owned::new("a", &probe), gen_owned("b", probe.clone(), ExitWork::Nothing) => { 3 });
        assert_eq!(n, 3);
        let after = stats();
        assert_eq!(after.entered - before.entered, 2);
        assert_eq!(after.exited - before.exited, 2);
        assert_eq!(after.active, before.active);
        assert_eq!(after.pending, 0);
        assert_eq!(after.exit_failures, before.exit_failures);
    });
}

#[test]
fn drain_waits_for_detached_exits_and_stats_track_pending() {
    let _l = stats_lock();
    on_both(|flavour| async move {
        let before = stats();
        let probe = Probe::new();
        let gate = Arc::new(Notify::new());
        let (p, g) = (probe.clone(), gate.clone());
        let mut fut = Box::pin(async move {
            with_scope!(Owned::new("a", &p).work(ExitWork::Gate(g)) => { forever().await })
        });
        assert!(poll!(fut.as_mut()).is_pending());
        assert_eq!(stats().active - before.active, 1);
        drop(fut);
        let mid = stats();
        assert_eq!(mid.pending, 1, "{flavour}");
        assert_eq!(mid.active - before.active, 1, "still active until it exits");
        gate.notify_one();
        drain().await;
        assert_eq!(
            probe.exited(),
            1,
            "{flavour}: drain returned before the exit finished"
        );
        let after = stats();
        assert_eq!(after.pending, 0);
        assert_eq!(after.active, before.active);
        assert_eq!(after.exited - before.exited, 1);
        assert_eq!(after.lost, before.lost);
    });
}

#[test]
fn drain_timeout_names_an_exit_that_never_finishes() {
    let _l = stats_lock();
    multi_thread().block_on(async {
        let probe = Probe::new();
        let gate = Arc::new(Notify::new());
        let (p, g) = (probe.clone(), gate.clone());
        let mut fut = Box::pin(async move {
            with_scope!(Owned::new("stuck-exit", &p).work(ExitWork::Gate(g)) => { forever().await })
        });
        assert!(poll!(fut.as_mut()).is_pending());
        drop(fut);
        let err = drain_timeout(20 * MS).await.unwrap_err();
        assert_eq!(err.names(), ["stuck-exit"]);
        assert!(err.to_string().contains("stuck-exit"));
        // Let it finish so other tests' drains are not held up.
        gate.notify_one();
        drain_timeout(Duration::from_secs(30)).await.unwrap();
        assert_eq!(probe.exited(), 1);
    });
}

#[test]
fn exits_pending_at_runtime_shutdown_are_counted_lost_and_reported() {
    let _l = stats_lock();
    let (_sub, events) = capture();
    let before = stats();
    let probe = Probe::new();
    let rt = current_thread();
    rt.block_on(async {
        let p = probe.clone();
        let mut fut = Box::pin(async move {
            with_scope!(Owned::new("lost-exit", &p).work(ExitWork::Sleep(Duration::from_secs(3600))) => {
                forever().await
            })
        });
        assert!(poll!(fut.as_mut()).is_pending());
        drop(fut);
        // Let the driver start the exit: it now sleeps on this runtime.
        while probe.exit_started() == 0 {
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(stats().pending, 1);
    drop(rt);
    let after = stats();
    assert_eq!(probe.exited(), 0);
    assert_eq!(after.lost - before.lost, 1);
    assert_eq!(after.pending, 0);
    assert_eq!(
        after.active, before.active,
        "a lost exit is no longer active"
    );
    assert!(
        events
            .find(tracing::Level::ERROR, &["lost-exit", "lost"])
            .is_some(),
        "{:#?}",
        events.all()
    );
}

struct FailingExit {
    panic: bool,
    ran: Arc<AtomicBool>,
}

#[derive(Debug)]
struct ExitError;

impl std::fmt::Display for ExitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("exit error")
    }
}

impl AsyncContextManager for FailingExit {
    type Value<'a> = ();
    type Error = ExitError;
    async fn enter(&mut self) -> Result<(), ExitError> {
        Ok(())
    }
    async fn exit(&mut self, _: Outcome) -> Result<(), ExitError> {
        self.ran.store(true, SeqCst);
        tokio::task::yield_now().await;
        if self.panic {
            panic!("detached exit panicked on purpose");
        }
        Err(ExitError)
    }
    fn name(&self) -> &'static str {
        if self.panic {
            "panicking-exit"
        } else {
            "failing-exit"
        }
    }
}

impl OwnedManager for FailingExit {}

#[test]
fn failing_and_panicking_detached_exits_are_counted_and_the_driver_goes_on() {
    let _l = stats_lock();
    let (_sub, events) = capture();
    current_thread().block_on(async {
        let before = stats();
        let probe = Probe::new();
        let (ran_fail, ran_panic) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, rf, rp) = (probe.clone(), ran_fail.clone(), ran_panic.clone());
        let mut fut = Box::pin(async move {
            let r: Result<(), ExitError> = with_scope!(Owned::new("first", &p),
                    FailingExit { panic: false, ran: rf },
                    Owned::new("middle", &p),
                    FailingExit { panic: true, ran: rp },
                    Owned::new("last", &p) => {
                forever().await;
                Ok(())
            });
            r
        });
        assert!(poll!(fut.as_mut()).is_pending());
        drop(fut);
        drain().await;
        assert!(ran_fail.load(SeqCst) && ran_panic.load(SeqCst));
        // The driver kept going after the panicking and the failing exit.
        assert_eq!(
            probe.log(),
            ["last:cancelled", "middle:cancelled", "first:cancelled"]
        );
        let after = stats();
        assert_eq!(after.exit_failures - before.exit_failures, 2);
        assert_eq!(after.exited - before.exited, 5);
        assert_eq!(after.active, before.active);
    });
    for name in ["panicking-exit", "failing-exit"] {
        assert!(
            events.find(tracing::Level::ERROR, &[name]).is_some(),
            "{name} not reported: {:#?}",
            events.all()
        );
    }
}

#[test]
fn an_exit_error_is_returned_by_the_scope_and_counted() {
    let _l = stats_lock();
    current_thread().block_on(async {
        let before = stats();
        let ran = Arc::new(AtomicBool::new(false));
        let r: Result<u8, ExitError> =
            with_scope!(FailingExit { panic: false, ran: ran.clone() } => { Ok(1) });
        assert!(r.is_err());
        assert_eq!(stats().exit_failures - before.exit_failures, 1);
    });
}

#[test]
fn shield_dropped_early_is_finished_by_the_driver_and_drained() {
    let _l = stats_lock();
    on_both(|flavour| async move {
        let before = stats();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let work = shield(async move {
            tokio::time::sleep(20 * MS).await;
            d.store(true, SeqCst);
        });
        assert!(tokio::time::timeout(MS, work).await.is_err());
        assert!(!done.load(SeqCst));
        assert_eq!(stats().pending, 1, "{flavour}");
        drain().await;
        assert!(done.load(SeqCst), "{flavour}");
        let after = stats();
        assert_eq!(after.pending, 0);
        assert_eq!(after.lost, before.lost);
        // Awaited to the end, it is just the future.
        assert_eq!(shield(async { 5 }).await, 5);
        // Inside a cancelled scope, too.
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let probe = Probe::new();
        let p = probe.clone();
        let mut fut = Box::pin(async move {
            with_scope!(Owned::new("a", &p) => {
                shield(async move { tokio::time::sleep(5 * MS).await; d.store(true, SeqCst) }).await
            })
        });
        assert!(poll!(fut.as_mut()).is_pending());
        drop(fut);
        drain().await;
        assert!(done.load(SeqCst));
        assert_eq!(probe.exited(), 1);
    });
}

struct Slow;

impl AsyncContextManager for Slow {
    type Value<'a> = ();
    type Error = Infallible;
    async fn enter(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
    async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> {
        tokio::time::sleep(30 * MS).await;
        Ok(())
    }
    fn name(&self) -> &'static str {
        "slow-exit-manager"
    }
}

#[test]
fn a_slow_exit_emits_a_warning_with_name_outcome_and_latency() {
    let _l = stats_lock();
    let (_sub, events) = capture();
    set_slow_exit_limit(5 * MS);
    current_thread().block_on(async {
        with_scope!(Slow => { 1 });
    });
    let fast = events.all().len();
    current_thread().block_on(async {
        with_scope!(Owned::new("fast", &Probe::new()) => { 1 });
    });
    set_slow_exit_limit(Duration::from_millis(10));
    let warning = events
        .find(
            tracing::Level::WARN,
            &["slow-exit-manager", "success", "latency_us"],
        )
        .unwrap_or_else(|| panic!("{:#?}", events.all()));
    let latency: u64 = warning
        .text
        .split("latency_us=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    // The exit slept 30 ms; the latency clock is the coarse monotonic clock,
    // exact to within one kernel tick (at most 4 ms), see `diag::Clock`.
    assert!((26_000..1_000_000).contains(&latency), "{warning:?}");
    assert_eq!(events.all().len(), fast, "a fast exit emitted an event");
}
