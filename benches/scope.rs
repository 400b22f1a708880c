//! Times of one scope on the happy path, every variant of
//! `benches/common` in one run (`cargo bench --bench scope`), and of a
//! cancelled scope against one `tokio::spawn` of its exit. Instruction
//! counts of the same code: `benches/instructions.sh`.

mod common;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Waker};

use async_contextlib::{AsyncContextManager, Outcome, with_scope};
use common::*;
use criterion::{Criterion, criterion_group, criterion_main};

fn happy_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("scope");
    let mut r = Resource::default();
    macro_rules! bench {
        ($($name:literal => $f:ident),* $(,)?) => {
            $(group.bench_function($name, |b| b.iter(|| run($f(&mut r))));)*
        };
    }
    for_each_variant!(bench);
    group.finish();
    black_box(r.exits);
}

/// An owned hand-written manager: on cancellation its exit is detached.
struct Owned(u64);

impl AsyncContextManager for Owned {
    type Value<'a> = u64;
    type Error = std::convert::Infallible;

    async fn enter(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0)
    }

    async fn exit(&mut self, outcome: Outcome) -> Result<(), Self::Error> {
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
