//! Issue 4: owned managers' exits on cancellation (SPEC §5).
//!
//! Every way of cancelling a scope (plain drop, `tokio::time::timeout`,
//! `tokio::select!`, `JoinHandle::abort`) on both runtime flavours must run
//! each entered manager's exit exactly once, with `Outcome::Cancelled`,
//! innermost first; mid-exit cancellation must not cut or restart an exit;
//! mid-enter cancellation must run no exit.

mod driver_util;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use async_contextlib::{async_context_manager, drain, with_scope, yield_};
use driver_util::{
    ExitWork, Owned, Probe, current_thread, forever, gen_owned, multi_thread, on_both,
};
use futures::poll;
use tokio::sync::Notify;

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Hand-written, `impl OwnedManager`.
    Hand,
    /// `#[async_context_manager]` with a signature that borrows nothing.
    Generated,
}

#[derive(Clone, Copy, Debug)]
enum How {
    Drop,
    Timeout,
    Select,
    Abort,
}

/// A scope over one owned manager whose body signals `started` and never ends.
fn scope(
    kind: Kind,
    probe: &Arc<Probe>,
    started: &Arc<Notify>,
) -> impl Future<Output = ()> + Send + 'static {
    let probe = probe.clone();
    let started = started.clone();
    async move {
        match kind {
            Kind::Hand => with_scope!(Owned::new("hand", &probe) as id => {
                assert_eq!(id, "hand");
                started.notify_one();
                forever().await
            }),
            Kind::Generated => {
                with_scope!(gen_owned("gen", probe.clone(), ExitWork::Nothing) as id => {
                    assert_eq!(id, 7);
                    started.notify_one();
                    forever().await
                })
            }
        }
    }
}

/// Starts `fut`, waits until its body runs, then cancels it the way `how` says.
async fn cancel<F: Future<Output = ()> + Send + 'static>(how: How, fut: F, started: &Notify) {
    match how {
        How::Drop => {
            let mut fut = Box::pin(fut);
            assert!(poll!(fut.as_mut()).is_pending());
            started.notified().await;
            drop(fut);
        }
        How::Timeout => {
            let r = tokio::time::timeout(Duration::from_millis(5), fut).await;
            assert!(r.is_err());
            started.notified().await;
        }
        How::Select => {
            let yielded = tokio::select! {
                biased;
                () = fut => unreachable!("the body never finishes"),
                () = tokio::task::yield_now() => true,
            };
            assert!(yielded);
            started.notified().await;
        }
        How::Abort => {
            let handle = tokio::spawn(fut);
            started.notified().await;
            handle.abort();
            let err = handle.await.unwrap_err();
            assert!(err.is_cancelled());
        }
    }
}

fn check_cancelled_once(probe: &Probe, what: &str) {
    assert_eq!(probe.entered(), 1, "{what}: entered");
    assert_eq!(probe.exit_started(), 1, "{what}: exit started");
    assert_eq!(probe.exited(), 1, "{what}: exited");
    assert_eq!(
        probe.cancelled(),
        1,
        "{what}: exit saw Cancelled: {:?}",
        probe.log()
    );
}

fn owned_exit_runs_once(kind: Kind, how: How) {
    on_both(|flavour| async move {
        let probe = Probe::new();
        let started = Arc::new(Notify::new());
        cancel(how, scope(kind, &probe, &started), &started).await;
        drain().await;
        check_cancelled_once(&probe, &format!("{kind:?} {how:?} {flavour}"));
        // Nothing runs it a second time later.
        tokio::task::yield_now().await;
        drain().await;
        assert_eq!(probe.exit_started(), 1);
    });
}

#[test]
fn hand_written_owned_plain_drop() {
    owned_exit_runs_once(Kind::Hand, How::Drop);
}
#[test]
fn hand_written_owned_tokio_timeout() {
    owned_exit_runs_once(Kind::Hand, How::Timeout);
}
#[test]
fn hand_written_owned_select() {
    owned_exit_runs_once(Kind::Hand, How::Select);
}
#[test]
fn hand_written_owned_abort() {
    owned_exit_runs_once(Kind::Hand, How::Abort);
}
#[test]
fn generated_owned_plain_drop() {
    owned_exit_runs_once(Kind::Generated, How::Drop);
}
#[test]
fn generated_owned_tokio_timeout() {
    owned_exit_runs_once(Kind::Generated, How::Timeout);
}
#[test]
fn generated_owned_select() {
    owned_exit_runs_once(Kind::Generated, How::Select);
}
#[test]
fn generated_owned_abort() {
    owned_exit_runs_once(Kind::Generated, How::Abort);
}

