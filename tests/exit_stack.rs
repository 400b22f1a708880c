//! `ExitStack` / `LocalExitStack` (issue 9, SPEC §6), with ports of
//! CPython's `test_contextlib_async.py` `TestAsyncExitStack` cases that
//! have a Rust meaning (named after them). Every test takes the stats
//! lock: they check exact counts.

// The lock is held across awaits on purpose: it serializes whole tests.
#![allow(clippy::await_holding_lock)]

mod common;
mod driver_util;

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_contextlib::{
    AsyncContextManager, BoxError, ExitStack, LocalExitStack, Outcome, OwnedManager, SendManager,
    async_context_manager, drain, nullcontext, stats, with_scope, yield_,
};
use common::Log;
use driver_util::{current_thread, forever, multi_thread, stats_lock};
use futures::FutureExt;

/// A manager that logs its enter and exit (with the outcome it saw) and
/// can fail or panic at either.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fail {
    Never,
    Enter,
    Exit,
    PanicExit,
}

struct Logged {
    id: &'static str,
    log: Log,
    fail: Fail,
}

fn logged(id: &'static str, log: &Log) -> Logged {
    Logged {
        id,
        log: log.clone(),
        fail: Fail::Never,
    }
}

#[derive(Debug)]
struct Boom(&'static str);
impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "boom in {}", self.0)
    }
}
impl std::error::Error for Boom {}

impl AsyncContextManager for Logged {
    type Value<'a> = &'static str;
    type Error = Boom;
    async fn enter(&mut self) -> Result<&'static str, Boom> {
        if self.fail == Fail::Enter {
            return Err(Boom(self.id));
        }
        self.log.push(format!("enter {}", self.id));
        Ok(self.id)
    }
    async fn exit(&mut self, outcome: Outcome) -> Result<(), Boom> {
        self.log
            .push(format!("exit {} {}", self.id, outcome.label()));
        match self.fail {
            Fail::Exit => Err(Boom(self.id)),
            Fail::PanicExit => panic!("{} exit panicked", self.id),
            _ => Ok(()),
        }
    }
    fn name(&self) -> &'static str {
        self.id
    }
}

impl OwnedManager for Logged {}
async_contextlib::send_manager!(Logged);

/// A generated manager lending `&mut` to a local of its frame.
#[async_context_manager]
async fn lend_vec(id: &'static str, log: Log) -> &mut Vec<&'static str> {
    let mut v = vec![id];
    let outcome = yield_!(&mut v);
    log.push(format!("exit {id} {} {v:?}", outcome.label()));
}

#[tokio::test]
async fn test_async_enter_context_values_held_at_once_exit_lifo() {
    let _l = stats_lock();
    let log = Log::default();
    let r: Result<usize, BoxError> = with_scope!(ExitStack::new() as stack => {
        let a = stack.enter(logged("a", &log)).await?;
        let b = stack.enter(lend_vec("b", log.clone())).await?;
        let c = stack.enter(lend_vec("c", log.clone())).await?;
        // Values of several entries at once, two of them borrows into
        // generated managers' frames.
        b.push(a);
        c.push("more");
        Ok(b.len() + c.len())
    });
    assert_eq!(r.unwrap(), 4);
    assert_eq!(
        log.take(),
        [
            "enter a",
            "exit c success [\"c\", \"more\"]",
            "exit b success [\"b\", \"a\"]",
            "exit a success",
        ]
    );
}

#[tokio::test]
async fn test_async_callback_and_push_exit_see_the_outcome() {
    let _l = stats_lock();
    let log = Log::default();
    let r: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
        let l = log.clone();
        stack.push_callback(async move { l.push("callback 1") });
        let l = log.clone();
        stack.push_exit(move |outcome: Outcome| async move {
            l.push(format!("push_exit saw {}", outcome.label()));
        });
        let l = log.clone();
        stack.push_callback(async move {
            l.push("callback 3");
            Ok::<(), Boom>(())
        });
        Err::<(), BoxError>(Box::new(Boom("body")))
    });
    assert_eq!(r.unwrap_err().to_string(), "boom in body");
    assert_eq!(
        log.take(),
        ["callback 3", "push_exit saw failed", "callback 1"]
    );
}

#[tokio::test]
async fn test_close_unwinds_once_standalone() {
    let _l = stats_lock();
    let log = Log::default();
    let mut stack = ExitStack::new();
    let _ = stack.enter(logged("a", &log)).await.unwrap();
    let _ = stack.enter(logged("b", &log)).await.unwrap();
    stack.close().await.unwrap();
    assert_eq!(
        log.take(),
        ["enter a", "enter b", "exit b success", "exit a success"]
    );
    // Closed once: nothing left to run.
    stack.close().await.unwrap();
    drop(stack);
    assert!(log.take().is_empty());
}

