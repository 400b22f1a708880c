//! The lending invariant under attack, small enough for Miri (stacked and
//! tree borrows): `cargo +nightly miri test -p async-contextlib-runtime
//! --tests`.
//!
//! Safe code can no longer reach the building blocks (`tests/ui`:
//! `generator-new-is-unsafe.rs`, `yielder-is-hygienic.rs`,
//! `yield-in-*-macro.rs`). What remains is tested here:
//!
//! * the defences, driven through the `unsafe` constructor the way a
//!   misbehaving expansion would: a yield future dropped after publishing
//!   (revoked, nothing lent), one leaked with `mem::forget` after publishing
//!   and its local freed (the confirmation poll catches it: a clean panic,
//!   no dangling `&mut`);
//! * generators crossing threads between enter and exit;
//! * `enter` / `exit` called by hand in odd orders;
//! * a manager's finished enter or exit future that panics as it is
//!   dropped, in a scope and in an `ExitStack`: dropped once, exited once.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use async_contextlib::generated::{Generator, LendMut};
use async_contextlib::{AsyncContextManager, Outcome, async_context_manager, with_scope, yield_};
use futures_executor::block_on;

/// Polls `fut` once with a no-op waker.
fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

// ------------------------------------------------------------ defences

#[test]
fn a_yield_future_dropped_after_publishing_lends_nothing() {
    // What a broken expansion might do: publish, drop the yield future,
    // free the local, suspend elsewhere.
    // SAFETY: deliberately breaks `Generator::new`'s contract, to check
    // that the defence keeps it from becoming a dangling lend.
    let mut generator = unsafe {
        Generator::<_, LendMut<String>>::new("dropped_yield", |co| async move {
            let mut local = String::from("freed");
            {
                let mut lend = pin!(co.lend_mut(&mut local));
                assert!(poll_once(lend.as_mut()).is_pending());
                // Held across an await, so it lives in the generator's
                // frame (and passes the frame check).
                suspend().await;
            } // the yield future is dropped here: it revokes
            drop(local);
            std::future::pending::<()>().await;
        })
    };
    let mut enter = pin!(generator.enter());
    for _ in 0..3 {
        assert!(
            poll_once(enter.as_mut()).is_pending(),
            "nothing may be lent"
        );
    }
}

#[test]
fn a_yield_future_leaked_after_publishing_is_caught_before_lending() {
    // SAFETY: deliberately breaks `Generator::new`'s contract, to check
    // that the confirmation poll refuses to lend.
    let mut generator = unsafe {
        Generator::<_, LendMut<String>>::new("leaked_yield", |co| async move {
            let mut local = String::from("freed");
            // Leaked in place (`ManuallyDrop` rather than a forgotten box,
            // so that Miri's leak check stays meaningful): it never revokes.
            let mut lend = ManuallyDrop::new(co.lend_mut(&mut local));
            assert!(poll_once(Pin::new(&mut *lend)).is_pending());
            drop(local); // the published pointer now dangles
            std::future::pending::<()>().await;
        })
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut enter = pin!(generator.enter());
        let _ = poll_once(enter.as_mut());
    }));
    let text = panic_text(&*result.expect_err("enter must refuse to lend"));
    // Caught by the frame check (the leaked future was not kept across an
    // await) or, failing that, by the confirmation poll.
    assert!(text.contains("refusing"), "{text}");
    // The generator can still be dropped.
    drop(generator);
}

#[test]
fn a_yield_future_that_finishes_the_fn_while_published_is_caught() {
    // SAFETY: deliberately breaks the contract: the fn returns while its
    // (leaked) yield future has published.
    let mut generator = unsafe {
        Generator::<_, LendMut<u32>>::new("returned_while_published", |co| async move {
            let mut local = 5;
            let mut lend = ManuallyDrop::new(co.lend_mut(&mut local));
            assert!(poll_once(Pin::new(&mut *lend)).is_pending());
        })
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut enter = pin!(generator.enter());
        let _ = poll_once(enter.as_mut());
    }));
    assert!(panic_text(&*result.unwrap_err()).contains("refusing"));
}