/// A drop outside any runtime: the driver's own runtime runs the exit.
#[test]
fn owned_exit_dropped_outside_any_runtime() {
    let probe = Probe::new();
    let p = probe.clone();
    let mut fut = Box::pin(async move {
        with_scope!(Owned::new("a", &p), gen_owned("b", p.clone(), ExitWork::Nothing) => { forever().await })
    });
    let waker = futures::task::noop_waker();
    assert!(
        fut.as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
            .is_pending()
    );
    drop(fut);
    current_thread().block_on(drain());
    assert_eq!(probe.log(), ["b:cancelled", "a:cancelled"]);
    assert_eq!(probe.exited(), 2);
}

// ---- innermost-first -------------------------------------------------------

#[test]
fn three_managers_in_one_scope_exit_innermost_first() {
    for how in [How::Drop, How::Timeout, How::Select, How::Abort] {
        on_both(|flavour| async move {
            let probe = Probe::new();
            let started = Arc::new(Notify::new());
            let (p, s) = (probe.clone(), started.clone());
            let fut = async move {
                with_scope!(
                    Owned::new("a", &p) as a,
                    gen_owned("b", p.clone(), ExitWork::Sleep(Duration::from_millis(1))) as b,
                    Owned::new("c", &p) as c => {
                        assert_eq!((a, b, c), ("a", 7, "c"));
                        s.notify_one();
                        forever().await
                    }
                )
            };
            cancel(how, fut, &started).await;
            drain().await;
            assert_eq!(
                probe.log(),
                ["c:cancelled", "b:cancelled", "a:cancelled"],
                "{how:?} {flavour}"
            );
            assert_eq!(probe.exited(), 3);
        });
    }
}

#[test]
fn nested_scopes_in_bodies_exit_innermost_first() {
    for how in [How::Drop, How::Timeout, How::Select, How::Abort] {
        on_both(|flavour| async move {
            let probe = Probe::new();
            let started = Arc::new(Notify::new());
            let (p, s) = (probe.clone(), started.clone());
            let fut = async move {
                with_scope!(Owned::new("a", &p), gen_owned("b", p.clone(), ExitWork::Nothing) => {
                    // Slow exits: a racing driver would reorder them.
                    with_scope!(gen_owned("c", p.clone(), ExitWork::Sleep(Duration::from_millis(2))) => {
                        with_scope!(Owned::new("d", &p).work(ExitWork::Sleep(Duration::from_millis(2))),
                                    Owned::new("e", &p) => {
                            s.notify_one();
                            forever().await
                        })
                    })
                })
            };
            cancel(how, fut, &started).await;
            drain().await;
            assert_eq!(
                probe.log(),
                [
                    "e:cancelled",
                    "d:cancelled",
                    "c:cancelled",
                    "b:cancelled",
                    "a:cancelled"
                ],
                "{how:?} {flavour}"
            );
            assert_eq!(probe.exited(), 5);
        });
    }
}

/// Outer managers that already exited are not exited again; a partly exited
/// nesting (inner scope done, outer body still running) exits only the rest.
#[test]
fn cancel_after_inner_scope_finished_exits_only_the_outer() {
    on_both(|flavour| async move {
        let probe = Probe::new();
        let p = probe.clone();
        let mut fut = Box::pin(async move {
            with_scope!(Owned::new("outer", &p) => {
                with_scope!(gen_owned("inner", p.clone(), ExitWork::Nothing) => {});
                forever().await
            })
        });
        assert!(poll!(fut.as_mut()).is_pending());
        drop(fut);
        drain().await;
        assert_eq!(
            probe.log(),
            ["inner:success", "outer:cancelled"],
            "{flavour}"
        );
        assert_eq!(probe.exited(), 2);
    });
}

