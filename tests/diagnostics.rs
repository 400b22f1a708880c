//! Issue 12: the opt-in run-time hooks — blocking polls, held scopes,
//! counters per manager. Each fires when it should and stays silent when
//! it should not; their cost while off is measured by
//! `benches/instructions.sh` (BENCHMARKS.md).
//!
//! The hooks are process-wide switches, and the held-scope warning comes
//! from a thread of its own, so this binary installs one global capturing
//! subscriber and runs its tests one at a time.

mod driver_util;

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_contextlib::diagnostics::{self, Phase};
use async_contextlib::{AsyncContextManager, Outcome, OwnedManager, with_scope};
use driver_util::{Events, current_thread, multi_thread};
use futures::poll;
use tokio::sync::Notify;

/// Every event of the process, and the lock that runs these tests alone.
fn events() -> (MutexGuard<'static, ()>, Events) {
    static ALL: OnceLock<Events> = OnceLock::new();
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let all = ALL.get_or_init(|| {
        let (subscriber, events) = driver_util::capturing_subscriber();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        events
    });
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    all.clear();
    diagnostics::set_blocking_limit(None);
    diagnostics::set_held_limit(None);
    diagnostics::track_scopes(false);
    diagnostics::set_per_manager_stats(false);
    diagnostics::reset_manager_stats();
    (guard, all.clone())
}

fn warnings(all: &Events, needle: &str) -> Vec<String> {
    all.all()
        .iter()
        .filter(|e| e.level == tracing::Level::WARN && e.text.contains(needle))
        .map(|e| e.text.clone())
        .collect()
}

/// The blocking-poll warnings about manager `name`.
fn blocking(all: &Events, name: &str) -> Vec<String> {
    let mut found = warnings(all, &format!("manager={name} "));
    found.retain(|w| w.contains("held its thread"));
    found
}

/// A manager whose enter or exit blocks its thread for a while.
struct Blocks {
    name: &'static str,
    enter: Duration,
    exit: Duration,
}

impl AsyncContextManager for Blocks {
    type Value<'a> = ();
    type Error = Infallible;

    async fn enter(&mut self) -> Result<(), Infallible> {
        std::thread::sleep(self.enter);
        Ok(())
    }