#[tokio::test]
async fn test_pop_all_transfers_the_exits() {
    let _l = stats_lock();
    let log = Log::default();
    let r: Result<ExitStack<'_>, BoxError> = with_scope!(ExitStack::new() as mut stack => {
        let _ = stack.enter(logged("a", &log)).await?;
        let _ = stack.enter(logged("b", &log)).await?;
        Ok(stack.pop_all())
    });
    let mut moved = r.unwrap();
    // The scope's stack was empty when it exited.
    assert_eq!(log.take(), ["enter a", "enter b"]);
    moved.close().await.unwrap();
    assert_eq!(log.take(), ["exit b success", "exit a success"]);
}

#[tokio::test]
async fn test_exit_raise_first_error_wins_and_unwinding_goes_on() {
    let _l = stats_lock();
    let before = stats();
    let log = Log::default();
    let mut stack = ExitStack::new();
    for (id, fail) in [
        ("a", Fail::Exit),
        ("b", Fail::Never),
        ("c", Fail::Exit),
        ("d", Fail::Never),
    ] {
        let mut m = logged(id, &log);
        m.fail = fail;
        stack.enter(m).await.unwrap();
    }
    let err = stack.close().await.unwrap_err();
    // `c` failed first (newest first); `b` and `a` saw its failure.
    assert_eq!(err.to_string(), "boom in c");
    assert_eq!(
        log.take()[4..],
        [
            "exit d success",
            "exit c success",
            "exit b failed",
            "exit a failed"
        ]
    );
    let after = stats();
    assert_eq!(after.entered - before.entered, 4);
    assert_eq!(after.exited - before.exited, 4);
    assert_eq!(
        after.exit_failures - before.exit_failures,
        2,
        "both failures counted"
    );
    assert_eq!(after.active, before.active);
}

#[tokio::test]
async fn a_panicking_exit_does_not_stop_the_unwinding_and_resumes_once() {
    let _l = stats_lock();
    let log = Log::default();
    let mut stack = ExitStack::new();
    let mut bad = logged("bad", &log);
    bad.fail = Fail::PanicExit;
    stack.enter(logged("a", &log)).await.unwrap();
    stack.enter(bad).await.unwrap();
    stack.enter(logged("c", &log)).await.unwrap();
    let result = std::panic::AssertUnwindSafe(stack.close())
        .catch_unwind()
        .await;
    let payload = result.expect_err("the exit's panic resumes");
    assert_eq!(
        payload.downcast_ref::<String>().unwrap(),
        "bad exit panicked"
    );
    assert_eq!(
        log.take()[3..],
        ["exit c success", "exit bad success", "exit a panicked"]
    );
}

#[tokio::test]
async fn an_enter_that_fails_leaves_the_stack_as_it_was() {
    let _l = stats_lock();
    let log = Log::default();
    let mut stack = ExitStack::new();
    stack.enter(logged("a", &log)).await.unwrap();
    let mut bad = logged("bad", &log);
    bad.fail = Fail::Enter;
    assert_eq!(stack.enter(bad).await.unwrap_err().0, "bad");
    stack.close().await.unwrap();
    assert_eq!(log.take(), ["enter a", "exit a success"]);
}

#[tokio::test]
async fn test_excessive_nesting_ten_thousand_entries() {
    let _l = stats_lock();
    let before = stats();
    let count = Arc::new(Mutex::new(Vec::new()));
    let mut stack = ExitStack::new();
    for i in 0..10_000_u32 {
        let c = count.clone();
        stack.push_callback(async move { c.lock().unwrap().push(i) });
        if i % 2 == 0 {
            stack.enter(nullcontext(i)).await.unwrap();
        }
    }
    stack.close().await.unwrap();
    let order = count.lock().unwrap().clone();
    assert_eq!(order.len(), 10_000);
    assert!(order.windows(2).all(|w| w[0] > w[1]), "newest first");
    let after = stats();
    assert_eq!(after.entered - before.entered, 5_000);
    assert_eq!(
        after.exited - before.exited,
        5_000,
        "managers (callbacks are not entered)"
    );
    assert_eq!(after.active, before.active);
}

#[tokio::test]
async fn a_body_panic_is_seen_by_every_entry() {
    let _l = stats_lock();
    let log = Log::default();
    let result = std::panic::AssertUnwindSafe(async {
        let r: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
            stack.enter(logged("a", &log)).await?;
            stack.enter(logged("b", &log)).await?;
            if log.len() == 2 {
                panic!("body panicked");
            }
            Ok(())
        });
        r
    })
    .catch_unwind()
    .await;
    assert!(result.is_err());
    assert_eq!(log.take()[2..], ["exit b panicked", "exit a panicked"]);
}

/// A borrowing (hand-written, `&Log`) manager.
struct Borrowed<'a> {
    id: &'static str,
    log: &'a Log,
}