// ---- cancellation mid-exit ---------------------------------------------------

/// A generated owned manager dropped while its exit awaits: the driver resumes
/// that exit (it does not start a second one) and it completes.
#[test]
fn generated_owned_cancelled_mid_exit_is_resumed_not_restarted() {
    on_both(|flavour| async move {
        let probe = Probe::new();
        let gate = Arc::new(Notify::new());
        let (p, g) = (probe.clone(), gate.clone());
        let mut fut = Box::pin(async move {
            with_scope!(gen_owned("slow", p.clone(), ExitWork::Gate(g)) => { 7 })
        });
        assert!(poll!(fut.as_mut()).is_pending());
        assert_eq!(probe.exit_started(), 1);
        assert_eq!(probe.exited(), 0);
        drop(fut);
        gate.notify_one();
        drain().await;
        assert_eq!(probe.exit_started(), 1, "{flavour}: exit restarted");
        assert_eq!(probe.exited(), 1, "{flavour}");
        // It kept the outcome it was first given.
        assert_eq!(probe.log(), ["slow:success"]);
    });
}

/// A hand-written owned manager dropped mid-exit on a multi-thread runtime:
/// the exit is finished in place before the drop returns.
#[test]
fn hand_written_owned_cancelled_mid_exit_finishes_in_place_on_multi_thread() {
    multi_thread().block_on(async {
        let probe = Probe::new();
        let p = probe.clone();
        let mut fut = Box::pin(async move {
            with_scope!(Owned::new("slow", &p).work(ExitWork::Sleep(Duration::from_millis(20))) => { 7 })
        });
        assert!(poll!(fut.as_mut()).is_pending());
        assert_eq!(probe.exit_started(), 1);
        drop(fut);
        assert_eq!(probe.exited(), 1, "finished before the drop returned");
        drain().await;
        assert_eq!(probe.exit_started(), 1);
    });
}

/// The same on a current-thread runtime, where nothing can be finished in
/// place: the exit must still complete, exactly once (the driver runs it).
#[test]
fn hand_written_owned_cancelled_mid_exit_completes_on_current_thread() {
    current_thread().block_on(async {
        let probe = Probe::new();
        let gate = Arc::new(Notify::new());
        let (p, g) = (probe.clone(), gate.clone());
        let mut fut = Box::pin(async move {
            with_scope!(Owned::new("slow", &p).work(ExitWork::Gate(g)) => { 7 })
        });
        assert!(poll!(fut.as_mut()).is_pending());
        assert_eq!(probe.exit_started(), 1);
        drop(fut);
        gate.notify_one();
        drain().await;
        assert_eq!(probe.exit_started(), 1);
        assert_eq!(probe.exited(), 1, "a shielded exit was cut short");
    });
}

/// Mid-exit of the outer manager while the inner one already exited.
#[test]
fn cancelled_mid_exit_of_outer_keeps_inner_exited_once() {
    on_both(|flavour| async move {
        let probe = Probe::new();
        let gate = Arc::new(Notify::new());
        let (p, g) = (probe.clone(), gate.clone());
        let mut fut = Box::pin(async move {
            with_scope!(gen_owned("outer", p.clone(), ExitWork::Gate(g)), Owned::new("inner", &p) => { 1 })
        });
        assert!(poll!(fut.as_mut()).is_pending());
        drop(fut);
        gate.notify_one();
        drain().await;
        assert_eq!(probe.log(), ["inner:success", "outer:success"], "{flavour}");
        assert_eq!(probe.exited(), 2);
    });
}

// ---- cancellation mid-enter --------------------------------------------------

#[async_context_manager]
async fn gen_gated(probe: Arc<Probe>, gate: Arc<Notify>) -> u8 {
    gate.notified().await;
    probe.entered.fetch_add(1, SeqCst);
    let _ = yield_!(1);
    probe.exited.fetch_add(1, SeqCst);
}

