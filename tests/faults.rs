//! Issue 8: the exit driver under faults — never hang, never deadlock,
//! never lose an exit silently.
//!
//! Every scenario runs in a child process of this test binary (see
//! [`isolated`]), with a watchdog: a hang or an abort fails the parent test
//! instead of stalling or killing the suite, and the child's `stats()` are
//! its own, so each scenario checks them exactly. Each is named after the
//! case of the issue it reproduces.

mod driver_util;

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_contextlib::{
    AsyncContextManager, Outcome, OwnedManager, Stats, async_context_manager, drain_timeout,
    from_sync, set_in_place_limit, stats, with_scope, yield_,
};
use driver_util::{Probe, current_thread, forever, multi_thread};
use futures::FutureExt;
use futures::poll;

// ------------------------------------------------------------ the harness

const CHILD_ENV: &str = "ASYNC_CONTEXTLIB_FAULT_SCENARIO";

/// Runs `scenario` in a child process (this test binary, running only the
/// ignored `child` test with `CHILD_ENV` naming the scenario), killing it
/// after `limit`. Returns its output; panics if it hung, aborted or failed.
fn isolated(scenario: &str, limit: Duration) -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, scenario)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child test process");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("child output");
            panic!(
                "scenario `{scenario}` hung (killed after {limit:?}):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().expect("child output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        status.success() && text.contains("1 passed"),
        "scenario `{scenario}` failed ({status}):\n{text}"
    );
    text
}

/// The child side: runs the scenario `CHILD_ENV` names.
#[test]
#[ignore = "run by the other tests of this file, each in its own process"]
fn child() {
    let Ok(name) = std::env::var(CHILD_ENV) else {
        return;
    };
    let scenario = SCENARIOS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no scenario `{name}`"));
    (scenario.1)();
}

macro_rules! scenarios {
    ($($name:ident: $limit:expr;)*) => {
        const SCENARIOS: &[(&str, fn())] = &[$((stringify!($name), scenarios::$name)),*];
        $(
            #[test]
            fn $name() {
                isolated(stringify!($name), $limit);
            }
        )*
    };
}

const SHORT: Duration = Duration::from_secs(60);

scenarios! {
    case1_sync_panic_in_exit_borrowing_current_thread: SHORT;
    case1_sync_panic_in_exit_borrowing_multi_thread: SHORT;
    case1_sync_panic_in_exit_owned_current_thread: SHORT;
    case1_sync_panic_in_exit_owned_multi_thread: SHORT;
    case1_sync_panic_in_enter_current_thread: SHORT;
    case1_sync_panic_in_enter_multi_thread: SHORT;
    case1_panic_in_name: SHORT;
    case1_sync_panic_in_exit_on_cancellation: SHORT;
    case2_local_set_on_multi_thread_runs_owned_exits_behind_a_borrowing_one: SHORT;
    case2_an_in_place_exit_that_drops_another_scope: SHORT;
    case2_block_on_inside_spawn_blocking: SHORT;
    case3_scope_future_in_a_thread_local: SHORT;
    case3_current_thread_runtime_in_a_thread_local: SHORT;
    case3_local_set_in_a_thread_local: SHORT;
    case4_dropping_a_multi_thread_runtime_never_hangs: SHORT;
    case4_shutdown_timeout_accounts_for_every_exit: SHORT;
    case4_shutdown_background_accounts_for_every_exit: SHORT;
    case5_an_in_place_exit_that_never_finishes_is_abandoned: SHORT;
    case5_drain_timeout_names_an_in_place_exit_in_flight: SHORT;
    case6_sibling_exits_run_concurrently_multi_thread: SHORT;
    case6_sibling_exits_run_concurrently_current_thread: SHORT;
    case7_from_sync_enter_cut_by_an_outer_timeout: SHORT;
    case7_from_sync_enter_cut_by_enter_timeout: SHORT;
    case7_from_sync_enter_cut_by_a_timeout_manager: SHORT;
    case8_drain_timeout_without_a_runtime: SHORT;
    case9_pool_on_current_thread_returns_every_connection: SHORT;
    case9_arc_self_is_owned_without_ceremony: SHORT;
    case9_an_abandoned_exit_is_written_to_stderr_without_a_subscriber: SHORT;
    case10_a_cancelled_stack_exits_after_what_is_nested_in_it: SHORT;
    case10_a_cancelled_stack_scope_exits_right_to_left_current_thread: SHORT;
    case10_a_cancelled_stack_scope_exits_right_to_left_multi_thread: SHORT;
    case10_a_stack_in_a_block_exits_after_the_scopes_opened_after_it: SHORT;
    case10_a_stack_entry_whose_drop_panics_skips_no_older_entry: SHORT;
    case10_a_stack_entry_whose_drop_panics_while_unwinding_does_not_abort: SHORT;
    case10_drain_inside_a_detached_exit_returns_at_once: SHORT;
    case10_drain_inside_an_in_place_exit_returns_at_once: SHORT;
    case10_an_error_held_by_a_cancelled_close_is_reported_once: SHORT;
    case10_an_error_held_by_a_scope_cancelled_mid_exit_is_reported: SHORT;
    case10_a_failing_entry_of_a_stack_scope_counts_once: SHORT;
    case10_a_thread_local_stack_without_a_runtime_prints_no_library_panic: SHORT;
    case12_a_thread_local_owned_stack_is_handed_to_the_driver_at_thread_exit: SHORT;
    case11_a_finished_exit_that_panics_as_it_is_dropped_without_a_runtime: SHORT;
    case11_a_finished_exit_that_panics_as_it_is_dropped_borrowing_current_thread: SHORT;
    case11_a_finished_exit_that_panics_as_it_is_dropped_owned_current_thread: SHORT;
    case11_a_finished_exit_that_panics_as_it_is_dropped_owned_multi_thread: SHORT;
    case11_a_finished_exit_that_panics_as_it_is_dropped_in_a_spawned_task: SHORT;
    case11_a_finished_enter_that_panics_as_it_is_dropped_is_exited_current_thread: SHORT;
    case11_a_finished_enter_that_panics_as_it_is_dropped_is_exited_multi_thread: SHORT;
    case11_a_failed_enter_that_panics_as_it_is_dropped_is_not_exited: SHORT;
    case11_a_stack_enter_that_panics_as_it_is_dropped_is_exited: SHORT;
    case11_a_stack_exit_that_panics_as_it_is_dropped_is_counted_once: SHORT;
    case12_a_cancelled_stack_of_owned_entries_current_thread_exits_them_after_the_drop: SHORT;
    case12_a_cancelled_stack_of_owned_entries_multi_thread_exits_them_after_the_drop: SHORT;
    case12_a_cancelled_stack_with_a_borrowing_entry_is_finished_in_place_in_order: SHORT;
    case12_a_cancelled_stack_with_a_callback_is_finished_in_place_in_order: SHORT;
    case12_an_owned_stack_exits_before_the_owned_manager_around_it: SHORT;
    case12_a_standalone_owned_stack_in_an_aborted_task_exits_after_the_abort: SHORT;
    case12_a_detached_stack_whose_runtime_shuts_down_is_counted: SHORT;
    case12_drain_timeout_names_the_entry_a_detached_stack_waits_on: SHORT;
    case12_an_owned_stack_dropped_by_a_panicking_task_exits_with_panicked: SHORT;
    case13_a_stack_enter_that_panics_in_poll_and_drop_does_not_abort: SHORT;
    case13_a_block_cut_by_a_timeout_that_panics_as_it_is_dropped_current_thread: SHORT;
    case13_a_block_cut_by_a_timeout_that_panics_as_it_is_dropped_multi_thread: SHORT;
    case13_a_block_moved_on_from_that_panics_as_it_is_dropped: SHORT;
    case13_a_block_cut_by_a_token_that_panics_as_it_is_dropped: SHORT;
    case13_an_enter_cut_by_a_timeout_that_panics_as_it_is_dropped: SHORT;
    case13_a_stack_exit_error_then_a_panic_as_it_is_dropped_resumes_once: SHORT;
    case13_a_stack_enter_error_then_a_panic_as_it_is_dropped_is_reported: SHORT;
    case13_a_boxed_stack_exit_error_then_a_panic_as_it_is_dropped_is_reported: SHORT;
    case14_a_shielded_future_that_panicked_in_place_is_not_polled_again: SHORT;
    case14_a_from_sync_exit_at_runtime_shutdown_current_thread_runs_once: SHORT;
    case14_a_from_sync_exit_at_runtime_shutdown_multi_thread_runs_once: SHORT;
    case14_a_from_sync_exit_running_at_shutdown_is_counted_exited: SHORT;
    case14_a_background_shutdown_does_not_wait_for_a_from_sync_exit: SHORT;
    case14_a_from_sync_exit_first_polled_at_shutdown_does_not_block_it: SHORT;
    case14_a_manager_cut_between_two_blocking_exits_at_shutdown_is_lost: SHORT;
    case14_a_from_sync_enter_done_at_shutdown_is_released_and_counted: SHORT;
    case14_a_from_sync_enter_done_at_background_shutdown_is_released_and_counted: SHORT;
    case14_many_from_sync_scopes_at_shutdown_balance: SHORT;
    case14_a_stack_finishing_a_from_sync_exit_in_place_at_shutdown_does_not_block_it: SHORT;
    case14_a_panicking_manager_expression_exits_the_entered_with_panicked: SHORT;
    case14_enter_timeout_keeps_the_token_of_what_it_wraps: SHORT;
    case14_enter_timeout_of_an_owned_stack_hands_it_over: SHORT;
    case14_a_refused_stack_entry_whose_drop_panics_does_not_abort: SHORT;
    case14_a_stack_entry_whose_deadline_and_drop_panic_does_not_abort: SHORT;
    case13_an_enter_that_panics_as_its_cancelled_scope_drops_it_current_thread: SHORT;
    case13_an_enter_that_panics_as_its_cancelled_scope_drops_it_multi_thread: SHORT;
}

// ------------------------------------------------------------ managers

/// What an enter or exit does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Return,
    /// Panics before returning its future.
    SyncPanic,
    Sleep(u64),
    /// Never finishes, and never asks to be woken.
    Forever,
}

/// A hand-written manager whose enter and exit do `enter` and `exit`;
/// `P` is `Arc<Probe>` (owned) or `&Probe` (borrowing).
struct Hand<P> {
    id: &'static str,
    probe: P,
    enter: Act,
    exit: Act,
}

impl<P> Hand<P> {
    fn new(id: &'static str, probe: P) -> Self {
        Hand {
            id,
            probe,
            enter: Act::Return,
            exit: Act::Return,
        }
    }
    fn enter(mut self, act: Act) -> Self {
        self.enter = act;
        self
    }
    fn exit(mut self, act: Act) -> Self {
        self.exit = act;
        self
    }
}

async fn act(a: Act) {
    match a {
        Act::Return | Act::SyncPanic => {}
        Act::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Act::Forever => std::future::pending().await,
    }
}

impl<P: std::ops::Deref<Target = Probe>> AsyncContextManager for Hand<P> {
    type Value<'a>
        = &'static str
    where
        Self: 'a;
    type Error = Infallible;

    fn enter(&mut self) -> impl Future<Output = Result<&'static str, Infallible>> {
        assert!(self.enter != Act::SyncPanic, "{}: enter panicked", self.id);
        async move {
            act(self.enter).await;
            self.probe.entered.fetch_add(1, SeqCst);
            Ok(self.id)
        }
    }

    fn exit(&mut self, outcome: Outcome) -> impl Future<Output = Result<(), Infallible>> {
        assert!(self.exit != Act::SyncPanic, "{}: exit panicked", self.id);
        async move {
            self.probe
                .log
                .lock()
                .unwrap()
                .push(format!("{}:{}", self.id, outcome.label()));
            act(self.exit).await;
            self.probe.exited.fetch_add(1, SeqCst);
            Ok(())
        }
    }

    fn name(&self) -> &'static str {
        self.id
    }
}

impl OwnedManager for Hand<Arc<Probe>> {}
async_contextlib::send_manager!(Hand<Arc<Probe>>, Hand<&'_ Probe>);

/// A future that is ready at once with `out`, and — if `armed` — panics
/// in its drop once it has finished (issue: a hand-written manager's
/// finished enter or exit future whose `Drop` panics).
struct PanicsWhenDropped<T> {
    out: Option<T>,
    armed: bool,
    what: &'static str,
}

impl<T: Unpin> Future for PanicsWhenDropped<T> {
    type Output = T;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        std::task::Poll::Ready(self.out.take().expect("polled once"))
    }
}

impl<T> Drop for PanicsWhenDropped<T> {
    fn drop(&mut self) {
        if self.armed && self.out.is_none() {
            panic!("{} panicked as it was dropped", self.what);
        }
    }
}

/// A hand-written manager whose enter (`enter_bomb`) or exit
/// (`exit_bomb`) future finishes and then panics as it is dropped;
/// `fails` makes its enter return an error first.
struct Bomb<P> {
    probe: P,
    enter_bomb: bool,
    exit_bomb: bool,
    fails: bool,
    exit_fails: bool,
}

