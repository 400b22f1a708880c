//! The `ExitStack`'s raw node list and the values it lends, small enough
//! for Miri (stacked and tree borrows).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use async_contextlib::{ExitStack, LocalExitStack, async_context_manager, nullcontext, yield_};
use futures_executor::block_on;

type Log = Arc<Mutex<Vec<String>>>;

#[async_context_manager]
async fn lend(id: u32, log: Log) -> &mut Vec<u32> {
    let mut v = vec![id];
    let outcome = yield_!(&mut v);
    log.lock()
        .unwrap()
        .push(format!("{id} {} {v:?}", outcome.label()));
}

#[async_context_manager]
async fn fails_to_enter(log: Log) -> Result<&mut u32, String> {
    let mut n = 0;
    if log.lock().unwrap().is_empty() {
        Err("no".to_string())?;
    }
    yield_!(&mut n);
}

#[async_context_manager]
async fn slow(log: Log) -> &mut String {
    let mut s = String::from("never lent");
    suspend().await;
    let _ = yield_!(&mut s);
    log.lock().unwrap().push(s);
}

#[async_context_manager]
async fn panics() -> &mut u8 {
    let mut n = 0;
    if n == 0 {
        panic!("enter panicked");
    }
    yield_!(&mut n);
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
fn several_lent_values_at_once_then_close() {
    let log = Log::default();
    block_on(async {
        let mut stack = ExitStack::new();
        let a = stack.enter(lend(1, log.clone())).await.unwrap();
        let b = stack.enter(lend(2, log.clone())).await.unwrap();
        let n = stack.enter(nullcontext(7)).await.unwrap();
        suspend().await;
        a.push(n);
        b.push(a[0]);
        a.push(b[0]);
        stack.close().await.unwrap();
    });
    assert_eq!(
        *log.lock().unwrap(),
        ["2 success [2, 1]", "1 success [1, 7, 2]"]
    );
}

#[test]
fn a_failed_or_dropped_enter_frees_its_node() {
    let log = Log::default();
    block_on(async {
        let mut stack = ExitStack::new();
        assert!(stack.enter(fails_to_enter(log.clone())).await.is_err());
        {
            // An enter polled once (it suspends before its yield), then
            // dropped mid-way.
            let mut enter = pin!(stack.enter(slow(log.clone())));
            let poll = enter.as_mut().poll(&mut Context::from_waker(Waker::noop()));
            assert!(poll.is_pending());
        }
        // An enter that panics.
        let panicked = catch_unwind(AssertUnwindSafe(|| block_on(stack.enter(panics()))));
        assert!(panicked.is_err());
        let v = stack.enter(lend(3, log.clone())).await.unwrap();
        v.push(4);
        stack.close().await.unwrap();
    });
    assert_eq!(*log.lock().unwrap(), ["3 success [3, 4]"]);
}

#[test]
fn pop_all_moves_the_nodes() {
    let log = Log::default();
    block_on(async {
        let mut stack = ExitStack::new();
        stack.enter(lend(1, log.clone())).await.unwrap().push(10);
        let mut moved = stack.pop_all();
        stack.close().await.unwrap();
        assert!(log.lock().unwrap().is_empty());
        moved.close().await.unwrap();
    });
    assert_eq!(*log.lock().unwrap(), ["1 success [1, 10]"]);
}

#[test]
fn a_stack_crosses_threads_between_enters() {
    let log = Log::default();
    let mut stack = ExitStack::new();
    block_on(async {
        stack.enter(lend(1, log.clone())).await.unwrap().push(5);
    });
    let l = log.clone();
    std::thread::spawn(move || {
        block_on(async {
            stack.enter(lend(2, l)).await.unwrap().push(6);
            stack.close().await.unwrap();
        });
    })
    .join()
    .unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["2 success [2, 6]", "1 success [1, 5]"]
    );
}

#[test]
fn many_entries_unwind_in_a_loop() {
    let count = Arc::new(Mutex::new(0_u32));
    block_on(async {
        let mut stack = LocalExitStack::new();
        for i in 0..200_u32 {
            let c = count.clone();
            stack.push_callback(async move { *c.lock().unwrap() += i });
            stack.enter(nullcontext(i)).await.unwrap();
        }
        stack.close().await.unwrap();
    });
    assert_eq!(*count.lock().unwrap(), (0..200).sum::<u32>());
}