#[test]
fn cancelled_mid_enter_runs_no_exit_for_that_manager() {
    on_both(|flavour| async move {
        let probe = Probe::new();
        let inner = Probe::new();
        let gate = Arc::new(Notify::new());
        let (p, i, g) = (probe.clone(), inner.clone(), gate.clone());
        let mut fut = Box::pin(async move {
            let mut hand = Owned::new("hand", &i);
            hand.enter_gate = Some(g.clone());
            with_scope!(Owned::new("outer", &p), gen_gated(i.clone(), g), hand => { 1 })
        });
        assert!(poll!(fut.as_mut()).is_pending());
        // `outer` entered; `gen_gated` is mid-enter.
        drop(fut);
        drain().await;
        assert_eq!(inner.entered(), 0, "{flavour}");
        assert_eq!(inner.exited(), 0, "{flavour}");
        assert_eq!(inner.exit_started(), 0, "{flavour}");
        assert_eq!(probe.log(), ["outer:cancelled"]);
        assert_eq!(probe.exited(), 1);

        // Now mid-enter of the hand-written one.
        let inner = Probe::new();
        let gate = Arc::new(Notify::new());
        let (i, g) = (inner.clone(), gate.clone());
        let mut fut = Box::pin(async move {
            let mut hand = Owned::new("hand", &i);
            hand.enter_gate = Some(g.clone());
            with_scope!(gen_gated(i.clone(), g), hand => { 1 })
        });
        assert!(poll!(fut.as_mut()).is_pending());
        gate.notify_one(); // lets gen_gated in; `hand` now waits.
        assert!(poll!(fut.as_mut()).is_pending());
        assert_eq!(inner.entered(), 1);
        drop(fut);
        drain().await;
        assert_eq!(inner.entered(), 1, "{flavour}");
        assert_eq!(
            inner.exit_started(),
            0,
            "{flavour}: the half-entered hand-written manager exited"
        );
        assert_eq!(inner.exited(), 1, "{flavour}: gen_gated exits once");
    });
}

/// A scope future dropped before it was ever polled runs nothing.
#[test]
fn never_polled_scope_runs_nothing() {
    on_both(|_| async {
        let probe = Probe::new();
        let p = probe.clone();
        let fut = async move { with_scope!(Owned::new("a", &p) => { 1 }) };
        drop(fut);
        drain().await;
        assert_eq!(probe.entered(), 0);
        assert_eq!(probe.exit_started(), 0);
    });
}

// A signature whose only references are higher-ranked — a fn pointer, an
// `Fn(..)` bound, a `for<'a>` — borrows nothing from the caller: the
// manager is owned (its exit runs on the driver after a cancelled scope),
// not finished in place where, on one thread, its timer could not run.

#[async_context_manager]
async fn with_fn_pointer(cb: fn(&str) -> usize, probe: Arc<Probe>) -> usize {
    probe.entered.fetch_add(1, SeqCst);
    let _ = yield_!(cb("abc"));
    tokio::time::sleep(Duration::from_millis(2)).await;
    probe.exited.fetch_add(1, SeqCst);
}

#[async_context_manager]
async fn with_boxed_fn(
    cb: Box<dyn for<'a> Fn(&'a str) -> &'a str + Send>,
    probe: Arc<Probe>,
) -> usize {
    probe.entered.fetch_add(1, SeqCst);
    let _ = yield_!(cb("abc").len());
    tokio::time::sleep(Duration::from_millis(2)).await;
    probe.exited.fetch_add(1, SeqCst);
}

fn is_owned<M: async_contextlib::OwnedManager>(manager: M) -> M {
    manager
}

#[test]
fn a_signature_with_only_higher_ranked_references_is_owned() {
    current_thread().block_on(async {
        let probe = Probe::new();
        let p = probe.clone();
        let cut = tokio::time::timeout(Duration::from_millis(5), async move {
            with_scope!(
                is_owned(with_fn_pointer(str::len, p.clone())) as a,
                is_owned(with_boxed_fn(Box::new(str::trim), p)) as b => {
                    assert_eq!((a, b), (3, 3));
                    forever().await
                }
            )
        })
        .await;
        assert!(cut.is_err(), "the scope is cancelled mid-body");
        // Nothing ran in place: both exits wait on this thread's timer.
        assert_eq!(probe.exited(), 0);
        drain().await;
        assert_eq!((probe.entered(), probe.exited()), (2, 2));
    });
}