impl<P> Bomb<P> {
    fn enter(probe: P) -> Self {
        Bomb {
            probe,
            enter_bomb: true,
            exit_bomb: false,
            fails: false,
            exit_fails: false,
        }
    }
    fn exit(probe: P) -> Self {
        Bomb {
            probe,
            enter_bomb: false,
            exit_bomb: true,
            fails: false,
            exit_fails: false,
        }
    }
}

impl<P: std::ops::Deref<Target = Probe>> AsyncContextManager for Bomb<P> {
    type Value<'a>
        = &'static str
    where
        Self: 'a;
    type Error = std::io::Error;

    fn enter(&mut self) -> impl Future<Output = Result<&'static str, std::io::Error>> {
        let out = if self.fails {
            Err(std::io::Error::other("bomb: enter failed"))
        } else {
            self.probe.entered.fetch_add(1, SeqCst);
            Ok("bomb")
        };
        PanicsWhenDropped {
            out: Some(out),
            armed: self.enter_bomb,
            what: "bomb: enter",
        }
    }

    fn exit(&mut self, outcome: Outcome) -> impl Future<Output = Result<(), std::io::Error>> {
        self.probe
            .log
            .lock()
            .unwrap()
            .push(format!("bomb:{}", outcome.label()));
        self.probe.exited.fetch_add(1, SeqCst);
        let out = if self.exit_fails {
            Err(std::io::Error::other("bomb: exit failed"))
        } else {
            Ok(())
        };
        PanicsWhenDropped {
            out: Some(out),
            armed: self.exit_bomb,
            what: "bomb: exit",
        }
    }

    fn name(&self) -> &'static str {
        "bomb"
    }
}

impl OwnedManager for Bomb<Arc<Probe>> {}
async_contextlib::send_manager!(Bomb<Arc<Probe>>);

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(ToString::to_string))
        .unwrap_or_default()
}

/// Every entered manager is accounted for: exited, abandoned or lost.
fn assert_accounted(s: Stats) {
    assert_eq!(s.active, 0, "{s:?}");
    assert_eq!(s.entered, s.exited + s.abandoned + s.lost, "{s:?}");
}

/// `stats()` once the driver holds nothing (waits up to 10 s).
fn settled() -> Stats {
    let _ = futures::executor::block_on(drain_timeout(Duration::from_secs(10)));
    stats()
}

// ------------------------------------------------------------ scenarios

mod scenarios {
    use super::*;

