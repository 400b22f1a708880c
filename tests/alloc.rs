//! Heap allocations per scope on the happy path, counted with a counting
//! global allocator (SPEC §7): a hand-written manager in `with_scope!`
//! allocates nothing; a generated manager at most once per scope, and —
//! with the generator pool warm — not at all.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use async_contextlib::{AsyncContextManager, Outcome, async_context_manager, with_scope, yield_};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread while `f` runs.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

fn run<F: Future>(fut: F) -> F::Output {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("these futures never suspend"),
    }
}

struct Counter {
    n: u64,
}

impl AsyncContextManager for Counter {
    type Value<'a> = &'a mut u64;
    type Error = Infallible;

    async fn enter(&mut self) -> Result<&mut u64, Infallible> {
        Ok(&mut self.n)
    }

    async fn exit(&mut self, outcome: Outcome) -> Result<(), Infallible> {
        assert!(outcome.is_success());
        Ok(())
    }
}

#[async_context_manager]
async fn generated(start: u64) -> &mut u64 {
    let mut n = start;
    let outcome = yield_!(&mut n);
    assert!(outcome.is_success());
}

const SCOPES: u64 = 1_000;

#[test]
fn hand_written_manager_allocates_nothing() {
    // Warm up thread-locals (stats shard, tracing callsites).
    run(async { with_scope!(Counter { n: 0 } as n => { *n += 1 }) });
    let count = allocations(|| {
        for i in 0..SCOPES {
            let v = run(async { with_scope!(Counter { n: i } as n => { *n += 1; *n }) });
            assert_eq!(v, i + 1);
        }
    });
    assert_eq!(count, 0, "{count} allocations for {SCOPES} scopes");
}

#[test]
fn generated_manager_allocates_nothing_in_steady_state() {
    run(async { with_scope!(generated(0) as n => { *n += 1 }) });
    let count = allocations(|| {
        for i in 0..SCOPES {
            let v = run(async { with_scope!(generated(i) as n => { *n += 1; *n }) });
            assert_eq!(v, i + 1);
        }
    });
    // SPEC §7 allows one allocation per scope; the per-thread pool of
    // generator blocks brings it to none once warm.
    assert_eq!(count, 0, "{count} allocations for {SCOPES} scopes");
}

#[test]
fn nested_hand_written_managers_allocate_nothing() {
    run(async { with_scope!(Counter { n: 0 }, Counter { n: 0 } => {}) });
    let count = allocations(|| {
        for _ in 0..SCOPES {
            let v: Result<u64, std::io::Error> = run(async {
                with_scope!(Counter { n: 1 } as a, Counter { n: 2 } as b, Counter { n: 3 } as c => {
                    Ok(*a + *b + *c)
                })
            });
            assert_eq!(v.unwrap(), 6);
        }
    });
    assert_eq!(count, 0, "{count} allocations for {SCOPES} scopes");
}

#[test]
fn a_boxed_manager_allocates_as_documented() {
    fn owned(n: u64) -> async_contextlib::BoxManager<u64, Infallible> {
        async_contextlib::box_manager!(Counter { n })
    }
    fn borrowing(c: &mut Counter) -> async_contextlib::BoxManagerRef<'_, u64, Infallible> {
        async_contextlib::box_manager!(c)
    }
    run(async { with_scope!(owned(0) as n => { *n += 1 }) });
    let count = allocations(|| {
        for i in 0..SCOPES {
            let v = run(async { with_scope!(owned(i) as n => { *n += 1; *n }) });
            assert_eq!(v, i + 1);
        }
    });
    // The manager, its enter future, its exit future, and the owned exit
    // the scope boxes so that a cut exit can be handed to the driver.
    assert_eq!(count, 4 * SCOPES, "{count} allocations for {SCOPES} scopes");

    let count = allocations(|| {
        for i in 0..SCOPES {
            let mut counter = Counter { n: i };
            let v = run(async { with_scope!(borrowing(&mut counter) as n => { *n += 1; *n }) });
            assert_eq!(v, i + 1);
        }
    });
    // A borrowing one's exit is never boxed by the scope.
    assert_eq!(count, 3 * SCOPES, "{count} allocations for {SCOPES} scopes");
}