#[test]
fn a_yield_future_outside_its_generators_frame_cannot_touch_the_slot() {
    // SAFETY: deliberately breaks the contract: the yield future is boxed,
    // so it lives outside the generator's allocation.
    let mut generator = unsafe {
        Generator::<_, LendMut<u32>>::new("boxed_yield", |co| async move {
            let mut x = 1;
            let mut lend = Box::pin(co.lend_mut(&mut x));
            let _ = poll_once(lend.as_mut());
        })
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut enter = pin!(generator.enter());
        let _ = poll_once(enter.as_mut());
    }));
    let text = panic_text(&*result.unwrap_err());
    assert!(text.contains("outside its generator's frame"), "{text}");
}

#[test]
fn a_yielder_laundered_into_another_generator_lends_nothing() {
    use async_contextlib::__private::Co;
    use std::any::Any;
    use std::cell::RefCell;
    thread_local! {
        static STOLEN: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }
    // What a redirected `Generator::new` could do: hand one generator's
    // yielder to another generator's future, which awaits a yield future
    // made from it — in place, but in its own frame.
    // SAFETY: deliberately breaks the contract (a foreign yielder).
    let mut victim = unsafe {
        Generator::<_, LendMut<u32>>::new("victim", |co| {
            STOLEN.with(|s| *s.borrow_mut() = Some(Box::new(co)));
            std::future::pending::<()>()
        })
    };
    let stolen: Box<Co<LendMut<u32>>> = STOLEN
        .with(|s| s.borrow_mut().take())
        .unwrap()
        .downcast()
        .unwrap();
    // SAFETY: as above.
    let mut launderer = unsafe {
        Generator::<_, LendMut<u32>>::new("launderer", move |own| async move {
            let _ = own;
            let mut x = 5;
            let _ = stolen.lend_mut(&mut x).await;
        })
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut enter = pin!(launderer.enter());
        let _ = poll_once(enter.as_mut());
    }));
    assert!(panic_text(&*result.unwrap_err()).contains("outside its generator's frame"));
    // The victim's slot was never touched: it lends nothing.
    let mut enter = pin!(victim.enter());
    assert!(poll_once(enter.as_mut()).is_pending());
}

// ------------------------------------------------------ crossing threads

#[async_context_manager]
async fn lend_string(seen: Arc<Mutex<String>>) -> &mut String {
    let mut s = String::from("a");
    yield_!(&mut s);
    s.push('c');
    *seen.lock().unwrap() = s;
}