    /// Case 1: a hand-written manager's `exit` panics before returning its
    /// future. The other manager sees `Panicked`, both are counted, the
    /// panic resumes once.
    fn sync_panic_in_exit(owned: bool, rt: tokio::runtime::Runtime) {
        let probe = Probe::new();
        let p = probe.clone();
        let result = rt.block_on(
            AssertUnwindSafe(async move {
                if owned {
                    with_scope!(Hand::new("outer", p.clone()),
                                Hand::new("bad", p.clone()).exit(Act::SyncPanic) => { 1 })
                } else {
                    with_scope!(Hand::new("outer", &*p),
                                Hand::new("bad", &*p).exit(Act::SyncPanic) => { 1 })
                }
            })
            .catch_unwind(),
        );
        let payload = result.expect_err("the exit's panic resumes");
        assert_eq!(
            payload.downcast_ref::<String>().unwrap(),
            "bad: exit panicked"
        );
        assert_eq!(probe.log(), ["outer:panicked"]);
        let s = settled();
        assert_eq!((s.entered, s.exited, s.exit_failures), (2, 2, 1), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case1_sync_panic_in_exit_borrowing_current_thread() {
        sync_panic_in_exit(false, current_thread());
    }
    pub(super) fn case1_sync_panic_in_exit_borrowing_multi_thread() {
        sync_panic_in_exit(false, multi_thread());
    }
    pub(super) fn case1_sync_panic_in_exit_owned_current_thread() {
        sync_panic_in_exit(true, current_thread());
    }
    pub(super) fn case1_sync_panic_in_exit_owned_multi_thread() {
        sync_panic_in_exit(true, multi_thread());
    }

    fn sync_panic_in_enter(rt: tokio::runtime::Runtime) {
        let probe = Probe::new();
        let p = probe.clone();
        let result = rt.block_on(
            AssertUnwindSafe(async move {
                with_scope!(Hand::new("outer", &*p),
                            Hand::new("bad", &*p).enter(Act::SyncPanic) => { 1 })
            })
            .catch_unwind(),
        );
        assert!(result.is_err(), "the enter's panic resumes");
        assert_eq!(probe.log(), ["outer:panicked"]);
        let s = settled();
        // `bad` never entered; its panic counts as a failure.
        assert_eq!((s.entered, s.exited, s.exit_failures), (1, 1, 1), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case1_sync_panic_in_enter_current_thread() {
        sync_panic_in_enter(current_thread());
    }
    pub(super) fn case1_sync_panic_in_enter_multi_thread() {
        sync_panic_in_enter(multi_thread());
    }

    struct BadName;
    impl AsyncContextManager for BadName {
        type Value<'a> = ();
        type Error = Infallible;
        async fn enter(&mut self) -> Result<(), Infallible> {
            Ok(())
        }
        async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> {
            Ok(())
        }
        fn name(&self) -> &'static str {
            panic!("name panicked")
        }
    }

    pub(super) fn case1_panic_in_name() {
        let probe = Probe::new();
        let p = probe.clone();
        let result = current_thread().block_on(
            AssertUnwindSafe(async move { with_scope!(Hand::new("outer", &*p), BadName => { 1 }) })
                .catch_unwind(),
        );
        assert!(result.is_err());
        assert_eq!(probe.log(), ["outer:panicked"]);
        assert_accounted(settled());
    }

    /// An exit that panics synchronously on the cancellation paths (in
    /// place and detached) is counted, and the others still exit.
    pub(super) fn case1_sync_panic_in_exit_on_cancellation() {
        for rt in [current_thread(), multi_thread()] {
            let probe = Probe::new();
            let before = stats();
            rt.block_on(async {
                let p = probe.clone();
                let mut fut = Box::pin(async move {
                    with_scope!(Hand::new("outer-owned", p.clone()),
                                Hand::new("bad-borrowing", &*p).exit(Act::SyncPanic),
                                Hand::new("bad-owned", p.clone()).exit(Act::SyncPanic) => {
                        forever().await
                    })
                });
                assert!(poll!(fut.as_mut()).is_pending());
                drop(fut);
                // The detached exits run on this runtime: drain on it.
                drain_timeout(Duration::from_secs(10)).await.unwrap();
            });
            let s = stats();
            assert_eq!(probe.log(), ["outer-owned:cancelled"]);
            assert_eq!(s.exit_failures - before.exit_failures, 2, "{s:?}");
            drop(rt);
        }
        let s = settled();
        assert_eq!(s.exited, 6, "{s:?}");
        assert_accounted(s);
    }

    /// Case 2: owned exits queued behind a borrowing one, where tokio
    /// refuses `block_in_place` (a `LocalSet` on a multi-thread runtime):
    /// all run, in order.
    pub(super) fn case2_local_set_on_multi_thread_runs_owned_exits_behind_a_borrowing_one() {
        let rt = multi_thread();
        let probe = Probe::new();
        let local = tokio::task::LocalSet::new();
        rt.block_on(local.run_until(async {
            let p = probe.clone();
            let mut fut = Box::pin(async move {
                with_scope!(Hand::new("a", p.clone()).exit(Act::Sleep(5)),
                            Hand::new("b", &*p).exit(Act::Sleep(5)),
                            Hand::new("c", p.clone()).exit(Act::Sleep(5)) => { forever().await })
            });
            assert!(poll!(fut.as_mut()).is_pending());
            drop(fut);
        }));
        let s = settled();
        assert_eq!(probe.log(), ["c:cancelled", "b:cancelled", "a:cancelled"]);
        assert_eq!(
            (s.entered, s.exited, s.lost, s.abandoned),
            (3, 3, 0, 0),
            "{s:?}"
        );
        assert_accounted(s);
    }

    /// A borrowing manager whose exit drops another scope (over an owned
    /// manager): that scope's exit runs at once, not after the exit
    /// finishing in place (which may be waiting on it).
    struct DropsAScope<'a> {
        probe: &'a Probe,
        inner: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
    }

    impl AsyncContextManager for DropsAScope<'_> {
        type Value<'b>
            = ()
        where
            Self: 'b;
        type Error = Infallible;
        async fn enter(&mut self) -> Result<(), Infallible> {
            let p = Arc::new(Probe::default());
            let shared = p.clone();
            let mut inner: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> =
                Box::pin(async move {
                    with_scope!(Hand::new("inner", shared) => { forever().await });
                });
            assert!(poll!(inner.as_mut()).is_pending());
            self.inner = Some(inner);
            self.probe.entered.fetch_add(1, SeqCst);
            Ok(())
        }
        async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> {
            self.inner = None; // drops the inner scope
            self.probe.exited.fetch_add(1, SeqCst);
            Ok(())
        }
    }

    pub(super) fn case2_an_in_place_exit_that_drops_another_scope() {
        for rt in [current_thread(), multi_thread()] {
            let probe = Probe::new();
            rt.block_on(async {
                let p = probe.clone();
                let mut fut = Box::pin(async move {
                    with_scope!(DropsAScope { probe: &p, inner: None } => { forever().await })
                });
                assert!(poll!(fut.as_mut()).is_pending());
                drop(fut);
            });
            let s = settled();
            assert_eq!(probe.exited(), 1);
            assert_eq!((s.lost, s.abandoned), (0, 0), "{s:?}");
            drop(rt);
        }
        let s = settled();
        // Two outer and two inner managers, all exited.
        assert_eq!((s.entered, s.exited), (4, 4), "{s:?}");
        assert_accounted(s);
    }

    /// `futures::executor::block_on` inside `spawn_blocking`: no nested
    /// executor panic, every exit runs.
    pub(super) fn case2_block_on_inside_spawn_blocking() {
        let rt = multi_thread();
        let probe = Probe::new();
        let p = probe.clone();
        rt.block_on(async move {
            tokio::task::spawn_blocking(move || {
                futures::executor::block_on(async {
                    let mut fut = Box::pin(async {
                        with_scope!(Hand::new("a", p.clone()),
                                    Hand::new("b", &*p),
                                    Hand::new("c", p.clone()) => { forever().await })
                    });
                    assert!(poll!(fut.as_mut()).is_pending());
                    drop(fut);
                });
            })
            .await
            .unwrap();
        });
        let s = settled();
        assert_eq!(probe.log(), ["c:cancelled", "b:cancelled", "a:cancelled"]);
        assert_eq!((s.exited, s.lost, s.abandoned), (3, 0, 0), "{s:?}");
        assert_accounted(s);
    }

    type Boxed = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

    /// Case 3: a scope future kept in a thread-local, dropped when its
    /// thread ends (after the driver's own thread-locals may be gone): no
    /// abort, every exit accounted.
    pub(super) fn case3_scope_future_in_a_thread_local() {
        thread_local! {
            static KEPT: std::cell::RefCell<Vec<Boxed>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let probe = Probe::new();
        let p = probe.clone();
        std::thread::spawn(move || {
            let mut fut: Boxed = Box::pin(async move {
                with_scope!(Hand::new("owned", p.clone()), Hand::new("borrowing", &*p) => {
                    forever().await
                });
            });
            futures::executor::block_on(async {
                assert!(poll!(fut.as_mut()).is_pending());
            });
            KEPT.with(|k| k.borrow_mut().push(fut));
        })
        .join()
        .expect("the thread ended without a panic");
        let s = settled();
        assert_eq!(s.entered, 2, "{s:?}");
        assert_accounted(s);
    }

    /// A current-thread runtime kept in a thread-local, with a task holding
    /// a scope: dropped at thread exit.
    pub(super) fn case3_current_thread_runtime_in_a_thread_local() {
        thread_local! {
            static RT: std::cell::RefCell<Option<tokio::runtime::Runtime>> = const { std::cell::RefCell::new(None) };
        }
        let probe = Probe::new();
        let p = probe.clone();
        std::thread::spawn(move || {
            let rt = current_thread();
            let task = rt.spawn(async move {
                with_scope!(Hand::new("owned", p.clone()).exit(Act::Sleep(1)), Hand::new("borrowing", &*p) => {
                    forever().await
                });
            });
            rt.block_on(async {
                while probe_entered(&task) {
                    tokio::task::yield_now().await;
                }
            });
            RT.with(|r| *r.borrow_mut() = Some(rt));
        })
        .join()
        .expect("the thread ended without a panic");
        let s = settled();
        assert_eq!(s.entered, 2, "{s:?}");
        assert_accounted(s);
        assert_eq!(probe.entered(), 2);
    }

    /// Yields until the task had a chance to enter (it never finishes).
    fn probe_entered(task: &tokio::task::JoinHandle<()>) -> bool {
        static POLLS: AtomicUsize = AtomicUsize::new(0);
        !task.is_finished() && POLLS.fetch_add(1, SeqCst) < 10
    }

    /// A `LocalSet` kept in a thread-local, with local tasks holding scopes.
    pub(super) fn case3_local_set_in_a_thread_local() {
        thread_local! {
            static LOCAL: std::cell::RefCell<Option<tokio::task::LocalSet>> = const { std::cell::RefCell::new(None) };
        }
        let probe = Probe::new();
        let p = probe.clone();
        std::thread::spawn(move || {
            let rt = current_thread();
            let local = tokio::task::LocalSet::new();
            let q = p.clone();
            local.spawn_local(async move {
                with_scope!(Hand::new("owned", q.clone()), Hand::new("borrowing", &*q) => {
                    forever().await
                });
            });
            rt.block_on(local.run_until(async {
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
            }));
            LOCAL.with(|l| *l.borrow_mut() = Some(local));
            // The runtime goes first; the `LocalSet` at thread exit.
            drop(rt);
        })
        .join()
        .expect("the thread ended without a panic");
        let s = settled();
        assert_eq!(probe.entered(), 2);
        assert_accounted(s);
    }

    /// Case 4: dropping a multi-thread runtime while tasks hold scopes over
    /// borrowing managers whose exits await a timer returns promptly;
    /// every exit is accounted for (lost: the timers can no longer fire).
    pub(super) fn case4_dropping_a_multi_thread_runtime_never_hangs() {
        let rt = multi_thread();
        let entered = Arc::new(AtomicUsize::new(0));
        for _ in 0..8 {
            let entered = entered.clone();
            rt.spawn(async move {
                let probe = Probe::default();
                with_scope!(Hand::new("timer-exit", &probe).exit(Act::Sleep(60_000)) => {
                    entered.fetch_add(1, SeqCst);
                    forever().await
                });
            });
        }
        while entered.load(SeqCst) < 8 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let started = Instant::now();
        drop(rt);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let s = settled();
        assert_eq!(s.entered, 8, "{s:?}");
        assert_accounted(s);
    }

    fn spawn_scopes(rt: &tokio::runtime::Runtime, n: usize) {
        let entered = Arc::new(AtomicUsize::new(0));
        for i in 0..n {
            let entered = entered.clone();
            rt.spawn(async move {
                let probe = Arc::new(Probe::default());
                if i % 2 == 0 {
                    with_scope!(Hand::new("borrowing", &*probe).exit(Act::Sleep(10)) => {
                        entered.fetch_add(1, SeqCst);
                        forever().await
                    });
                } else {
                    with_scope!(Hand::new("owned", probe.clone()).exit(Act::Sleep(10)) => {
                        entered.fetch_add(1, SeqCst);
                        forever().await
                    });
                }
            });
        }
        while entered.load(SeqCst) < n {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Every entered exit is eventually exited, abandoned or lost.
    fn eventually_accounted(n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = stats();
            if s.entered == n && s.active == 0 && s.pending == 0 {
                assert_accounted(s);
                return;
            }
            assert!(Instant::now() < deadline, "not accounted: {s:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(super) fn case4_shutdown_timeout_accounts_for_every_exit() {
        let rt = multi_thread();
        spawn_scopes(&rt, 40);
        rt.shutdown_timeout(Duration::from_millis(100));
        eventually_accounted(40);
    }

    pub(super) fn case4_shutdown_background_accounts_for_every_exit() {
        let rt = multi_thread();
        spawn_scopes(&rt, 40);
        rt.shutdown_background();
        eventually_accounted(40);
    }

    /// Case 5: an in-place exit that never finishes is abandoned at the
    /// limit; the drop returns, `active` comes back, the runtime drops.
    pub(super) fn case5_an_in_place_exit_that_never_finishes_is_abandoned() {
        set_in_place_limit(Duration::from_millis(200));
        for rt in [multi_thread(), current_thread()] {
            rt.block_on(async {
                let probe = Probe::new();
                let p = probe.clone();
                let mut fut = Box::pin(async move {
                    with_scope!(Hand::new("never", &*p).exit(Act::Forever) => { forever().await })
                });
                assert!(poll!(fut.as_mut()).is_pending());
                let started = Instant::now();
                drop(fut);
                assert!(started.elapsed() >= Duration::from_millis(200));
                assert!(started.elapsed() < Duration::from_secs(5));
            });
            drop(rt);
        }
        let s = settled();
        assert_eq!((s.entered, s.abandoned, s.exited), (2, 2, 0), "{s:?}");
        assert_accounted(s);
    }

    /// `drain_timeout` reports an exit still finishing in place.
    pub(super) fn case5_drain_timeout_names_an_in_place_exit_in_flight() {
        let rt = multi_thread();
        let started = Arc::new(AtomicBool::new(false));
        let s2 = started.clone();
        let task = rt.spawn(async move {
            let probe = Probe::default();
            let mut fut = Box::pin(async {
                with_scope!(Hand::new("slow-in-place", &probe).exit(Act::Sleep(500)) => {
                    forever().await
                })
            });
            assert!(poll!(fut.as_mut()).is_pending());
            s2.store(true, SeqCst);
            drop(fut); // finishes in place: 0.5 s
        });
        while !started.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
        let err = futures::executor::block_on(drain_timeout(Duration::from_millis(100)))
            .expect_err("the in-place exit is still running");
        assert_eq!(err.names(), ["slow-in-place"]);
        rt.block_on(task).unwrap();
        let s = settled();
        assert_eq!(s.exited, 1);
        assert_accounted(s);
    }

    /// Case 6: two sibling scopes in one `join!`: one holds a lock until
    /// its exit, the other's exit needs that lock. Cancelled, their exits
    /// run concurrently (not one after the other), then their parent's.
    #[async_context_manager]
    async fn holds_lock(lock: Arc<tokio::sync::Mutex<()>>, log: Arc<Mutex<Vec<String>>>) -> u32 {
        let guard = lock.lock_owned().await;
        let _ = yield_!(1);
        log.lock().unwrap().push("holder exits".into());
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(guard);
    }

    #[async_context_manager]
    async fn needs_lock(lock: Arc<tokio::sync::Mutex<()>>, log: Arc<Mutex<Vec<String>>>) -> u32 {
        let _ = yield_!(2);
        let _guard = lock.lock().await;
        log.lock().unwrap().push("needer exits".into());
    }

    #[async_context_manager]
    async fn parent(log: Arc<Mutex<Vec<String>>>) -> u32 {
        let _ = yield_!(0);
        log.lock().unwrap().push("parent exits".into());
    }

    fn siblings(rt: tokio::runtime::Runtime) {
        for holder_first in [true, false] {
            let log = Arc::new(Mutex::new(Vec::new()));
            let lock = Arc::new(tokio::sync::Mutex::new(()));
            let (l, k) = (log.clone(), lock.clone());
            rt.block_on(async move {
                let scope = async move {
                    with_scope!(parent(l.clone()) => {
                        let holder = async {
                            with_scope!(holds_lock(k.clone(), l.clone()) => { forever().await })
                        };
                        let needer = async {
                            with_scope!(needs_lock(k.clone(), l.clone()) => { forever().await })
                        };
                        if holder_first {
                            tokio::join!(holder, needer);
                        } else {
                            tokio::join!(needer, holder);
                        }
                    })
                };
                let r = tokio::time::timeout(Duration::from_millis(20), scope).await;
                assert!(r.is_err());
                drain_timeout(Duration::from_secs(5))
                    .await
                    .expect("sibling exits must not deadlock");
            });
            let log = log.lock().unwrap().clone();
            assert_eq!(log.len(), 3, "{log:?}");
            assert_eq!(
                log[2], "parent exits",
                "the parent exits after both: {log:?}"
            );
        }
        let s = settled();
        assert_eq!((s.entered, s.exited, s.lost), (6, 6, 0), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case6_sibling_exits_run_concurrently_multi_thread() {
        siblings(multi_thread());
    }
    pub(super) fn case6_sibling_exits_run_concurrently_current_thread() {
        siblings(current_thread());
    }

    /// Case 7: a `from_sync` enter (a blocking acquisition) cut before it
    /// completes still gets its exit — the lock it took is released.
    fn lock_file(
        held: &Arc<AtomicBool>,
    ) -> impl OwnedManager<Error = std::io::Error> + Send + use<> {
        let (h1, h2) = (held.clone(), held.clone());
        from_sync(
            move || {
                std::thread::sleep(Duration::from_millis(200));
                h1.store(true, SeqCst);
                Ok::<_, std::io::Error>(())
            },
            move |(), outcome| {
                assert!(matches!(outcome, Outcome::Cancelled));
                h2.store(false, SeqCst);
                Ok(())
            },
        )
    }

    fn check_released(held: &AtomicBool) {
        let s = settled();
        assert!(
            !held.load(SeqCst),
            "the lock taken by the cut enter was released"
        );
        assert_eq!((s.entered, s.exited, s.lost), (1, 1, 0), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case7_from_sync_enter_cut_by_an_outer_timeout() {
        let held = Arc::new(AtomicBool::new(false));
        let manager = lock_file(&held);
        multi_thread().block_on(async move {
            let scope = async move {
                let r: Result<(), std::io::Error> = with_scope!(manager => { Ok(()) });
                r
            };
            assert!(
                tokio::time::timeout(Duration::from_millis(20), scope)
                    .await
                    .is_err()
            );
        });
        check_released(&held);
    }

    pub(super) fn case7_from_sync_enter_cut_by_enter_timeout() {
        let held = Arc::new(AtomicBool::new(false));
        let manager = async_contextlib::enter_timeout(lock_file(&held), Duration::from_millis(20));
        multi_thread().block_on(async move {
            let r: Result<(), async_contextlib::EnterError<std::io::Error>> =
                with_scope!(manager => { Ok(()) });
            assert!(matches!(r, Err(async_contextlib::EnterError::TimedOut(_))));
        });
        check_released(&held);
    }

    pub(super) fn case7_from_sync_enter_cut_by_a_timeout_manager() {
        let held = Arc::new(AtomicBool::new(false));
        let manager = lock_file(&held);
        let r = multi_thread().block_on(async move {
            let r: Result<(), std::io::Error> = with_scope!(
                async_contextlib::timeout(Duration::from_millis(20)), manager => { Ok(()) });
            r
        });
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        let s = settled();
        assert!(!held.load(SeqCst));
        // The timeout manager and the cut enter's own accounting.
        assert_eq!((s.entered, s.exited), (2, 2), "{s:?}");
        assert_accounted(s);
    }

    /// Case 8: `drain_timeout` works with no runtime at all.
    pub(super) fn case8_drain_timeout_without_a_runtime() {
        futures::executor::block_on(async {
            drain_timeout(Duration::from_millis(10)).await.unwrap();
            // Work that never finishes, handed to the driver.
            drop(async_contextlib::shield(std::future::pending::<()>()));
            let started = Instant::now();
            let err = drain_timeout(Duration::from_millis(50)).await.unwrap_err();
            assert!(started.elapsed() >= Duration::from_millis(50));
            assert_eq!(err.names(), ["async_contextlib::shield"]);
        });
    }

    /// Case 9: a pool whose `acquire(&self)` is a generated (borrowing)
    /// method, on a current-thread runtime: borrowers cancelled by
    /// `select!` and `timeout` return every connection.
    struct Pool {
        idle: tokio::sync::Mutex<Vec<u32>>,
    }

    impl Pool {
        #[async_context_manager]
        async fn acquire(&self) -> &mut u32 {
            let mut conn = self.idle.lock().await.pop().expect("a free connection");
            let _ = yield_!(&mut conn);
            self.idle.lock().await.push(conn);
        }

        /// Owned without ceremony: `self: Arc<Self>` on a type without
        /// lifetimes is an `OwnedManager`.
        #[async_context_manager]
        async fn acquire_owned(self: Arc<Self>) -> u32 {
            let conn = self.idle.lock().await.pop().expect("a free connection");
            let _ = yield_!(conn);
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.idle.lock().await.push(conn);
        }
    }

    pub(super) fn case9_pool_on_current_thread_returns_every_connection() {
        let pool = Pool {
            idle: tokio::sync::Mutex::new(vec![1, 2, 3]),
        };
        current_thread().block_on(async {
            tokio::select! {
                () = async { with_scope!(pool.acquire() as c => { *c += 10; forever().await }) } => {}
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
            let r = tokio::time::timeout(Duration::from_millis(5), async {
                with_scope!(pool.acquire() as _c, pool.acquire() as _d => { forever().await })
            })
            .await;
            assert!(r.is_err());
        });
        let mut idle = pool.idle.into_inner();
        idle.sort_unstable();
        // The first borrower took connection 3 and used it.
        assert_eq!(idle, [1, 2, 13]);
        let s = settled();
        assert_eq!(
            (s.entered, s.exited, s.abandoned, s.lost),
            (3, 3, 0, 0),
            "{s:?}"
        );
    }

    fn owned<M: OwnedManager>(m: M) -> M {
        m
    }

    pub(super) fn case9_arc_self_is_owned_without_ceremony() {
        let pool = Arc::new(Pool {
            idle: tokio::sync::Mutex::new(vec![1]),
        });
        let p = pool.clone();
        current_thread().block_on(async move {
            let task = tokio::spawn(async move {
                with_scope!(owned(p.acquire_owned()) as _c => { forever().await })
            });
            tokio::task::yield_now().await;
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
            // Detached: its exit (which sleeps on this runtime) finishes on it.
            drain_timeout(Duration::from_secs(5)).await.unwrap();
        });
        assert_eq!(pool.idle.try_lock().unwrap().len(), 1);
        let s = settled();
        assert_eq!((s.entered, s.exited, s.abandoned), (1, 1, 0), "{s:?}");
    }

    /// An abandoned exit, with no `tracing` subscriber installed, is still
    /// written to stderr (straight to the file descriptor, which the test
    /// harness does not capture): checked by the parent test.
    pub(super) fn case9_an_abandoned_exit_is_written_to_stderr_without_a_subscriber() {
        set_in_place_limit(Duration::from_millis(20));
        current_thread().block_on(async {
            let probe = Probe::new();
            let p = probe.clone();
            let mut fut = Box::pin(async move {
                with_scope!(Hand::new("waits-on-its-runtime", &*p).exit(Act::Sleep(60_000)) => {
                    forever().await
                })
            });
            assert!(poll!(fut.as_mut()).is_pending());
            drop(fut);
        });
        assert_eq!(stats().abandoned, 1);
    }

    // ---- case 10: exit stacks (the managers are below)

    use async_contextlib::{BoxError, ExitStack};

    /// Break A: an entry's exit needs a lock that a scope nested in the
    /// stack's block holds until its exit. Cancelled, the nested scope
    /// exits first — as it would around a plain scope — so nothing waits.
    pub(super) fn case10_a_cancelled_stack_exits_after_what_is_nested_in_it() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let (l, k) = (log.clone(), lock.clone());
        let started = Instant::now();
        multi_thread().block_on(async move {
            let scope = async move {
                let r: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
                    stack.enter(needs_lock(k.clone(), l.clone())).await?;
                    with_scope!(holds_lock(k.clone(), l.clone()) => { forever().await });
                    Ok(())
                });
                r
            };
            let cut = tokio::time::timeout(Duration::from_millis(20), scope).await;
            assert!(cut.is_err());
            drain_timeout(Duration::from_secs(5)).await.unwrap();
        });
        let elapsed = started.elapsed();
        assert_eq!(*log.lock().unwrap(), ["holder exits", "needer exits"]);
        let s = settled();
        assert_eq!((s.entered, s.exited, s.abandoned), (3, 3, 0), "{s:?}");
        assert!(elapsed < Duration::from_millis(900), "waited {elapsed:?}");
    }

    /// Break A: `with_scope!(stack, after)` exits right to left: `after`
    /// first, then what the stack holds.
    fn right_to_left(rt: tokio::runtime::Runtime) {
        let probe = Probe::new();
        let p = probe.clone();
        rt.block_on(async move {
            let mut fut = Box::pin(async move {
                let r: Result<(), BoxError> = with_scope!(
                    ExitStack::new() as stack, Hand::new("after-stack", p.clone()) => {
                        stack.enter(Hand::new("in-stack", p.clone())).await?;
                        forever().await;
                        Ok(())
                    }
                );
                r
            });
            assert!(poll!(fut.as_mut()).is_pending());
            drop(fut);
            drain_timeout(Duration::from_secs(5)).await.unwrap();
        });
        assert_eq!(
            *probe.log.lock().unwrap(),
            ["after-stack:cancelled", "in-stack:cancelled"]
        );
        let s = settled();
        assert_eq!((s.entered, s.exited, s.abandoned), (3, 3, 0), "{s:?}");
    }

    pub(super) fn case10_a_cancelled_stack_scope_exits_right_to_left_current_thread() {
        right_to_left(current_thread());
    }
    pub(super) fn case10_a_cancelled_stack_scope_exits_right_to_left_multi_thread() {
        right_to_left(multi_thread());
    }

    /// Break A: a stack in a block, a scope opened after it, all cut by a
    /// timeout: innermost first.
    pub(super) fn case10_a_stack_in_a_block_exits_after_the_scopes_opened_after_it() {
        let probe = Probe::new();
        let p = probe.clone();
        current_thread().block_on(async move {
            let scope = async move {
                with_scope!(Hand::new("outer", p.clone()) => {
                    let stack = ExitStack::new();
                    stack.enter(Hand::new("in-stack", p.clone())).await.unwrap();
                    with_scope!(Hand::new("opened-after", p.clone()) => { forever().await });
                })
            };
            let cut = tokio::time::timeout(Duration::from_millis(5), scope).await;
            assert!(cut.is_err());
            drain_timeout(Duration::from_secs(5)).await.unwrap();
        });
        assert_eq!(
            *probe.log.lock().unwrap(),
            [
                "opened-after:cancelled",
                "in-stack:cancelled",
                "outer:cancelled"
            ]
        );
        let s = settled();
        assert_eq!((s.entered, s.exited), (3, 3), "{s:?}");
        assert_accounted(s);
    }

    /// Break B: an entry's exit never finishes (abandoned) and its drop
    /// panics: caught and reported; the older entry still exits. (The
    /// older entry borrows, so the stack is finished in place; case 12 has
    /// the same entry in a stack handed to the driver.)
    pub(super) fn case10_a_stack_entry_whose_drop_panics_skips_no_older_entry() {
        set_in_place_limit(Duration::from_millis(50));
        let probe = Probe::new();
        let escaped = current_thread().block_on(async {
            let stack = ExitStack::new();
            stack.enter(Hand::new("older", &*probe)).await.unwrap();
            stack.enter(strict()).await.unwrap();
            std::panic::catch_unwind(AssertUnwindSafe(move || drop(stack))).is_err()
        });
        assert!(!escaped, "a panic escaped the stack's drop");
        assert_eq!(*probe.log.lock().unwrap(), ["older:cancelled"]);
        let s = settled();
        assert_eq!(
            (s.entered, s.exited, s.abandoned, s.active),
            (2, 1, 1, 0),
            "{s:?}"
        );
        assert_accounted(s);
    }

    /// Break B, dropped by a task that is already panicking: no abort.
    pub(super) fn case10_a_stack_entry_whose_drop_panics_while_unwinding_does_not_abort() {
        set_in_place_limit(Duration::from_millis(50));
        let probe = Probe::new();
        let p = probe.clone();
        current_thread().block_on(async move {
            let task = tokio::spawn(async move {
                // Borrowing (`'static` data through a reference): finished
                // in place.
                let older: &'static Probe = Box::leak(Box::new(p.clone()));
                let stack = ExitStack::new();
                stack.enter(Hand::new("older", older)).await.unwrap();
                stack.enter(strict()).await.unwrap();
                panic!("the task fails with the stack alive");
            });
            assert!(task.await.unwrap_err().is_panic());
        });
        assert_eq!(*probe.log.lock().unwrap(), ["older:panicked"]);
        // (The entry's drop panicked while the task unwound: caught, not an abort.)
        let s = settled();
        assert_eq!((s.entered, s.exited, s.abandoned), (2, 1, 1), "{s:?}");
        assert_accounted(s);
    }

    /// Break C: `drain()` inside a detached exit would wait for itself; it
    /// returns at once (reported), and the exit finishes.
    pub(super) fn case10_drain_inside_a_detached_exit_returns_at_once() {
        let probe = Probe::new();
        let p = probe.clone();
        current_thread().block_on(async move {
            let mut fut = Box::pin(async move {
                with_scope!(Drains(p.clone()) => { forever().await });
            });
            assert!(poll!(fut.as_mut()).is_pending());
            drop(fut);
            drain_timeout(Duration::from_secs(3))
                .await
                .expect("the exit calling drain finishes");
        });
        assert_eq!(probe.exited(), 1);
        let s = settled();
        assert_eq!((s.entered, s.exited, s.pending), (1, 1, 0), "{s:?}");
    }

    /// Break C, borrowing (finished in place): not abandoned.
    pub(super) fn case10_drain_inside_an_in_place_exit_returns_at_once() {
        let probe = Probe::new();
        let p = probe.clone();
        let started = Instant::now();
        multi_thread().block_on(async move {
            let mut fut = Box::pin(async move {
                with_scope!(Drains(&*p) => { forever().await });
            });
            assert!(poll!(fut.as_mut()).is_pending());
            drop(fut);
        });
        assert!(started.elapsed() < Duration::from_millis(900));
        assert_eq!(probe.exited(), 1);
        let s = settled();
        assert_eq!((s.entered, s.exited, s.abandoned), (1, 1, 0), "{s:?}");
    }

    /// Break D: `close()` cancelled after an entry failed: the error it
    /// held is reported (once) and counted (once).
    pub(super) fn case10_an_error_held_by_a_cancelled_close_is_reported_once() {
        let (_guard, events) = driver_util::capture();
        let probe = Probe::new();
        let p = probe.clone();
        multi_thread().block_on(async move {
            let mut stack = ExitStack::new();
            stack
                .enter(Hand::new("slow", p.clone()).exit(Act::Sleep(50)))
                .await
                .unwrap();
            stack.enter(Fails("err-lost")).await.unwrap();
            {
                let mut close = Box::pin(stack.close());
                assert!(poll!(close.as_mut()).is_pending());
            }
            drop(stack);
        });
        let reported: Vec<_> = events
            .all()
            .into_iter()
            .filter(|e| e.text.contains("err-lost"))
            .collect();
        assert_eq!(reported.len(), 1, "{:?}", events.all());
        let s = settled();
        assert_eq!((s.entered, s.exited, s.exit_failures), (2, 2, 1), "{s:?}");
    }

    /// Break D: a plain scope cancelled while its second exit runs: the
    /// first exit's error it was to return is reported.
    pub(super) fn case10_an_error_held_by_a_scope_cancelled_mid_exit_is_reported() {
        let (_guard, events) = driver_util::capture();
        let probe = Probe::new();
        let p = probe.clone();
        current_thread().block_on(async move {
            let mut fut = Box::pin(async move {
                let r: Result<(), std::io::Error> = with_scope!(
                    Hand::new("slow", p.clone()).exit(Act::Sleep(50)), Fails("err-lost") => {
                        Ok(())
                    }
                );
                r
            });
            assert!(poll!(fut.as_mut()).is_pending());
            drop(fut);
            drain_timeout(Duration::from_secs(5)).await.unwrap();
        });
        assert!(
            events
                .find(tracing::Level::ERROR, &["err-lost", "cancelled"])
                .is_some(),
            "{:?}",
            events.all()
        );
        let s = settled();
        assert_eq!((s.entered, s.exited, s.exit_failures), (2, 2, 1), "{s:?}");
    }

    /// Break D: one failing entry is one failure, though the stack's own
    /// exit returns that error to its scope.
    pub(super) fn case10_a_failing_entry_of_a_stack_scope_counts_once() {
        futures::executor::block_on(async {
            let r: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
                stack.enter(Fails("fails-once")).await?;
                Ok(())
            });
            assert_eq!(r.unwrap_err().to_string(), "fails-once");
            let mut outer = ExitStack::new();
            let inner = ExitStack::new();
            inner.enter(Fails("fails-in-inner")).await.unwrap();
            outer.enter(inner).await.unwrap();
            let r = outer.close().await;
            assert_eq!(r.unwrap_err().to_string(), "fails-in-inner");
        });
        let s = settled();
        assert_eq!(s.exit_failures, 2, "{s:?}");
    }

    /// Break E: a stack in a thread-local, on a thread with no runtime,
    /// dropped at thread exit: entries exit and the library's own probing
    /// prints no panic. With a borrowing entry the stack is finished in
    /// place there, where the timer-using exit fails (tokio's context is
    /// gone); with owned entries only, it is handed to the driver's own
    /// runtime, where the timer works.
    fn thread_local_stack(borrowing: bool) {
        thread_local! {
            static STACK: std::cell::RefCell<Option<ExitStack<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        let probe = Probe::new();
        let p = probe.clone();
        std::thread::spawn(move || {
            futures::executor::block_on(async move {
                let stack = ExitStack::new();
                if borrowing {
                    let leaked: &'static Probe = Box::leak(Box::new(p.clone()));
                    let timer = Hand::new("timer", leaked).exit(Act::Sleep(1));
                    stack.enter(timer).await.unwrap();
                } else {
                    let timer = Hand::new("timer", p.clone()).exit(Act::Sleep(1));
                    stack.enter(timer).await.unwrap();
                }
                stack.enter(Hand::new("plain", p.clone())).await.unwrap();
                STACK.with(|s| *s.borrow_mut() = Some(stack));
            });
            // Tokio's own thread-locals, set up after the stack's: torn
            // down before it is.
            assert!(tokio::runtime::Handle::try_current().is_err());
        })
        .join()
        .unwrap();
        let s = settled();
        assert_eq!(probe.log(), ["plain:cancelled", "timer:cancelled"]);
        let failures = u64::from(borrowing);
        assert_eq!(
            (s.entered, s.exited, s.exit_failures),
            (2, 2, failures),
            "{s:?}"
        );
    }

    pub(super) fn case10_a_thread_local_stack_without_a_runtime_prints_no_library_panic() {
        thread_local_stack(true);
    }

    pub(super) fn case12_a_thread_local_owned_stack_is_handed_to_the_driver_at_thread_exit() {
        thread_local_stack(false);
    }

    // Case 11: a finished enter or exit future whose drop panics (a
    // hand-written manager). The panic is the manager's: caught, a
    // `Panicked` outcome for the others, resumed once; an enter that
    // returned its value is exited all the same; nothing aborts.

    /// A scope whose panic is caught.
    type Caught = std::pin::Pin<Box<dyn Future<Output = std::thread::Result<i32>> + Send>>;

    /// `with_scope!(outer, bomb)` where the bomb's exit future panics as
    /// it is dropped, run by `block_on`.
    fn exit_bomb(owned: bool, block_on: impl FnOnce(Caught) -> std::thread::Result<i32>) {
        let probe = Probe::new();
        let p = probe.clone();
        let scope: Caught = Box::pin(
            AssertUnwindSafe(async move {
                let r: Result<i32, std::io::Error> = if owned {
                    with_scope!(Hand::new("outer", p.clone()), Bomb::exit(p.clone()) => { Ok(1) })
                } else {
                    let p = &*p;
                    with_scope!(Hand::new("outer", p), Bomb::exit(p) => { Ok(1) })
                };
                r.expect("the panic resumes first")
            })
            .catch_unwind(),
        );
        let payload = block_on(scope).expect_err("the exit's panic resumes");
        assert_eq!(
            panic_message(&*payload),
            "bomb: exit panicked as it was dropped"
        );
        assert_eq!(probe.log(), ["bomb:success", "outer:panicked"]);
        let s = settled();
        assert_eq!((s.entered, s.exited, s.exit_failures), (2, 2, 1), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case11_a_finished_exit_that_panics_as_it_is_dropped_without_a_runtime() {
        exit_bomb(true, futures::executor::block_on);
    }
    pub(super) fn case11_a_finished_exit_that_panics_as_it_is_dropped_borrowing_current_thread() {
        exit_bomb(false, |f| current_thread().block_on(f));
    }
    pub(super) fn case11_a_finished_exit_that_panics_as_it_is_dropped_owned_current_thread() {
        exit_bomb(true, |f| current_thread().block_on(f));
    }
    pub(super) fn case11_a_finished_exit_that_panics_as_it_is_dropped_owned_multi_thread() {
        exit_bomb(true, |f| multi_thread().block_on(f));
    }
    pub(super) fn case11_a_finished_exit_that_panics_as_it_is_dropped_in_a_spawned_task() {
        exit_bomb(true, |f| {
            multi_thread().block_on(async { tokio::spawn(f).await.expect("the task ends") })
        });
    }

    fn enter_bomb(rt: tokio::runtime::Runtime) {
        let probe = Probe::new();
        let p = probe.clone();
        let body_ran = AtomicBool::new(false);
        let result = rt.block_on(
            AssertUnwindSafe(async {
                let r: Result<i32, std::io::Error> = with_scope!(Hand::new("outer", &*p), Bomb::enter(&*p) => {
                    body_ran.store(true, SeqCst);
                    Ok(1)
                });
                r
            })
            .catch_unwind(),
        );
        let payload = result.expect_err("the enter's panic resumes");
        assert_eq!(
            panic_message(&*payload),
            "bomb: enter panicked as it was dropped"
        );
        assert!(
            !body_ran.load(SeqCst),
            "the block ran after a panicking enter"
        );
        // The bomb returned its value: it is exited, once, with the panic.
        assert_eq!(probe.log(), ["bomb:panicked", "outer:panicked"]);
        let s = settled();
        assert_eq!((s.entered, s.exited, s.exit_failures), (2, 2, 1), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case11_a_finished_enter_that_panics_as_it_is_dropped_is_exited_current_thread() {
        enter_bomb(current_thread());
    }
    pub(super) fn case11_a_finished_enter_that_panics_as_it_is_dropped_is_exited_multi_thread() {
        enter_bomb(multi_thread());
    }

    pub(super) fn case11_a_failed_enter_that_panics_as_it_is_dropped_is_not_exited() {
        let probe = Probe::new();
        let p = probe.clone();
        let result = current_thread().block_on(
            AssertUnwindSafe(async {
                let mut bomb = Bomb::enter(&*p);
                bomb.fails = true;
                let r: Result<i32, std::io::Error> =
                    with_scope!(Hand::new("outer", &*p), bomb => { Ok(1) });
                r
            })
            .catch_unwind(),
        );
        let payload = result.expect_err("the panic wins over the error");
        assert_eq!(
            panic_message(&*payload),
            "bomb: enter panicked as it was dropped"
        );
        // It never entered: only `outer` exits.
        assert_eq!(probe.log(), ["outer:panicked"]);
        let s = settled();
        assert_eq!((s.entered, s.exited, s.exit_failures), (1, 1, 1), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case11_a_stack_enter_that_panics_as_it_is_dropped_is_exited() {
        let probe = Probe::new();
        let p = probe.clone();
        let result = current_thread().block_on(
            AssertUnwindSafe(async move {
                use async_contextlib::ExitStack;
                let r: Result<i32, async_contextlib::BoxError> =
                    with_scope!(ExitStack::new() as stack => {
                        stack.enter(Bomb::enter(p.clone())).await?;
                        Ok(1)
                    });
                r
            })
            .catch_unwind(),
        );
        let payload = result.expect_err("the enter's panic resumes");
        assert_eq!(
            panic_message(&*payload),
            "bomb: enter panicked as it was dropped"
        );
        assert_eq!(probe.log(), ["bomb:panicked"]);
        let s = settled();
        // The stack and the bomb entered and exited.
        assert_eq!((s.entered, s.exited), (2, 2), "{s:?}");
        assert_accounted(s);
    }

    // Case 12: a cancelled stack whose entries are all owned managers is
    // owned (SPEC §5): its exits are handed to the exit driver and run
    // after the drop, newest first, before the exits of the scopes around
    // it — also on a current-thread runtime, where an exit that waits on
    // that runtime's timer could not finish in place. A stack with a
    // borrowing entry or a callback is finished in place, in order.

    #[async_context_manager]
    async fn sleepy_owned(id: &'static str, probe: Arc<Probe>) -> u32 {
        let outcome = yield_!(1);
        tokio::time::sleep(Duration::from_millis(10)).await;
        probe
            .log
            .lock()
            .unwrap()
            .push(format!("{id}:{}", outcome.label()));
        probe.exited.fetch_add(1, SeqCst);
    }

    /// Cuts `scope` after 5 ms (it must not have ended), then drains: what
    /// `probe` had logged when the cut returned, and once drained.
    async fn cancel_then_drain<F: Future>(probe: &Probe, scope: F) -> (Vec<String>, Vec<String>) {
        let timed = tokio::time::timeout(Duration::from_millis(5), scope).await;
        assert!(timed.is_err(), "the scope is cancelled");
        let at_cancel = probe.log();
        async_contextlib::drain().await;
        (at_cancel, probe.log())
    }

    fn owned_stack_exits_after_the_drop(rt: tokio::runtime::Runtime, single_thread: bool) {
        use async_contextlib::{BoxError, ExitStack};
        let probe = Probe::new();
        let p = probe.clone();
        let mutex = Arc::new(tokio::sync::Mutex::new(0));
        let semaphore = Arc::new(tokio::sync::Semaphore::new(1));
        // Dropped when the group's task is aborted.
        let child = Arc::new(());
        let (m, sem, c) = (mutex.clone(), semaphore.clone(), child.clone());
        let at_cancel = rt.block_on(async move {
            let scope = async move {
                let r: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
                    stack.enter(sleepy_owned("generated", p.clone())).await?;
                    // Entered, a `nullcontext` holds nothing: it never
                    // keeps a stack from being owned, whatever it lent.
                    let _ = stack.enter(async_contextlib::nullcontext(&p)).await?;
                    // The library's own owned managers.
                    *stack.enter(async_contextlib::locked_owned(m)).await? += 1;
                    stack.enter(async_contextlib::acquired_owned(sem, 1)).await?;
                    let group = stack.enter(async_contextlib::TaskGroup::new()).await?;
                    group.spawn(async move {
                        let _alive = c;
                        std::future::pending::<Result<(), BoxError>>().await
                    });
                    stack.enter(Hand::new("hand", p.clone()).exit(Act::Sleep(10))).await?;
                    std::future::pending::<()>().await;
                    Ok(())
                });
                r
            };
            cancel_then_drain(&probe, scope).await
        });
        drop(rt);
        let (at_cancel, after) = at_cancel;
        let s = settled();
        // Not finished in place: on one thread, nothing had exited when the
        // drop returned (the hand-written exit logs before it sleeps); on
        // several, a worker may have started the exits already.
        if single_thread {
            assert!(at_cancel.is_empty(), "{at_cancel:?}");
        }
        assert_eq!(after, ["hand:cancelled", "generated:cancelled"]);
        // The lock and the permit are back, the group's task is gone.
        assert_eq!(*mutex.try_lock().expect("unlocked"), 1);
        assert_eq!(semaphore.available_permits(), 1);
        assert_eq!(Arc::strong_count(&child), 1);
        // The stack, and its six entries.
        assert_eq!(
            (s.entered, s.exited, s.abandoned, s.lost),
            (7, 7, 0, 0),
            "{s:?}"
        );
        assert_accounted(s);
    }

    pub(super) fn case12_a_cancelled_stack_of_owned_entries_current_thread_exits_them_after_the_drop()
     {
        owned_stack_exits_after_the_drop(current_thread(), true);
    }

    pub(super) fn case12_a_cancelled_stack_of_owned_entries_multi_thread_exits_them_after_the_drop()
    {
        owned_stack_exits_after_the_drop(multi_thread(), false);
    }

    /// A stack of an owned entry, a borrowing one (or a callback) and an
    /// owned one, cancelled on a current-thread runtime: what had exited
    /// when the drop returned.
    fn cancelled_mixed_stack(with_callback: bool) -> (Vec<String>, Stats) {
        use async_contextlib::{BoxError, ExitStack};
        let probe = Probe::new();
        let at_cancel = current_thread().block_on(async {
            let p = probe.clone();
            let borrowed: &Probe = &probe;
            let scope = async move {
                let r: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
                    stack.enter(Hand::new("old-owned", p.clone())).await?;
                    if with_callback {
                        let q = p.clone();
                        stack.push_callback(async move {
                            q.log.lock().unwrap().push("callback:ran".to_owned());
                        });
                    } else {
                        stack.enter(Hand::new("borrowing", borrowed)).await?;
                    }
                    stack.enter(Hand::new("new-owned", p.clone())).await?;
                    std::future::pending::<()>().await;
                    Ok(())
                });
                r
            };
            let timed = tokio::time::timeout(Duration::from_millis(5), scope).await;
            assert!(timed.is_err(), "the scope is cancelled");
            probe.log()
        });
        (at_cancel, settled())
    }

    pub(super) fn case12_a_cancelled_stack_with_a_borrowing_entry_is_finished_in_place_in_order() {
        let (at_cancel, s) = cancelled_mixed_stack(false);
        assert_eq!(
            at_cancel,
            [
                "new-owned:cancelled",
                "borrowing:cancelled",
                "old-owned:cancelled"
            ]
        );
        assert_eq!((s.entered, s.exited, s.abandoned), (4, 4, 0), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case12_a_cancelled_stack_with_a_callback_is_finished_in_place_in_order() {
        let (at_cancel, s) = cancelled_mixed_stack(true);
        assert_eq!(
            at_cancel,
            ["new-owned:cancelled", "callback:ran", "old-owned:cancelled"]
        );
        assert_eq!((s.entered, s.exited, s.abandoned), (3, 3, 0), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case12_an_owned_stack_exits_before_the_owned_manager_around_it() {
        use async_contextlib::{BoxError, ExitStack};
        let probe = Probe::new();
        let p = probe.clone();
        let log = current_thread().block_on(async move {
            let scope = async move {
                let r: Result<(), BoxError> =
                    with_scope!(Hand::new("outer", p.clone()).exit(Act::Sleep(1)) as _o => {
                        with_scope!(ExitStack::new() as stack => {
                            stack.enter(sleepy_owned("a", p.clone())).await?;
                            stack.enter(Hand::new("b", p.clone()).exit(Act::Sleep(5))).await?;
                            std::future::pending::<()>().await;
                            Ok::<(), BoxError>(())
                        })
                    });
                r
            };
            let timed = tokio::time::timeout(Duration::from_millis(5), scope).await;
            assert!(timed.is_err(), "the scope is cancelled");
            async_contextlib::drain().await;
            probe.log()
        });
        assert_eq!(log, ["b:cancelled", "a:cancelled", "outer:cancelled"]);
        let s = settled();
        assert_eq!((s.entered, s.exited, s.abandoned), (4, 4, 0), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case12_a_standalone_owned_stack_in_an_aborted_task_exits_after_the_abort() {
        use async_contextlib::ExitStack;
        let probe = Probe::new();
        let p = probe.clone();
        let log = current_thread().block_on(async move {
            let (entered, ready) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(async move {
                let stack = ExitStack::new();
                stack.enter(sleepy_owned("a", p.clone())).await.unwrap();
                stack.enter(sleepy_owned("b", p.clone())).await.unwrap();
                let _ = entered.send(());
                std::future::pending::<()>().await;
            });
            ready.await.unwrap();
            task.abort();
            let _ = task.await;
            async_contextlib::drain().await;
            probe.log()
        });
        assert_eq!(log, ["b:cancelled", "a:cancelled"]);
        let s = settled();
        assert_eq!((s.entered, s.exited, s.abandoned), (2, 2, 0), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case12_an_owned_stack_dropped_by_a_panicking_task_exits_with_panicked() {
        use async_contextlib::ExitStack;
        let probe = Probe::new();
        let p = probe.clone();
        current_thread().block_on(async move {
            let task = tokio::spawn(async move {
                let stack = ExitStack::new();
                stack.enter(sleepy_owned("older", p.clone())).await.unwrap();
                stack
                    .enter(Hand::new("newer", p.clone()).exit(Act::Sleep(5)))
                    .await
                    .unwrap();
                panic!("the task fails with the stack alive");
            });
            assert!(task.await.unwrap_err().is_panic());
            async_contextlib::drain().await;
        });
        assert_eq!(probe.log(), ["newer:panicked", "older:panicked"]);
        let s = settled();
        assert_eq!((s.entered, s.exited, s.abandoned), (2, 2, 0), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case12_drain_timeout_names_the_entry_a_detached_stack_waits_on() {
        use async_contextlib::{BoxError, ExitStack};
        let probe = Probe::new();
        let p = probe.clone();
        let rt = current_thread();
        let names = rt.block_on(async move {
            let scope = async move {
                let r: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
                    stack.enter(strict()).await?;
                    stack.enter(Hand::new("newer", p)).await?;
                    std::future::pending::<()>().await;
                    Ok(())
                });
                r
            };
            let timed = tokio::time::timeout(Duration::from_millis(5), scope).await;
            assert!(timed.is_err(), "the scope is cancelled");
            let still = drain_timeout(Duration::from_millis(100))
                .await
                .expect_err("strict's exit never ends");
            still.names().to_vec()
        });
        // The newer entry exited; the stack waits on `strict`, by name.
        assert_eq!(probe.log(), ["newer:cancelled"]);
        assert!(names.contains(&"strict"), "{names:?}");
        drop(rt);
        let s = settled();
        assert_eq!((s.exited, s.lost), (2, 1), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case12_a_detached_stack_whose_runtime_shuts_down_is_counted() {
        use async_contextlib::{BoxError, ExitStack};
        let (_guard, events) = driver_util::capture();
        let probe = Probe::new();
        let p = probe.clone();
        let rt = current_thread();
        rt.block_on(async move {
            let scope = async move {
                let r: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
                    stack.enter(Hand::new("a", p.clone()).exit(Act::Forever)).await?;
                    stack.enter(Hand::new("b", p.clone()).exit(Act::Forever)).await?;
                    std::future::pending::<()>().await;
                    Ok(())
                });
                r
            };
            let timed = tokio::time::timeout(Duration::from_millis(5), scope).await;
            assert!(timed.is_err(), "the scope is cancelled");
        });
        // The stack's job is queued on this runtime, which now shuts down.
        drop(rt);
        let s = settled();
        // Each entry is counted once: exited, abandoned or lost.
        assert_eq!(s.entered, 3, "{s:?}");
        assert_accounted(s);
        assert!(
            events.find(tracing::Level::ERROR, &["b"]).is_some()
                || events.find(tracing::Level::WARN, &["b"]).is_some(),
            "the unfinished exit is reported: {:?}",
            events.all()
        );
    }

    // Case 13 (a second attack pass): panics while a step's code is
    // dropped outside the happy path — a stack enter that panics in its
    // poll and again in its drop, code cut by a deadline or token whose
    // drop panics, an error returned just before such a panic. Caught,
    // resumed once, reported; never an abort, never a scope treated as
    // cancelled by its caller.

    /// Panics when polled, and again when dropped.
    struct PanicsTwice;

    impl Future for PanicsTwice {
        type Output = Result<&'static str, Infallible>;
        fn poll(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            panic!("enter panicked in its poll")
        }
    }

    impl Drop for PanicsTwice {
        fn drop(&mut self) {
            panic!("enter panicked again as it was dropped");
        }
    }

    struct DoubleBomb;

    impl AsyncContextManager for DoubleBomb {
        type Value<'a> = &'static str;
        type Error = Infallible;
        fn enter(&mut self) -> impl Future<Output = Result<&'static str, Infallible>> {
            PanicsTwice
        }
        async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> {
            Ok(())
        }
    }

    async_contextlib::send_manager!(DoubleBomb);

    pub(super) fn case13_a_stack_enter_that_panics_in_poll_and_drop_does_not_abort() {
        let (_guard, events) = driver_util::capture();
        let probe = Probe::new();
        let p = probe.clone();
        let result = current_thread().block_on(
            AssertUnwindSafe(async move {
                use async_contextlib::{BoxError, ExitStack};
                let r: Result<i32, BoxError> =
                    with_scope!(Hand::new("outer", p.clone()), ExitStack::new() as stack => {
                        stack.enter(DoubleBomb).await?;
                        Ok(1)
                    });
                r
            })
            .catch_unwind(),
        );
        let payload = result.expect_err("the enter's panic resumes");
        assert_eq!(panic_message(&*payload), "enter panicked in its poll");
        assert_eq!(probe.log(), ["outer:panicked"]);
        assert!(
            events
                .find(tracing::Level::ERROR, &["panicked again"])
                .is_some(),
            "{:?}",
            events.all()
        );
        let s = settled();
        assert_eq!((s.entered, s.exited), (2, 2), "{s:?}");
        assert_accounted(s);
    }

    /// Panics as it is dropped (a local of the block).
    struct PanicsWhenCut;

    impl Drop for PanicsWhenCut {
        fn drop(&mut self) {
            panic!("the block's local panicked as it was dropped");
        }
    }

    /// `with_scope!(outer, BOUND, inner)` whose block, cut by `BOUND`,
    /// holds a local whose drop panics: the exits see `Panicked`, run to
    /// their end (the scope was not cancelled by its caller), and the
    /// panic resumes once.
    fn cut_block_panics(rt: tokio::runtime::Runtime, bound: u8) {
        let probe = Probe::new();
        let p = probe.clone();
        let result = rt.block_on(
            AssertUnwindSafe(async move {
                let p = &*p;
                let block = || async {
                    let _local = PanicsWhenCut;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                };
                match bound {
                    0 => {
                        let r: Result<i32, async_contextlib::Elapsed> = with_scope!(
                            Hand::new("outer", p).exit(Act::Sleep(1)),
                            async_contextlib::timeout(Duration::from_millis(20)),
                            Hand::new("inner", p).exit(Act::Sleep(1)) => { block().await; Ok(1) });
                        r.map_err(|e| e.to_string())
                    }
                    1 => {
                        let r: Option<i32> = with_scope!(
                            Hand::new("outer", p).exit(Act::Sleep(1)),
                            async_contextlib::move_on_after(Duration::from_millis(20)),
                            Hand::new("inner", p).exit(Act::Sleep(1)) => { block().await; Some(1) });
                        r.ok_or_else(|| "moved on".to_owned())
                    }
                    _ => {
                        let token = tokio_util::sync::CancellationToken::new();
                        let t = token.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            t.cancel();
                        });
                        let r: Result<i32, async_contextlib::TokenCancelled> = with_scope!(
                            Hand::new("outer", p).exit(Act::Sleep(1)),
                            async_contextlib::cancelled_by(token),
                            Hand::new("inner", p).exit(Act::Sleep(1)) => { block().await; Ok(1) });
                        r.map_err(|e| e.to_string())
                    }
                }
            })
            .catch_unwind(),
        );
        let payload = result.expect_err("the drop's panic resumes");
        assert_eq!(
            panic_message(&*payload),
            "the block's local panicked as it was dropped"
        );
        assert_eq!(probe.log(), ["inner:panicked", "outer:panicked"]);
        assert_eq!(probe.exited(), 2, "both exits ran to their end");
        drop(rt);
        let s = settled();
        assert_eq!((s.entered, s.exited, s.abandoned), (3, 3, 0), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case13_a_block_cut_by_a_timeout_that_panics_as_it_is_dropped_current_thread() {
        cut_block_panics(current_thread(), 0);
    }
    pub(super) fn case13_a_block_cut_by_a_timeout_that_panics_as_it_is_dropped_multi_thread() {
        cut_block_panics(multi_thread(), 0);
    }
    pub(super) fn case13_a_block_moved_on_from_that_panics_as_it_is_dropped() {
        cut_block_panics(current_thread(), 1);
    }
    pub(super) fn case13_a_block_cut_by_a_token_that_panics_as_it_is_dropped() {
        cut_block_panics(current_thread(), 2);
    }

    /// Never ready; panics as it is dropped.
    struct PendingPanicsWhenDropped;

    impl Future for PendingPanicsWhenDropped {
        type Output = Result<&'static str, Infallible>;
        fn poll(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            std::task::Poll::Pending
        }
    }

    impl Drop for PendingPanicsWhenDropped {
        fn drop(&mut self) {
            panic!("the cut enter panicked as it was dropped");
        }
    }

    struct SlowEnterBomb;

    impl AsyncContextManager for SlowEnterBomb {
        type Value<'a> = &'static str;
        type Error = Infallible;
        fn enter(&mut self) -> impl Future<Output = Result<&'static str, Infallible>> {
            PendingPanicsWhenDropped
        }
        async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> {
            Ok(())
        }
    }

    pub(super) fn case13_an_enter_cut_by_a_timeout_that_panics_as_it_is_dropped() {
        let probe = Probe::new();
        let p = probe.clone();
        let result = current_thread().block_on(
            AssertUnwindSafe(async move {
                let r: Result<i32, async_contextlib::Elapsed> = with_scope!(
                    Hand::new("outer", &*p),
                    async_contextlib::timeout(Duration::from_millis(20)),
                    SlowEnterBomb => { Ok(1) });
                r
            })
            .catch_unwind(),
        );
        let payload = result.expect_err("the drop's panic resumes");
        assert_eq!(
            panic_message(&*payload),
            "the cut enter panicked as it was dropped"
        );
        assert_eq!(probe.log(), ["outer:panicked"]);
        let s = settled();
        // `outer` and the timeout entered; the bomb did not, and its
        // panic counts as its failure.
        assert_eq!((s.entered, s.exited, s.exit_failures), (2, 2, 1), "{s:?}");
        assert_accounted(s);
    }

    /// The caller drops a scope (a timeout around it) while a manager's
    /// enter is pending, and that enter future panics as it is dropped:
    /// the drop does not panic (reported instead), the managers entered
    /// before it exit once with `Cancelled`.
    fn cancelled_enter_panics(rt: tokio::runtime::Runtime) {
        let (_guard, events) = driver_util::capture();
        let probe = Probe::new();
        let p = probe.clone();
        let dropped = rt.block_on(async move {
            let scope = async move {
                let r: Result<i32, Infallible> =
                    with_scope!(Hand::new("outer", p.clone()), SlowEnterBomb => { Ok(1) });
                r
            };
            let dropped = AssertUnwindSafe(tokio::time::timeout(Duration::from_millis(5), scope))
                .catch_unwind()
                .await;
            // The owned `outer`'s exit was handed to this runtime's driver.
            async_contextlib::drain().await;
            dropped
        });
        let timed_out = dropped.expect("no panic escapes the scope's drop");
        assert!(timed_out.is_err(), "the timeout cut the scope");
        assert!(
            events
                .find(
                    tracing::Level::ERROR,
                    &["panicked as its scope was dropped"]
                )
                .is_some(),
            "{:?}",
            events.all()
        );
        let s = settled();
        assert_eq!(probe.log(), ["outer:cancelled"]);
        assert_eq!((s.entered, s.exited), (1, 1), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case13_an_enter_that_panics_as_its_cancelled_scope_drops_it_current_thread() {
        cancelled_enter_panics(current_thread());
    }
    pub(super) fn case13_an_enter_that_panics_as_its_cancelled_scope_drops_it_multi_thread() {
        cancelled_enter_panics(multi_thread());
    }

    /// A stack entry whose enter or exit returns an error and then panics
    /// as its future is dropped: the panic resumes, the error is reported.
    fn stack_error_then_panic(in_enter: bool) {
        let (_guard, events) = driver_util::capture();
        let probe = Probe::new();
        let p = probe.clone();
        let result = current_thread().block_on(
            AssertUnwindSafe(async move {
                use async_contextlib::{BoxError, ExitStack};
                let mut bomb = if in_enter {
                    Bomb::enter(p.clone())
                } else {
                    Bomb::exit(p.clone())
                };
                bomb.fails = in_enter;
                bomb.exit_fails = !in_enter;
                let r: Result<i32, BoxError> = with_scope!(ExitStack::new() as stack => {
                    stack.enter(bomb).await?;
                    Ok(1)
                });
                r
            })
            .catch_unwind(),
        );
        let payload = result.expect_err("the panic resumes");
        let what = if in_enter { "enter" } else { "exit" };
        assert_eq!(
            panic_message(&*payload),
            format!("bomb: {what} panicked as it was dropped")
        );
        // The error is reported, an exit's too: a stack runs an entry's
        // exit through `SendManager::exit_owned` (here `send_manager!`'s),
        // which drops the finished exit future under a catch.
        assert!(
            events
                .find(
                    tracing::Level::ERROR,
                    &[
                        &format!("bomb: {what} failed"),
                        "panicked as it was dropped"
                    ]
                )
                .is_some(),
            "the error was lost: {:?}",
            events.all()
        );
        let s = settled();
        assert_accounted(s);
    }

    pub(super) fn case13_a_stack_exit_error_then_a_panic_as_it_is_dropped_resumes_once() {
        stack_error_then_panic(false);
    }
    pub(super) fn case13_a_stack_enter_error_then_a_panic_as_it_is_dropped_is_reported() {
        stack_error_then_panic(true);
    }

    /// Lends `&mut` (as `box_manager!` needs); its exit fails, then
    /// panics as its future is dropped.
    struct LendingBomb(u32);

    impl AsyncContextManager for LendingBomb {
        type Value<'a> = &'a mut u32;
        type Error = std::io::Error;
        async fn enter(&mut self) -> Result<&mut u32, std::io::Error> {
            Ok(&mut self.0)
        }
        fn exit(&mut self, _: Outcome) -> impl Future<Output = Result<(), std::io::Error>> {
            PanicsWhenDropped {
                out: Some(Err(std::io::Error::other("boxed bomb: exit failed"))),
                armed: true,
                what: "boxed bomb: exit",
            }
        }
        fn name(&self) -> &'static str {
            "boxed-bomb"
        }
    }

    pub(super) fn case13_a_boxed_stack_exit_error_then_a_panic_as_it_is_dropped_is_reported() {
        let (_guard, events) = driver_util::capture();
        let result = current_thread().block_on(
            AssertUnwindSafe(async move {
                use async_contextlib::{BoxError, BoxManager, ExitStack};
                let r: Result<u32, BoxError> = with_scope!(ExitStack::new() as stack => {
                    let boxed: BoxManager<u32, std::io::Error> =
                        async_contextlib::box_manager!(LendingBomb(7));
                    let v = stack.enter(boxed).await?;
                    Ok(*v)
                });
                r
            })
            .catch_unwind(),
        );
        let payload = result.expect_err("the panic resumes");
        assert_eq!(
            panic_message(&*payload),
            "boxed bomb: exit panicked as it was dropped"
        );
        // The boxed error has no `Display` in the box: it is named by type.
        let reported = events.find(
            tracing::Level::ERROR,
            &[
                "boxed-bomb",
                "std::io::error::Error",
                "panicked as it was dropped",
            ],
        );
        assert!(reported.is_some(), "the error was lost: {:?}", events.all());
        assert_accounted(settled());
    }

    pub(super) fn case11_a_stack_exit_that_panics_as_it_is_dropped_is_counted_once() {
        let probe = Probe::new();
        let p = probe.clone();
        let result = current_thread().block_on(
            AssertUnwindSafe(async move {
                use async_contextlib::ExitStack;
                let r: Result<i32, async_contextlib::BoxError> =
                    with_scope!(ExitStack::new() as stack => {
                        stack.enter(Hand::new("older", p.clone())).await?;
                        stack.enter(Bomb::exit(p.clone())).await?;
                        Ok(1)
                    });
                r
            })
            .catch_unwind(),
        );
        let payload = result.expect_err("the exit's panic resumes");
        assert_eq!(
            panic_message(&*payload),
            "bomb: exit panicked as it was dropped"
        );
        // Newest first; the older entry still exits, and sees the panic.
        assert_eq!(probe.log(), ["bomb:success", "older:panicked"]);
        let s = settled();
        assert_eq!((s.entered, s.exited), (3, 3), "{s:?}");
        assert!(s.exit_failures >= 1, "{s:?}");
        assert_accounted(s);
    }

    // Case 14 (a third attack pass, on the library's own managers): a
    // shielded future that panics where it is awaited, a blocking exit at
    // runtime shutdown, a panic in a later manager's expression, a wrapper
    // that must keep what it wraps.

    /// Panics on its first poll, is ready on any later one; counts polls.
    struct PanicsOnFirstPoll(Arc<AtomicUsize>);

    impl Future for PanicsOnFirstPoll {
        type Output = ();
        fn poll(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<()> {
            if self.0.fetch_add(1, SeqCst) == 0 {
                panic!("shielded work panicked");
            }
            std::task::Poll::Ready(())
        }
    }

    pub(super) fn case14_a_shielded_future_that_panicked_in_place_is_not_polled_again() {
        let polls = Arc::new(AtomicUsize::new(0));
        let p = polls.clone();
        current_thread().block_on(async move {
            let joined =
                tokio::spawn(async move { async_contextlib::shield(PanicsOnFirstPoll(p)).await })
                    .await;
            assert!(joined.unwrap_err().is_panic(), "the panic reaches the task");
        });
        let s = settled();
        // Not handed to the driver as unfinished work, not polled again.
        assert_eq!(polls.load(SeqCst), 1);
        assert_eq!((s.exit_failures, s.pending), (0, 0), "{s:?}");
    }

    /// Waits (polling, so that a current-thread runtime runs meanwhile)
    /// until `rx` receives.
    async fn received(rx: &std::sync::mpsc::Receiver<()>) {
        while rx.try_recv().is_err() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Spawns on `rt` a task whose `from_sync` scope (with `exit`) waits
    /// forever in its block, and drives `rt` until the block runs.
    fn from_sync_scope_in_a_task<X>(rt: &tokio::runtime::Runtime, exit: X)
    where
        X: FnOnce((), Outcome) -> Result<(), std::io::Error> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let manager = from_sync(|| Ok::<_, std::io::Error>(()), exit);
            let _: Result<(), std::io::Error> = with_scope!(manager => {
                tx.send(()).unwrap();
                std::future::pending::<()>().await;
                Ok(())
            });
        });
        rt.block_on(received(&rx));
    }

    /// A `from_sync` scope in a task of `rt`, which is dropped mid-body.
    fn from_sync_at_shutdown(rt: tokio::runtime::Runtime) {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        from_sync_scope_in_a_task(&rt, move |(), outcome: Outcome| {
            assert!(matches!(outcome, Outcome::Cancelled), "{outcome}");
            r.fetch_add(1, SeqCst);
            Ok(())
        });
        drop(rt);
        let s = settled();
        // It ran once, and is counted as what happened: exited, not lost,
        // not failed.
        assert_eq!(ran.load(SeqCst), 1);
        assert_eq!(
            (s.entered, s.exited, s.exit_failures, s.lost),
            (1, 1, 0, 0),
            "{s:?}"
        );
        assert_accounted(s);
    }

    pub(super) fn case14_a_from_sync_exit_at_runtime_shutdown_current_thread_runs_once() {
        from_sync_at_shutdown(current_thread());
    }

    pub(super) fn case14_a_from_sync_exit_at_runtime_shutdown_multi_thread_runs_once() {
        from_sync_at_shutdown(multi_thread());
    }

    /// A `from_sync` scope in a task of `rt`, cancelled: its exit closure
    /// (which takes `exit_takes`) is running on a blocking thread when the
    /// runtime shuts down (`background`: without waiting). Returns how long
    /// the shutdown took.
    fn from_sync_running_at_shutdown(
        rt: tokio::runtime::Runtime,
        exit_takes: Duration,
        background: bool,
    ) -> (Duration, Arc<AtomicUsize>) {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let started_tx = Mutex::new(started_tx);
        rt.block_on(async move {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let manager = from_sync(
                    || Ok::<_, std::io::Error>(()),
                    move |(), _: Outcome| {
                        started_tx.lock().unwrap().send(()).unwrap();
                        std::thread::sleep(exit_takes);
                        r.fetch_add(1, SeqCst);
                        Ok(())
                    },
                );
                let _: Result<(), std::io::Error> = with_scope!(manager => {
                    let _ = tx.send(());
                    std::future::pending::<()>().await;
                    Ok(())
                });
            });
            rx.await.unwrap();
            // Cancelled: the exit goes to the driver, a task of this runtime.
            task.abort();
            received(&started_rx).await;
        });
        let started = Instant::now();
        if background {
            rt.shutdown_background();
        } else {
            drop(rt);
        }
        (started.elapsed(), ran)
    }

    pub(super) fn case14_a_from_sync_exit_running_at_shutdown_is_counted_exited() {
        let (_, ran) =
            from_sync_running_at_shutdown(current_thread(), Duration::from_millis(200), false);
        let s = settled();
        // It ran to its end: exited, not lost.
        assert_eq!(ran.load(SeqCst), 1);
        assert_eq!((s.entered, s.exited, s.lost), (1, 1, 0), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case14_a_background_shutdown_does_not_wait_for_a_from_sync_exit() {
        for rt in [current_thread(), multi_thread()] {
            let (took, _) = from_sync_running_at_shutdown(rt, Duration::from_secs(2), true);
            assert!(took < Duration::from_secs(1), "the shutdown took {took:?}");
        }
        let s = settled();
        // Both ran on their blocking threads, and are counted when done.
        assert_eq!((s.entered, s.exited, s.lost), (2, 2, 0), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case14_a_from_sync_exit_first_polled_at_shutdown_does_not_block_it() {
        // The exit is first polled in its job's last chance, as the
        // runtime is dropped: on the driver's own blocking pool, not here.
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let rt = current_thread();
        from_sync_scope_in_a_task(&rt, move |(), _: Outcome| {
            std::thread::sleep(Duration::from_secs(2));
            r.fetch_add(1, SeqCst);
            Ok(())
        });
        let started = Instant::now();
        rt.shutdown_background();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "the shutdown took {took:?}");
        let s = settled();
        assert_eq!(ran.load(SeqCst), 1);
        assert_eq!((s.entered, s.exited, s.lost), (1, 1, 0), "{s:?}");
        assert_accounted(s);
    }

    type SyncExitFn = Box<dyn FnOnce((), Outcome) -> Result<(), std::io::Error> + Send>;
    type SyncEnterFn = fn() -> Result<(), std::io::Error>;
    type Sync = async_contextlib::FromSync<(), SyncEnterFn, SyncExitFn>;

    /// A hand-written manager around two `from_sync` ones, exiting them
    /// one after the other: its exit is more than one blocking exit.
    struct Pair(Sync, Sync);

    impl AsyncContextManager for Pair {
        type Value<'a> = ();
        type Error = std::io::Error;
        async fn enter(&mut self) -> Result<(), std::io::Error> {
            self.0.enter().await?;
            self.1.enter().await?;
            Ok(())
        }
        async fn exit(&mut self, outcome: Outcome) -> Result<(), std::io::Error> {
            self.0.exit(outcome.clone()).await?;
            self.1.exit(outcome).await
        }
        fn name(&self) -> &'static str {
            "pair"
        }
    }

    impl OwnedManager for Pair {}

    pub(super) fn case14_a_manager_cut_between_two_blocking_exits_at_shutdown_is_lost() {
        let ran = Arc::new(AtomicUsize::new(0));
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let started_tx = Arc::new(Mutex::new(started_tx));
        let closure = |ran: Arc<AtomicUsize>, tx: Arc<Mutex<std::sync::mpsc::Sender<()>>>| {
            Box::new(move |(), _: Outcome| {
                tx.lock().unwrap().send(()).unwrap();
                std::thread::sleep(Duration::from_millis(200));
                ran.fetch_add(1, SeqCst);
                Ok(())
            }) as SyncExitFn
        };
        let ok: SyncEnterFn = || Ok(());
        let pair = Pair(
            from_sync(ok, closure(ran.clone(), started_tx.clone())),
            from_sync(ok, closure(ran.clone(), started_tx)),
        );
        let rt = current_thread();
        rt.block_on(async move {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let _: Result<(), std::io::Error> = with_scope!(pair => {
                    let _ = tx.send(());
                    std::future::pending::<()>().await;
                    Ok(())
                });
            });
            rx.await.unwrap();
            task.abort();
            // Until the first blocking exit runs.
            received(&started_rx).await;
        });
        drop(rt);
        let s = settled();
        // The pair's exit did not reach its end (its second blocking exit
        // never started): it is lost, not taken for exited.
        assert_eq!(ran.load(SeqCst), 1);
        assert_eq!((s.entered, s.exited, s.lost), (1, 0, 1), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case14_a_stack_finishing_a_from_sync_exit_in_place_at_shutdown_does_not_block_it()
    {
        use async_contextlib::{BoxError, ExitStack};
        // Counted per manager: the scope's diagnostics gate is on (the
        // stack's in-place finish then reaches the exit's first poll).
        async_contextlib::diagnostics::set_per_manager_stats(true);
        let (tx, rx) = std::sync::mpsc::channel();
        let rt = current_thread();
        rt.spawn(async move {
            let manager = from_sync(
                || Ok::<_, std::io::Error>(()),
                |(), _: Outcome| {
                    std::thread::sleep(Duration::from_secs(2));
                    Ok(())
                },
            );
            let _: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
                stack.enter(manager).await?;
                // A callback: the stack is finished in place.
                stack.push_callback(async {});
                tx.send(()).unwrap();
                std::future::pending::<()>().await;
                Ok(())
            });
        });
        rt.block_on(received(&rx));
        let started = Instant::now();
        drop(rt);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "the drop took {took:?}");
    }

    /// A `from_sync` enter finishes while nobody drives its runtime, which
    /// then shuts down (`background`: without waiting) before the scope
    /// picks the value up.
    fn from_sync_entered_at_shutdown(background: bool) {
        let entered = Arc::new(AtomicUsize::new(0));
        let exited = Arc::new(AtomicUsize::new(0));
        let (e, x) = (entered.clone(), exited.clone());
        let rt = current_thread();
        rt.spawn(async move {
            let manager = from_sync(
                move || {
                    e.fetch_add(1, SeqCst);
                    Ok::<_, std::io::Error>(())
                },
                move |(), _: Outcome| {
                    x.fetch_add(1, SeqCst);
                    Ok(())
                },
            );
            let _: Result<(), std::io::Error> = with_scope!(manager => {
                std::future::pending::<()>().await;
                Ok(())
            });
        });
        // One tick: the task starts the blocking enter.
        rt.block_on(tokio::task::yield_now());
        while entered.load(SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
        if background {
            rt.shutdown_background();
        } else {
            drop(rt);
        }
        let s = settled();
        // Acquired, so released once (on the driver's own runtime), and
        // counted so.
        assert_eq!(exited.load(SeqCst), 1, "{s:?}");
        assert_eq!((s.entered, s.exited, s.lost), (1, 1, 0), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case14_a_from_sync_enter_done_at_shutdown_is_released_and_counted() {
        from_sync_entered_at_shutdown(false);
    }

    pub(super) fn case14_a_from_sync_enter_done_at_background_shutdown_is_released_and_counted() {
        from_sync_entered_at_shutdown(true);
    }

    /// 200 `from_sync` scopes (half of them in `enter_timeout`) entering,
    /// exiting, some aborted, some exits panicking, on `rt`, which is then
    /// dropped mid-flight. Returns how many exit closures ran.
    fn many_from_sync_scopes_at_shutdown(rt: tokio::runtime::Runtime) -> usize {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        rt.block_on(async move {
            for i in 0..200_u64 {
                let r = r.clone();
                let manager = from_sync(
                    || Ok::<_, std::io::Error>(()),
                    move |(), _: Outcome| {
                        std::thread::sleep(Duration::from_millis(i % 7 * 5));
                        r.fetch_add(1, SeqCst);
                        assert!(i % 5 != 0, "exit {i} panics");
                        Ok(())
                    },
                );
                let task = tokio::spawn(async move {
                    let pause = Duration::from_millis(i % 3);
                    if i % 2 == 0 {
                        let limit = Duration::from_secs(5);
                        let _: Result<(), async_contextlib::EnterError<std::io::Error>> =
                            with_scope!(async_contextlib::enter_timeout(manager, limit) => {
                                tokio::time::sleep(pause).await;
                                Ok(())
                            });
                    } else {
                        let _: Result<(), std::io::Error> = with_scope!(manager => {
                            tokio::time::sleep(pause).await;
                            Ok(())
                        });
                    }
                });
                if i % 3 == 0 {
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        task.abort();
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        });
        drop(rt);
        let _ = futures::executor::block_on(drain_timeout(Duration::from_secs(20)));
        ran.load(SeqCst)
    }

    pub(super) fn case14_many_from_sync_scopes_at_shutdown_balance() {
        // Dozens of panics: printing each one's backtrace would take longer
        // than the scenario.
        std::panic::set_hook(Box::new(|_| {}));
        let ran = many_from_sync_scopes_at_shutdown(multi_thread())
            + many_from_sync_scopes_at_shutdown(current_thread());
        let s = settled();
        // Never counted exited without running; every entered manager
        // exited, abandoned or lost.
        assert!(s.exited as usize <= ran, "{s:?}, {ran} ran");
        assert_accounted(s);
    }

    fn panicking_manager(_: &'static str) -> Hand<Arc<Probe>> {
        panic!("building the second manager panicked")
    }

    pub(super) fn case14_a_panicking_manager_expression_exits_the_entered_with_panicked() {
        let probe = Probe::new();
        current_thread().block_on(async {
            let (p, borrowed): (_, &Probe) = (probe.clone(), &probe);
            let caught = AssertUnwindSafe(async move {
                let _: Result<(), Infallible> = with_scope!(
                    Hand::new("owned", p) as first,
                    Hand::new("borrowing", borrowed),
                    panicking_manager(first) => { Ok(()) }
                );
            })
            .catch_unwind()
            .await;
            let payload = caught.expect_err("the panic resumes");
            assert_eq!(
                panic_message(&*payload),
                "building the second manager panicked"
            );
            async_contextlib::drain().await;
        });
        // Each entered manager exits once, and sees the panic.
        assert_eq!(probe.log(), ["borrowing:panicked", "owned:panicked"]);
        let s = settled();
        assert_eq!((s.entered, s.exited), (2, 2), "{s:?}");
        assert_accounted(s);
    }

    pub(super) fn case14_enter_timeout_keeps_the_token_of_what_it_wraps() {
        use async_contextlib::{EnterError, TokenCancelled, cancelled_by, enter_timeout};
        let token = tokio_util::sync::CancellationToken::new();
        token.cancel();
        let r = current_thread().block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                let r: Result<(), EnterError<TokenCancelled>> = with_scope!(
                    enter_timeout(cancelled_by(token), Duration::from_secs(1)) => {
                        std::future::pending::<()>().await;
                        Ok(())
                    }
                );
                r
            })
            .await
        });
        let r = r.expect("the cancelled token cuts the block");
        assert_eq!(r, Err(EnterError::Manager(TokenCancelled)));
    }

    /// Bounds the block it guards (or, `.0`, panics when asked whether it
    /// does), and panics when dropped.
    struct BoundingBomb(bool);

    impl AsyncContextManager for BoundingBomb {
        type Value<'a> = ();
        type Error = std::io::Error;
        async fn enter(&mut self) -> Result<(), std::io::Error> {
            Ok(())
        }
        async fn exit(&mut self, _: Outcome) -> Result<(), std::io::Error> {
            Ok(())
        }
        fn deadline(&mut self) -> Option<async_contextlib::Deadline<std::io::Error>> {
            assert!(!self.0, "bounding bomb: deadline panicked");
            Some(async_contextlib::Deadline {
                at: tokio::time::Instant::now() + Duration::from_secs(60),
                error: std::io::Error::other("late"),
            })
        }
    }

    impl Drop for BoundingBomb {
        fn drop(&mut self) {
            panic!("bounding bomb: dropped");
        }
    }

    async_contextlib::send_manager!(BoundingBomb);

    /// Enters `bomb` into a stack after an older entry: the panic that
    /// resumes, once the older entry exited with `Panicked`.
    fn refused_bomb(bomb: BoundingBomb) -> String {
        use async_contextlib::{BoxError, ExitStack};
        let probe = Probe::new();
        let p = probe.clone();
        let caught = current_thread().block_on(
            AssertUnwindSafe(async move {
                let r: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
                    stack.enter(Hand::new("older", p)).await?;
                    stack.enter(bomb).await?;
                    Ok(())
                });
                r
            })
            .catch_unwind(),
        );
        let payload = caught.expect_err("the panic resumes");
        assert_eq!(probe.log(), ["older:panicked"]);
        let s = settled();
        assert_eq!((s.entered, s.exited), (2, 2), "{s:?}");
        assert_accounted(s);
        panic_message(&*payload)
    }

    pub(super) fn case14_a_refused_stack_entry_whose_drop_panics_does_not_abort() {
        let message = refused_bomb(BoundingBomb(false));
        assert!(
            message.contains("an ExitStack entry guards no block"),
            "{message}"
        );
    }

    pub(super) fn case14_a_stack_entry_whose_deadline_and_drop_panic_does_not_abort() {
        let message = refused_bomb(BoundingBomb(true));
        assert_eq!(message, "bounding bomb: deadline panicked");
    }

    pub(super) fn case14_enter_timeout_of_an_owned_stack_hands_it_over() {
        use async_contextlib::{BoxError, EnterError, ExitStack, enter_timeout};
        let probe = Probe::new();
        let p = probe.clone();
        let at_cancel = current_thread().block_on(async move {
            let scope = async move {
                let r: Result<(), EnterError<BoxError>> = with_scope!(
                    enter_timeout(ExitStack::new(), Duration::from_secs(1)) as stack => {
                        stack
                            .enter(sleepy_owned("sleepy", p.clone()))
                            .await
                            .map_err(|e| EnterError::Manager(BoxError::from(e)))?;
                        std::future::pending::<()>().await;
                        Ok(())
                    }
                );
                r
            };
            cancel_then_drain(&probe, scope).await
        });
        // The wrapped stack is dropped as a stack is (not exited in place on
        // this one thread, where its entry's timer could not run).
        assert_eq!(
            at_cancel,
            (Vec::<String>::new(), vec!["sleepy:cancelled".to_owned()])
        );
        let s = settled();
        assert_eq!((s.entered, s.exited, s.abandoned), (2, 2, 0), "{s:?}");
        assert_accounted(s);
    }
}

#[test]
fn case9_the_abandoned_exit_line_names_the_manager_and_the_counter() {
    let out = isolated(
        "case9_an_abandoned_exit_is_written_to_stderr_without_a_subscriber",
        SHORT,
    );
    assert!(
        out.contains("async-contextlib: the exit of `waits-on-its-runtime` was abandoned")
            && out.contains("stats().abandoned"),
        "{out}"
    );
}

// ------------------------------------------------------------ case 10: exit stacks

/// A manager whose exit fails with `io::Error(message)`.
struct Fails(&'static str);

impl AsyncContextManager for Fails {
    type Value<'a> = ();
    type Error = std::io::Error;

    fn enter(&mut self) -> impl Future<Output = Result<(), std::io::Error>> {
        std::future::ready(Ok(()))
    }

    fn exit(&mut self, _: Outcome) -> impl Future<Output = Result<(), std::io::Error>> {
        std::future::ready(Err(std::io::Error::other(self.0)))
    }

    fn name(&self) -> &'static str {
        self.0
    }
}

impl OwnedManager for Fails {}
async_contextlib::send_manager!(Fails);

/// Panics when dropped before its exit finished.
struct MustRelease {
    released: bool,
}

impl Drop for MustRelease {
    fn drop(&mut self) {
        assert!(self.released, "MustRelease dropped without release");
    }
}

/// Its exit never finishes: cut short, it is dropped unreleased.
struct Strict(MustRelease);

impl AsyncContextManager for Strict {
    type Value<'a> = ();
    type Error = Infallible;

    fn enter(&mut self) -> impl Future<Output = Result<(), Infallible>> {
        std::future::ready(Ok(()))
    }

    async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> {
        std::future::pending::<()>().await;
        self.0.released = true;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "strict"
    }
}

impl OwnedManager for Strict {}
async_contextlib::send_manager!(Strict);

fn strict() -> Strict {
    Strict(MustRelease { released: false })
}

/// Its exit calls `drain()`; `P` decides owned (detached) or borrowing
/// (finished in place).
struct Drains<P>(P);

impl<P: std::ops::Deref<Target = Probe>> AsyncContextManager for Drains<P> {
    type Value<'a>
        = ()
    where
        Self: 'a;
    type Error = Infallible;

    fn enter(&mut self) -> impl Future<Output = Result<(), Infallible>> {
        std::future::ready(Ok(()))
    }

    async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> {
        async_contextlib::drain().await;
        self.0.exited.fetch_add(1, SeqCst);
        Ok(())
    }

    fn name(&self) -> &'static str {
        "drains"
    }
}

impl OwnedManager for Drains<Arc<Probe>> {}

#[test]
fn case10_the_library_prints_no_panic_of_its_own_at_thread_exit() {
    let out = isolated(
        "case10_a_thread_local_stack_without_a_runtime_prints_no_library_panic",
        SHORT,
    );
    // The timer exit's own panic (tokio's context is gone) is printed by
    // the panic hook like any exit's; none from inside the library.
    let panics: Vec<_> = out.lines().filter(|l| l.contains("panicked at")).collect();
    assert_eq!(panics.len(), 1, "{out}");
    assert!(panics[0].contains("tests/faults.rs"), "{out}");
}

#[test]
fn case12_an_owned_thread_local_stack_prints_no_panic_at_thread_exit() {
    let out = isolated(
        "case12_a_thread_local_owned_stack_is_handed_to_the_driver_at_thread_exit",
        SHORT,
    );
    // Handed to the driver during thread-local teardown: no panic at all
    // (the timer exit runs on the driver's runtime).
    let panics: Vec<_> = out.lines().filter(|l| l.contains("panicked at")).collect();
    assert!(panics.is_empty(), "{out}");
}
