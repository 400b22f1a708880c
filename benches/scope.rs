//! The cost of one scope on the happy path, against the same enter/exit
//! written by hand, measured in one run (`cargo bench --bench scope`).
//!
//! Every future here completes without suspending, so each iteration polls
//! the whole scope once with a no-op waker: what is measured is the scope
//! machinery, not an executor.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use async_contextlib::{AsyncContextManager, Outcome, async_context_manager, with_scope, yield_};
use criterion::{Criterion, criterion_group, criterion_main};

fn run<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("benchmark futures never suspend"),
    }
}

/// The resource every variant manages: a counter bumped on enter and exit.
#[derive(Default)]
struct Resource {
    value: u64,
    exits: u64,
}

#[inline(never)]
async fn acquire(r: &mut Resource) -> Result<&mut u64, Infallible> {
    r.value = black_box(r.value + 1);
    Ok(&mut r.value)
}

#[inline(never)]
async fn release(r: &mut Resource, ok: bool) -> Result<(), Infallible> {
    r.exits += u64::from(ok);
    Ok(())
}

/// Baseline: enter and exit written by hand as two async calls.
async fn by_hand(r: &mut Resource) -> u64 {
    let v = acquire(r).await.unwrap();
    let out = black_box(*v * 2);
    release(r, true).await.unwrap();
    out
}

/// The same resource as a hand-written `AsyncContextManager`.
struct Manager<'a>(&'a mut Resource);

impl AsyncContextManager for Manager<'_> {
    type Value<'b>
        = &'b mut u64
    where
        Self: 'b;
    type Error = Infallible;

    async fn enter(&mut self) -> Result<&mut u64, Infallible> {
        acquire(self.0).await
    }

    async fn exit(&mut self, outcome: Outcome) -> Result<(), Infallible> {
        release(self.0, outcome.is_success()).await
    }
}

async fn trait_scope(r: &mut Resource) -> u64 {
    with_scope!(Manager(r) as v => { black_box(*v * 2) })
}

/// The same resource as a generated manager.
#[async_context_manager]
async fn generated(r: &mut Resource) -> &mut u64 {
    let v = acquire(r).await.unwrap();
    let mut copy = *v;
    let outcome = yield_!(&mut copy);
    release(r, outcome.is_success()).await.unwrap();
}

async fn generated_scope(r: &mut Resource) -> u64 {
    with_scope!(generated(r) as v => { black_box(*v * 2) })
}

fn happy_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("scope");
    let mut r = Resource::default();
    group.bench_function("by_hand", |b| b.iter(|| run(by_hand(&mut r))));
    group.bench_function("trait_manager", |b| b.iter(|| run(trait_scope(&mut r))));
    group.bench_function("generated_manager", |b| {
        b.iter(|| run(generated_scope(&mut r)))
    });
    group.finish();
    black_box(r.exits);
}

/// An owned hand-written manager: on cancellation its exit is detached.
struct Owned(u64);

impl AsyncContextManager for Owned {
    type Value<'a> = u64;
    type Error = Infallible;

    async fn enter(&mut self) -> Result<u64, Infallible> {
        Ok(self.0)
    }

    async fn exit(&mut self, outcome: Outcome) -> Result<(), Infallible> {
        self.0 = black_box(self.0 + u64::from(!outcome.is_success()));
        Ok(())
    }
}

impl async_contextlib::OwnedManager for Owned {}

/// SPEC §7: a cancelled scope costs about one `tokio::spawn` of its
/// remaining exit. Both variants run in one `block_on` on a current-thread
/// runtime and yield once so the spawned task runs.
fn cancelled(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("cancel");
    group.bench_function("tokio_spawn_of_the_exit", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut m = Owned(1);
                drop(tokio::spawn(
                    async move { m.exit(Outcome::Cancelled).await },
                ));
                tokio::task::yield_now().await;
            });
        });
    });
    group.bench_function("cancelled_scope", |b| {
        b.iter(|| {
            rt.block_on(async {
                {
                    let scope = async {
                        with_scope!(Owned(1) as v => {
                            std::future::pending::<()>().await;
                            v
                        })
                    };
                    let mut scope = pin!(scope);
                    let pending = scope.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                    assert!(pending.is_pending());
                }
                tokio::task::yield_now().await;
            });
        });
    });
    group.finish();
}

criterion_group!(benches, happy_path, cancelled);
criterion_main!(benches);