/// Returns `Pending` once, waking itself.
async fn suspend() {
    let mut done = false;
    std::future::poll_fn(|cx| {
        if done {
            Poll::Ready(())
        } else {
            done = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

#[test]
fn a_scope_moves_to_another_thread_mid_body() {
    let seen = Arc::new(Mutex::new(String::new()));
    let scope = {
        let seen = seen.clone();
        async move {
            with_scope!(lend_string(seen) as s => {
                suspend().await;
                s.push('b');
            });
        }
    };
    let mut scope = Box::pin(scope);
    assert!(poll_once(scope.as_mut()).is_pending(), "suspended mid-body");
    std::thread::spawn(move || block_on(scope)).join().unwrap();
    assert_eq!(*seen.lock().unwrap(), "abc");
}

#[test]
fn a_generator_entered_on_one_thread_exits_on_another() {
    let seen = Arc::new(Mutex::new(String::new()));
    let mut generator = lend_string(seen.clone());
    block_on(async {
        generator.enter().await.unwrap().push('b');
    });
    std::thread::spawn(move || block_on(generator.exit(Outcome::Success)).unwrap())
        .join()
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), "abc");
}

// ------------------------------------------------------- odd orders by hand

#[test]
fn exit_before_enter_panics_cleanly() {
    let mut generator = lend_string(Arc::default());
    let result = catch_unwind(AssertUnwindSafe(|| {
        block_on(generator.exit(Outcome::Success))
    }));
    assert!(panic_text(&*result.unwrap_err()).contains("exited before it was entered"));
}

#[test]
fn enter_twice_panics_cleanly() {
    let mut generator = lend_string(Arc::default());
    block_on(async {
        let _ = generator.enter().await.unwrap();
    });
    let result = catch_unwind(AssertUnwindSafe(|| block_on(generator.enter()).map(|_| ())));
    assert!(panic_text(&*result.unwrap_err()).contains("entered twice"));
}

#[async_context_manager]
async fn slow_enter(seen: Arc<Mutex<String>>) -> &mut String {
    let mut s = String::from("x");
    suspend().await;
    suspend().await;
    yield_!(&mut s);
    *seen.lock().unwrap() = s;
}

#[test]
fn an_enter_dropped_midway_resumes_on_the_next_enter() {
    let seen = Arc::new(Mutex::new(String::new()));
    let mut generator = slow_enter(seen.clone());
    {
        let mut enter = pin!(generator.enter());
        assert!(poll_once(enter.as_mut()).is_pending());
    }
    block_on(async {
        generator.enter().await.unwrap().push('y');
        generator.exit(Outcome::Success).await.unwrap();
        // Exiting a finished generator does nothing.
        generator.exit(Outcome::Cancelled).await.unwrap();
    });
    assert_eq!(*seen.lock().unwrap(), "xy");
}

#[test]
fn entered_and_dropped_without_exit_drops_the_frame_once() {
    let seen = Arc::new(Mutex::new(String::new()));
    let mut generator = lend_string(seen.clone());
    block_on(async {
        generator.enter().await.unwrap().push('b');
    });
    drop(generator);
    // The exit never ran: nothing was recorded, and Miri checks the frame
    // (with the lent local) was freed exactly once.
    assert_eq!(*seen.lock().unwrap(), "");
}

/// The scope's own enter and exit futures (reachable, hidden, through
/// `__private`) drop what they hold when they finish: polled again, they
/// panic instead of touching it.
#[test]
fn a_scope_step_polled_after_it_finished_panics_instead_of_reusing_dropped_state() {
    use async_contextlib::__private::{Guard, InPlace, Scope};
    use async_contextlib::{Failure, nullcontext};
    use std::convert::Infallible;

    let mut scope = Scope::<u32>::new();
    let mut guard = Guard::new(nullcontext(7u32), InPlace);
    let convert = scope.converter(&guard, |e: Infallible| -> (Failure, u32) { match e {} });
    {
        let mut enter = pin!(scope.enter(&mut guard, convert));
        assert!(matches!(poll_once(enter.as_mut()), Poll::Ready(Some(7))));
        let again = catch_unwind(AssertUnwindSafe(|| poll_once(enter.as_mut())));
        let payload = again.expect_err("a second poll of a finished enter panics");
        assert!(panic_text(&*payload).contains("enter polled after it finished"));
    }
    {
        let mut exit = pin!(scope.exit(&mut guard, convert));
        assert!(poll_once(exit.as_mut()).is_ready());
        let again = catch_unwind(AssertUnwindSafe(|| poll_once(exit.as_mut())));
        let payload = again.expect_err("a second poll of a finished exit panics");
        assert!(panic_text(&*payload).contains("exit polled after it finished"));
    }
}

/// `Scope::finish` takes `&mut self` (issue 10: no move of the scope), so
/// the hidden API can call it twice or enter after it: that panics or
/// leaks, and never drops the scope's value or outcome twice.
#[test]
fn a_scope_used_after_it_finished_panics_instead_of_dropping_twice() {
    use async_contextlib::__private::{Guard, InPlace, Scope};
    use async_contextlib::{Failure, nullcontext};
    use std::convert::Infallible;
    use std::sync::Arc;

    let value = Arc::new(());
    let mut scope = Scope::<Arc<()>>::new();
    {
        let mut body = pin!(scope.body(std::future::ready(Arc::clone(&value)), |v| (
            v,
            async_contextlib::Outcome::Success
        ),));
        assert!(poll_once(body.as_mut()).is_ready());
    }
    let out = scope.finish();
    assert_eq!(Arc::strong_count(&value), 2);
    drop(out);
    let again = catch_unwind(AssertUnwindSafe(|| scope.finish()));
    let payload = again.expect_err("a second finish panics");
    assert!(panic_text(&*payload).contains("finished without a value"));
    // An enter after `finish` runs, and the scope's drop touches nothing.
    let mut guard = Guard::new(nullcontext(Arc::clone(&value)), InPlace);
    let convert = scope.converter(&guard, |e: Infallible| -> (Failure, Arc<()>) { match e {} });
    {
        let mut enter = pin!(scope.enter(&mut guard, convert));
        assert!(matches!(poll_once(enter.as_mut()), Poll::Ready(Some(_))));
    }
    // Exited here: a guard dropped entered would start the exit driver's
    // thread (no runtime), which outlives the test.
    {
        let mut exit = pin!(scope.exit(&mut guard, convert));
        assert!(poll_once(exit.as_mut()).is_ready());
    }
    drop(scope);
    drop(guard);
    // Each clone was dropped once: none twice (Miri), none kept.
    assert_eq!(Arc::strong_count(&value), 1);
}

/// Ready at once with `out`; if `armed`, panics in its drop once it has
/// finished. Holds `alive`, so that its drops can be counted.
struct PanicsWhenDropped<T> {
    out: Option<T>,
    armed: bool,
    _alive: Arc<()>,
    what: &'static str,
}

impl<T: Unpin> Future for PanicsWhenDropped<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<T> {
        Poll::Ready(self.out.take().expect("polled once"))
    }
}

impl<T> Drop for PanicsWhenDropped<T> {
    fn drop(&mut self) {
        if self.armed && self.out.is_none() {
            panic!("{} panicked as it was dropped", self.what);
        }
    }
}

/// A manager whose finished enter (`in_enter`) or exit future panics as
/// it is dropped; `exits` logs its exits' outcomes.
struct Bomb {
    in_enter: bool,
    alive: Arc<()>,
    exits: Arc<Mutex<Vec<String>>>,
}

impl AsyncContextManager for Bomb {
    type Value<'a> = u32;
    type Error = std::convert::Infallible;

    fn enter(&mut self) -> impl Future<Output = Result<u32, Self::Error>> {
        PanicsWhenDropped {
            out: Some(Ok(7)),
            armed: self.in_enter,
            _alive: self.alive.clone(),
            what: "enter",
        }
    }

    fn exit(&mut self, outcome: Outcome) -> impl Future<Output = Result<(), Self::Error>> {
        self.exits.lock().unwrap().push(outcome.label().to_owned());
        PanicsWhenDropped {
            out: Some(Ok(())),
            armed: !self.in_enter,
            _alive: self.alive.clone(),
            what: "exit",
        }
    }
}

async_contextlib::send_manager!(Bomb);

#[test]
fn a_finished_enter_or_exit_that_panics_as_it_is_dropped_is_dropped_once_and_exited_once() {
    for in_enter in [true, false] {
        let alive = Arc::new(());
        let exits = Arc::new(Mutex::new(Vec::new()));
        let bomb = Bomb {
            in_enter,
            alive: alive.clone(),
            exits: exits.clone(),
        };
        let mut body_ran = false;
        let result = catch_unwind(AssertUnwindSafe(|| {
            block_on(async { with_scope!(bomb as v => { body_ran = true; v }) })
        }));
        let payload = result.expect_err("the panic resumes");
        let what = if in_enter { "enter" } else { "exit" };
        assert_eq!(
            panic_text(&*payload),
            format!("{what} panicked as it was dropped")
        );
        // Entered (its enter returned a value), so exited once; the block
        // runs only if the enter did not panic.
        let seen = exits.lock().unwrap().clone();
        if in_enter {
            assert!(!body_ran);
            assert_eq!(seen, ["panicked"]);
        } else {
            assert!(body_ran);
            assert_eq!(seen, ["success"]);
        }
        // Every future was dropped, once: only the manager's own clone is
        // left, with the manager gone.
        assert_eq!(Arc::strong_count(&alive), 1);
    }
}

#[test]
fn a_stack_entry_whose_finished_enter_or_exit_panics_as_it_is_dropped_is_exited_once() {
    use async_contextlib::{BoxError, ExitStack};
    for in_enter in [true, false] {
        let alive = Arc::new(());
        let exits = Arc::new(Mutex::new(Vec::new()));
        let bomb = Bomb {
            in_enter,
            alive: alive.clone(),
            exits: exits.clone(),
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            block_on(async {
                let r: Result<u32, BoxError> = with_scope!(ExitStack::new() as stack => {
                    Ok(stack.enter(bomb).await?)
                });
                r
            })
        }));
        let payload = result.expect_err("the panic resumes");
        let what = if in_enter { "enter" } else { "exit" };
        assert_eq!(
            panic_text(&*payload),
            format!("{what} panicked as it was dropped")
        );
        let seen = exits.lock().unwrap().clone();
        assert_eq!(seen, [if in_enter { "panicked" } else { "success" }]);
        assert_eq!(Arc::strong_count(&alive), 1);
    }
}
