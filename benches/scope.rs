//! Times of one scope on the happy path, every variant of
//! `benches/common` in one run (`cargo bench --bench scope`), and of a
//! cancelled scope against one `tokio::spawn` of its exit. Instruction
//! counts of the same code: `benches/instructions.sh`.

mod common;

use std::hint::black_box;

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

/// SPEC §7: a cancelled scope costs about one `tokio::spawn` of its
/// remaining exit. Both variants run in one `block_on` on a current-thread
/// runtime and yield once so the spawned task runs.
fn cancelled(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("cancel");
    group.bench_function("tokio_spawn_of_the_exit", |b| {
        b.iter(|| rt.block_on(spawn_of_the_exit()));
    });
    group.bench_function("cancelled_scope", |b| {
        b.iter(|| rt.block_on(cancelled_scope()));
    });
    group.finish();
}

criterion_group!(benches, happy_path, cancelled);
criterion_main!(benches);