impl AsyncContextManager for Borrowed<'_> {
    type Value<'b>
        = ()
    where
        Self: 'b;
    type Error = Infallible;
    async fn enter(&mut self) -> Result<(), Infallible> {
        self.log.push(format!("enter {}", self.id));
        Ok(())
    }
    async fn exit(&mut self, outcome: Outcome) -> Result<(), Infallible> {
        tokio::task::yield_now().await;
        self.log
            .push(format!("exit {} {}", self.id, outcome.label()));
        Ok(())
    }
}

impl SendManager for Borrowed<'_> {
    async fn exit_owned(mut self, outcome: Outcome) -> Result<(), Infallible> {
        self.exit(outcome).await
    }
}

/// Cancellation mid-body, on both runtime flavours: every entry exits once
/// with `Cancelled`, newest first — owned ones detached, the borrowing one
/// finished in place.
#[test]
fn cancelled_mid_body_every_entry_exits_once_newest_first() {
    let _l = stats_lock();
    for rt in [current_thread(), multi_thread()] {
        let before = stats();
        let log = Log::default();
        rt.block_on(async {
            let scope = async {
                let r: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
                    stack.enter(logged("owned-1", &log)).await?;
                    stack.enter(Borrowed { id: "borrowing", log: &log }).await?;
                    stack.enter(logged("owned-2", &log)).await?;
                    let l = log.clone();
                    stack.push_callback(async move { l.push("callback") });
                    forever().await;
                    Ok(())
                });
                r
            };
            assert!(
                tokio::time::timeout(Duration::from_millis(10), scope)
                    .await
                    .is_err()
            );
            drain().await;
        });
        assert_eq!(
            log.take()[3..],
            [
                "callback",
                "exit owned-2 cancelled",
                "exit borrowing cancelled",
                "exit owned-1 cancelled"
            ]
        );
        let after = stats();
        // The stack itself and its three managers (a callback is not entered).
        assert_eq!(after.entered - before.entered, 4);
        assert_eq!(after.exited - before.exited, 4);
        assert_eq!(after.abandoned, before.abandoned);
        assert_eq!(after.lost, before.lost);
        assert_eq!(after.active, before.active);
    }
}

#[tokio::test]
async fn a_standalone_stack_dropped_unclosed_exits_every_entry() {
    let _l = stats_lock();
    let log = Log::default();
    {
        let stack = ExitStack::new();
        stack.enter(logged("a", &log)).await.unwrap();
        stack.enter(logged("b", &log)).await.unwrap();
    }
    drain().await;
    assert_eq!(log.take()[2..], ["exit b cancelled", "exit a cancelled"]);
}

#[test]
fn a_spawned_task_can_hold_an_exit_stack() {
    let _l = stats_lock();
    multi_thread().block_on(async {
        let log = Log::default();
        let l = log.clone();
        let task = tokio::spawn(async move {
            let mut stack = ExitStack::new();
            stack.enter(logged("a", &l)).await.unwrap();
            let v = stack.enter(lend_vec("b", l.clone())).await.unwrap();
            tokio::task::yield_now().await; // held across an await, on any worker
            v.push("c");
            stack.close().await.unwrap();
        });
        task.await.unwrap();
        assert_eq!(
            log.take(),
            ["enter a", "exit b success [\"b\", \"c\"]", "exit a success"]
        );
    });
}

/// A manager whose exit holds an `Rc` across an await: not `Send`.
struct LocalOnly(Rc<Log>);

impl AsyncContextManager for LocalOnly {
    type Value<'a> = ();
    type Error = Infallible;
    async fn enter(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
    async fn exit(&mut self, outcome: Outcome) -> Result<(), Infallible> {
        let log = self.0.clone();
        tokio::task::yield_now().await;
        log.push(format!("local exit {}", outcome.label()));
        Ok(())
    }
}

#[tokio::test]
async fn local_exit_stack_takes_managers_whose_exit_is_not_send() {
    let _l = stats_lock();
    let log = Rc::new(Log::default());
    let r: Result<(), BoxError> = with_scope!(LocalExitStack::new() as stack => {
        stack.enter(LocalOnly(log.clone())).await?;
        let l = log.clone();
        stack.push_callback(async move { l.push("local callback") });
        Ok(())
    });
    r.unwrap();
    assert_eq!(log.take(), ["local callback", "local exit success"]);
}

#[tokio::test]
async fn stacks_nest() {
    let _l = stats_lock();
    let log = Log::default();
    let mut outer = ExitStack::new();
    let inner = outer.enter(ExitStack::new()).await.unwrap();
    inner.enter(logged("in-inner", &log)).await.unwrap();
    outer.enter(logged("in-outer", &log)).await.unwrap();
    outer.close().await.unwrap();
    assert_eq!(
        log.take()[2..],
        ["exit in-outer success", "exit in-inner success"]
    );
}