    async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> {
        std::thread::sleep(self.exit);
        Ok(())
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

fn blocks(name: &'static str, enter_ms: u64, exit_ms: u64) -> Blocks {
    Blocks {
        name,
        enter: Duration::from_millis(enter_ms),
        exit: Duration::from_millis(exit_ms),
    }
}

#[test]
fn a_blocking_enter_or_exit_is_named_with_its_phase_and_time() {
    let (_one, all) = events();
    diagnostics::set_blocking_limit(Some(Duration::from_millis(10)));
    futures::executor::block_on(async {
        with_scope!(blocks("blocks-on-enter", 30, 0) => {});
        with_scope!(blocks("blocks-on-exit", 0, 30) => {});
        with_scope!(blocks("never-blocks", 0, 0) => {});
    });
    let enter = blocking(&all, "blocks-on-enter");
    assert_eq!(enter.len(), 1, "{enter:?}");
    assert!(
        enter[0].contains("phase=enter") && enter[0].contains("from_sync"),
        "{enter:?}"
    );
    let exit = blocking(&all, "blocks-on-exit");
    assert_eq!(exit.len(), 1, "{exit:?}");
    assert!(exit[0].contains("phase=exit"), "{exit:?}");
    assert!(blocking(&all, "never-blocks").is_empty());
}

#[test]
fn blocking_polls_are_not_reported_while_the_limit_is_off() {
    let (_one, all) = events();
    futures::executor::block_on(async {
        with_scope!(blocks("blocks-unwatched", 30, 30) => {});
    });
    assert!(
        blocking(&all, "blocks-unwatched").is_empty(),
        "{:?}",
        all.all()
    );
    // Switched on and off again: silent too.
    diagnostics::set_blocking_limit(Some(Duration::from_millis(1)));
    diagnostics::set_blocking_limit(None);
    futures::executor::block_on(async {
        with_scope!(blocks("blocks-unwatched", 30, 30) => {});
    });
    assert!(blocking(&all, "blocks-unwatched").is_empty());
}

/// Lends nothing; its exit waits for `release`.
struct Gate {
    name: &'static str,
    release: Arc<Notify>,
}

impl AsyncContextManager for Gate {
    type Value<'a> = ();
    type Error = Infallible;

    async fn enter(&mut self) -> Result<(), Infallible> {
        Ok(())
    }

    async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> {
        self.release.notified().await;
        Ok(())
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

impl OwnedManager for Gate {}

fn phases(name: &str) -> Vec<Phase> {
    diagnostics::scopes()
        .into_iter()
        .filter(|s| s.name == name)
        .map(|s| s.phase)
        .collect()
}

#[test]
fn tracked_scopes_show_each_manager_phase_and_age_until_it_is_done() {
    let (_one, _all) = events();
    diagnostics::track_scopes(true);
    current_thread().block_on(async {
        let release = Arc::new(Notify::new());
        let r = release.clone();
        let mut fut = Box::pin(async move {
            with_scope!(blocks("outer-tracked", 0, 0), Gate { name: "gate", release: r } => {
                tokio::task::yield_now().await;
            });
        });
        assert!(poll!(fut.as_mut()).is_pending(), "the block yields");
        assert_eq!(phases("outer-tracked"), [Phase::Body]);
        assert_eq!(phases("gate"), [Phase::Body]);
        assert!(poll!(fut.as_mut()).is_pending(), "the gate's exit waits");
        assert_eq!(phases("gate"), [Phase::Exiting]);
        assert_eq!(phases("outer-tracked"), [Phase::Body]);
        let ages: Vec<_> = diagnostics::scopes().into_iter().map(|s| s.age).collect();
        assert!(
            ages.windows(2).all(|w| w[0] >= w[1]),
            "oldest first: {ages:?}"
        );
        release.notify_one();
        fut.await;
        assert!(
            diagnostics::scopes().is_empty(),
            "{:?}",
            diagnostics::scopes()
        );
    });
}

#[test]
fn a_cancelled_or_failed_scope_leaves_nothing_tracked() {
    let (_one, _all) = events();
    diagnostics::track_scopes(true);
    multi_thread().block_on(async {
        let release = Arc::new(Notify::new());
        let r = release.clone();
        let task = tokio::spawn(async move {
            with_scope!(Gate { name: "cancelled-gate", release: r } => {
                std::future::pending::<()>().await;
            });
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(phases("cancelled-gate"), [Phase::Body]);
        task.abort();
        let _ = task.await;
        assert!(phases("cancelled-gate").is_empty());
        release.notify_one();
        async_contextlib::drain_timeout(Duration::from_secs(5)).await.unwrap();
        // An enter that fails is not left behind either.
        let r: Result<(), std::io::Error> =
            with_scope!(async_contextlib::from_sync(|| Err::<(), _>(std::io::Error::other("no")), |(), _| Ok(())) => { Ok(()) });
        assert!(r.is_err());
        assert!(diagnostics::scopes().is_empty(), "{:?}", diagnostics::scopes());
    });
    diagnostics::track_scopes(false);
    futures::executor::block_on(async {
        with_scope!(blocks("untracked", 0, 0) => {
            assert!(phases("untracked").is_empty());
        });
    });
}

#[test]
fn a_scope_held_past_the_limit_is_warned_about_once() {
    let (_one, all) = events();
    diagnostics::set_held_limit(Some(Duration::from_millis(40)));
    current_thread().block_on(async {
        with_scope!(blocks("held-long", 0, 0) => {
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        with_scope!(blocks("held-briefly", 0, 0) => {
            tokio::time::sleep(Duration::from_millis(5)).await;
        });
    });
    let held = warnings(&all, "manager=held-long");
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(
        held[0].contains("phase=body") && held[0].contains("held limit"),
        "{held:?}"
    );
    assert!(warnings(&all, "held-briefly").is_empty());
    diagnostics::set_held_limit(None);
    current_thread().block_on(async {
        with_scope!(blocks("held-unwatched", 0, 0) => {
            tokio::time::sleep(Duration::from_millis(150)).await;
        });
    });
    assert!(warnings(&all, "held-unwatched").is_empty());
}

/// Its exit fails when `fail`.
struct Counted {
    name: &'static str,
    fail: bool,
}

impl AsyncContextManager for Counted {
    type Value<'a> = ();
    type Error = std::io::Error;

    async fn enter(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }

    async fn exit(&mut self, _: Outcome) -> Result<(), std::io::Error> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if self.fail {
            Err(std::io::Error::other("exit failed"))
        } else {
            Ok(())
        }
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

impl OwnedManager for Counted {}

#[test]
fn counters_per_manager_add_up_by_name() {
    let (_one, _all) = events();
    // Nothing is gathered while off.
    current_thread().block_on(async {
        let _: Result<(), std::io::Error> =
            with_scope!(Counted { name: "a", fail: false } => { Ok(()) });
    });
    assert!(diagnostics::manager_stats().is_empty());
    diagnostics::set_per_manager_stats(true);
    current_thread().block_on(async {
        for i in 0..10 {
            let _: Result<(), std::io::Error> =
                with_scope!(Counted { name: "a", fail: i == 3 } => { Ok(()) });
        }
        for _ in 0..4 {
            let _: Result<(), std::io::Error> =
                with_scope!(Counted { name: "b", fail: false } => { Ok(()) });
        }
        // One cancelled: its exit runs detached, and is counted too.
        let mut fut = Box::pin(async {
            let _: Result<(), std::io::Error> = with_scope!(Counted { name: "b", fail: false } => {
                std::future::pending::<()>().await;
                Ok(())
            });
        });
        assert!(poll!(fut.as_mut()).is_pending());
        drop(fut);
        async_contextlib::drain_timeout(Duration::from_secs(5))
            .await
            .unwrap();
    });
    diagnostics::set_per_manager_stats(false);
    let table = diagnostics::manager_stats();
    let a = table.iter().find(|m| m.name == "a").expect("a");
    let b = table.iter().find(|m| m.name == "b").expect("b");
    assert_eq!(
        (a.entered, a.exited, a.exit_failures, a.abandoned, a.lost),
        (10, 10, 1, 0, 0)
    );
    assert_eq!((b.entered, b.exited, b.exit_failures), (5, 5, 0));
    assert_eq!(
        a.exit_latency.count, 10,
        "every exit of `a` ran in its scope"
    );
    assert_eq!(b.exit_latency.count, 5, "the detached one is timed too");
    let l = a.exit_latency;
    assert!(l.p50 >= Duration::from_millis(1), "{l:?}");
    assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max, "{l:?}");
}
