//! The lending paths of the generator, small enough to run under Miri:
//! `cargo +nightly miri test -p async-contextlib-runtime --tests`.
//!
//! Each test drives a generated manager (through `with_scope!`, as users do,
//! and through the trait directly) with `futures_executor::block_on`, so
//! that Miri checks the raw-pointer slot, the `&mut` lent out of the
//! suspended generator's frame, and the frame's drop.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use async_contextlib::{AsyncContextManager, Outcome, async_context_manager, with_scope, yield_};
use futures_executor::block_on;

/// Counts drops, to check the generator's frame is dropped exactly once.
struct Tracked<'a>(&'a AtomicUsize, Vec<u32>);

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Returns `Pending` once, waking itself: a real suspension point.
async fn suspend() {
    let mut suspended = false;
    std::future::poll_fn(|cx| {
        if suspended {
            Poll::Ready(())
        } else {
            suspended = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

#[async_context_manager]
async fn lend_vec(seen: &Cell<Vec<u32>>) -> &mut Vec<u32> {
    let mut v = vec![1, 2, 3];
    suspend().await;
    let outcome = yield_!(&mut v);
    assert!(outcome.is_success(), "lend_vec saw {outcome}");
    v.push(99);
    seen.set(v.clone());
}

#[test]
fn lent_mut_is_seen_again_by_exit() {
    let seen = Cell::new(Vec::new());
    let len = block_on(async {
        with_scope!(lend_vec(&seen) as v => {
            v.push(4);
            suspend().await;
            v[0] = 10;
            v.len()
        })
    });
    assert_eq!(len, 4);
    assert_eq!(seen.take(), vec![10, 2, 3, 4, 99]);
}

#[async_context_manager]
async fn lend_ref(n: u64) -> &String {
    let s = format!("n={n}");
    let _ = yield_!(&s);
    assert_eq!(s, format!("n={n}"));
}

#[test]
fn lent_ref_reads_the_frame() {
    let got = block_on(async { with_scope!(lend_ref(7) as s => { s.clone() }) });
    assert_eq!(got, "n=7");
}

#[async_context_manager]
async fn by_value(log: Rc<Cell<u32>>) -> Rc<Cell<u32>> {
    log.set(log.get() + 1);
    let outcome = yield_!(log.clone());
    log.set(log.get() + if outcome.is_success() { 10 } else { 100 });
}

#[test]
fn by_value_and_outcomes() {
    let log = Rc::new(Cell::new(0));
    let r: Result<(), &str> = block_on(async {
        with_scope!(by_value(log.clone()) as l => {
            l.set(l.get() + 1);
            Err("no")
        })
    });
    assert_eq!(r, Err("no"));
    assert_eq!(log.get(), 102);
}

#[async_context_manager]
async fn tracked<'a>(drops: &'a AtomicUsize) -> Result<&mut Tracked<'a>, String> {
    let mut t = Tracked(drops, vec![]);
    match yield_!(&mut t) {
        Outcome::Success => t.1.push(1),
        _ => return Err("failed".into()),
    }
}

#[test]
fn frame_dropped_once_on_every_path() {
    let drops = AtomicUsize::new(0);
    let r: Result<u32, String> = block_on(async {
        with_scope!(tracked(&drops) as t => {
            t.1.push(0);
            Ok(1)
        })
    });
    assert_eq!(r, Ok(1));
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    // An exit error after a body error: the body's error wins.
    let r: Result<u32, String> =
        block_on(async { with_scope!(tracked(&drops) as _t => { Err("body".to_string()) }) });
    assert_eq!(r, Err("body".to_string()));
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    // Entered by hand, never exited: dropping the manager drops the frame.
    block_on(async {
        let mut m = tracked(&drops);
        let t = m.enter().await.unwrap();
        t.1.push(5);
    });
    assert_eq!(drops.load(Ordering::SeqCst), 3);
    // Never entered: the fn's body never ran, so nothing was built to drop.
    drop(tracked(&drops));
    assert_eq!(drops.load(Ordering::SeqCst), 3);
}

#[async_context_manager]
async fn two_step(count: &Cell<u32>) -> &mut u32 {
    let mut n = 0;
    let _ = yield_!(&mut n);
    suspend().await;
    count.set(count.get() + n);
}

#[test]
fn exit_future_dropped_midway_resumes() {
    let count = Cell::new(0);
    block_on(async {
        let mut m = two_step(&count);
        *m.enter().await.unwrap() = 5;
        {
            // Poll the exit once (it suspends), then drop its future.
            let mut exit = std::pin::pin!(m.exit(Outcome::Success));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(exit.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(count.get(), 0);
        // A second exit call resumes the first; it does not start over.
        m.exit(Outcome::Cancelled).await.unwrap();
    });
    assert_eq!(count.get(), 5);
}

#[test]
fn panicking_body_runs_exit_then_resumes() {
    let seen = Cell::new(Vec::new());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        block_on(async {
            with_scope!(lend_vec(&seen) as v => {
                v.push(4);
                if v.len() == 4 {
                    panic!("boom")
                }
            })
        })
    }));
    // `lend_vec` asserts success after its yield, so its exit panicked too
    // (and did not record); the body's panic is the one that resumes.
    let payload = result.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    assert!(seen.take().is_empty());
}

#[test]
fn infallible_manager_accepts_an_io_result_block() {
    let v: Result<u8, std::io::Error> =
        block_on(async { with_scope!(lend_ref(1) as _s => { Ok(3) }) });
    assert_eq!(v.unwrap(), 3);
}

#[test]
fn scope_dropped_mid_body_drops_the_lent_frame_once() {
    let drops = AtomicUsize::new(0);
    let before = async_contextlib::stats();
    {
        let scope = async {
            let r: Result<(), String> = with_scope!(tracked(&drops) as t => {
                t.1.push(1);
                suspend().await; // the scope is dropped here
                Ok(())
            });
            r
        };
        let mut scope = std::pin::pin!(scope);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(scope.as_mut().poll(&mut cx).is_pending());
        assert_eq!(drops.load(Ordering::SeqCst), 0);
    }
    // No runtime: the borrowing manager's exit is finished in place, on
    // this thread, before the drop returns (it fails on `Cancelled`); its
    // frame, with the lent local, is dropped exactly once.
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    let after = async_contextlib::stats();
    assert_eq!(after.abandoned, before.abandoned);
    assert!(after.exit_failures > before.exit_failures);
}

#[test]
fn an_exit_stack_dropped_with_lent_entries_exits_each_once() {
    use async_contextlib::LocalExitStack;
    let drops = AtomicUsize::new(0);
    let seen = Cell::new(Vec::new());
    {
        let stack = LocalExitStack::new();
        let scope = async {
            let v = stack.enter(lend_vec_sync(&seen)).await.unwrap();
            v.push(4);
            let t = stack.enter(tracked(&drops)).await.unwrap();
            t.1.push(1);
        };
        futures_executor::block_on(scope);
        // Dropped unclosed: both exit in place (no runtime here), with
        // `Cancelled`, newest first; the frames are dropped once.
    }
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(seen.take(), vec![1, 2, 3, 4, 100]);
}

#[async_context_manager]
async fn lend_vec_sync(seen: &Cell<Vec<u32>>) -> &mut Vec<u32> {
    let mut v = vec![1, 2, 3];
    let outcome = yield_!(&mut v);
    assert!(matches!(outcome, Outcome::Cancelled));
    v.push(100);
    seen.set(v);
}

/// Owned (borrows nothing): a cancelled `ExitStack` of these is handed to
/// the exit driver.
#[async_context_manager]
async fn lend_owned(id: u32, log: std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> &mut Vec<u32> {
    let mut v = vec![id];
    let outcome = yield_!(&mut v);
    suspend().await;
    log.lock()
        .unwrap()
        .push(format!("{id} {} {v:?}", outcome.label()));
}

#[test]
fn an_owned_exit_stack_dropped_with_lent_entries_is_detached_and_exits_each_once() {
    use async_contextlib::{BoxError, ExitStack};
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let before = async_contextlib::stats();
    {
        let scope = async {
            let r: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
                let a = stack.enter(lend_owned(1, log.clone())).await?;
                let b = stack.enter(lend_owned(2, log.clone())).await?;
                a.push(10);
                b.push(20);
                suspend().await; // the scope is dropped here
                Ok(())
            });
            r
        };
        let mut scope = std::pin::pin!(scope);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(scope.as_mut().poll(&mut cx).is_pending());
    }
    // Moved out of their nodes into the driver's stack (the lent locals
    // stay in the generators' own frames), then exited there, newest first.
    block_on(async_contextlib::drain());
    assert_eq!(
        *log.lock().unwrap(),
        ["2 cancelled [2, 20]", "1 cancelled [1, 10]"]
    );
    // (Other tests of this binary run beside it: only what this one adds
    // at least is checked.)
    let after = async_contextlib::stats();
    assert!(after.exited - before.exited >= 3);
    assert_eq!(after.abandoned, before.abandoned);
}
