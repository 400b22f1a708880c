//! The variants the benchmarks compare, shared by `benches/scope.rs`
//! (criterion, times) and `benches/instructions.rs` (callgrind,
//! instruction counts), so both measure the same code.
//!
//! Every future here completes without suspending, so each run polls the
//! whole scope once with a no-op waker: what is measured is the scope
//! machinery, not an executor. The resource is a counter bumped on enter
//! and exit by two `#[inline(never)]` async fns.

#![allow(dead_code, reason = "each bench uses a subset")]

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};

use async_contextlib::{AsyncContextManager, Outcome, async_context_manager, with_scope, yield_};
use futures::FutureExt;

/// Polls `fut` to its end. Always inlined, so that no variant pays for
/// moving its future into this harness by `memcpy` when LLVM chooses not
/// to inline it (measured: `nested_3` then swung between 848 and 1,013
/// instructions with unrelated changes to the library).
#[inline(always)]
#[allow(clippy::inline_always, reason = "see above")]
pub fn run<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("benchmark futures never suspend"),
    }
}

/// The resource every variant manages: a counter bumped on enter and exit.
#[derive(Default)]
pub struct Resource {
    pub value: u64,
    pub exits: u64,
}

#[inline(never)]
pub async fn acquire(r: &mut Resource) -> Result<&mut u64, Infallible> {
    r.value = black_box(r.value + 1);
    Ok(&mut r.value)
}

#[inline(never)]
pub async fn release(r: &mut Resource, ok: bool) -> Result<(), Infallible> {
    r.exits += u64::from(ok);
    Ok(())
}

// ---------------------------------------------------------------- (a) bare

/// (a) Enter and exit written by hand as two async calls: no promise on
/// panic or cancellation.
pub async fn bare(r: &mut Resource) -> u64 {
    let v = acquire(r).await.unwrap();
    let out = black_box(*v * 2);
    release(r, true).await.unwrap();
    out
}

// ---------------------------------------------------------------- (b) floor

thread_local! {
    static COUNTS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// What the floor gates its span and clock on (a subscriber's interest).
static DIAGNOSTICS: AtomicBool = AtomicBool::new(false);

/// Finishes the exit if the scope is dropped before it ran.
struct ExitGuard<'a> {
    resource: Option<&'a mut Resource>,
}

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.resource.take() {
            hand_over(r);
        }
    }
}

#[cold]
#[inline(never)]
fn hand_over(r: &mut Resource) {
    let _ = catch_unwind(AssertUnwindSafe(|| run(release(r, false))));
}

#[inline]
fn bump(entered: bool) {
    COUNTS.with(|c| {
        let (e, x) = c.get();
        c.set(if entered { (e + 1, x) } else { (e, x + 1) });
    });
}

/// (b) The floor (SPEC §7): the same enter and exit by hand, keeping the
/// same promises — `catch_unwind` around each step, a drop guard that
/// hands the exit over on cancellation, both counter bumps, the span and
/// clock gates.
pub async fn floor(r: &mut Resource) -> u64 {
    let diagnostics = DIAGNOSTICS.load(Relaxed);
    if diagnostics {
        black_box("span and clock");
    }
    let entered = AssertUnwindSafe(acquire(r)).catch_unwind().await;
    let Ok(Ok(v)) = entered else {
        unreachable!("the benchmark's enter succeeds")
    };
    let v = *v;
    bump(true);
    let mut guard = ExitGuard { resource: Some(r) };
    let out = catch_unwind(|| black_box(v * 2));
    let r = guard.resource.take().expect("armed");
    let exited = AssertUnwindSafe(release(r, out.is_ok()))
        .catch_unwind()
        .await;
    bump(false);
    if diagnostics {
        black_box("clock");
    }
    match (out, exited) {
        (Ok(out), Ok(Ok(()))) => out,
        _ => unreachable!("the benchmark's block and exit succeed"),
    }
}

// ---------------------------------------------------------------- (c) trait

/// The resource as a hand-written `AsyncContextManager`.
pub struct Manager<'a>(pub &'a mut Resource);

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

/// (c) The trait manager in `with_scope!`.
pub async fn trait_scope(r: &mut Resource) -> u64 {
    with_scope!(Manager(r) as v => { black_box(*v * 2) })
}

/// (c') The same, from a second call site.
pub async fn trait_scope_2(r: &mut Resource) -> u64 {
    with_scope!(Manager(r) as v => { black_box(*v * 2) })
}

/// Three nested trait managers in one scope.
pub async fn nested_3(r: &mut Resource) -> u64 {
    let (mut a, mut b) = (Resource::default(), Resource::default());
    with_scope!(Manager(r) as x, Manager(&mut a) as y, Manager(&mut b) as z => {
        black_box(*x + *y + *z)
    })
}

// ---------------------------------------------------------------- (d) generated

/// The resource as a generated manager.
#[async_context_manager]
pub async fn generated(r: &mut Resource) -> &mut u64 {
    let v = acquire(r).await.unwrap();
    let mut copy = *v;
    let outcome = yield_!(&mut copy);
    release(r, outcome.is_success()).await.unwrap();
}

/// (d) The generated manager in `with_scope!`.
pub async fn generated_scope(r: &mut Resource) -> u64 {
    with_scope!(generated(r) as v => { black_box(*v * 2) })
}

/// (d') The same, from a second call site.
pub async fn generated_scope_2(r: &mut Resource) -> u64 {
    with_scope!(generated(r) as v => { black_box(*v * 2) })
}

// ---------------------------------------------------------------- cancel path

/// An owned hand-written manager: on cancellation its exit is detached.
pub struct Owned(pub u64);

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

/// The cancel path's baseline (SPEC §7): one `tokio::spawn` of the
/// manager's exit, run by a yield. Call inside a current-thread runtime.
pub async fn spawn_of_the_exit() {
    let mut m = Owned(1);
    drop(tokio::spawn(
        async move { m.exit(Outcome::Cancelled).await },
    ));
    tokio::task::yield_now().await;
}

/// A scope over `Owned`, dropped while its block is suspended: its guard
/// hands the exit to the driver, which the yield lets run.
pub async fn cancelled_scope() {
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
}

/// The cancel path's two variants, by name, `n` times in one current-thread
/// runtime.
pub fn run_cancel_variant(name: &str, n: u64) -> Option<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    match name {
        "spawn" => rt.block_on(async {
            for _ in 0..n {
                spawn_of_the_exit().await;
            }
        }),
        "cancelled" => rt.block_on(async {
            for _ in 0..n {
                cancelled_scope().await;
            }
        }),
        _ => return None,
    }
    Some(())
}

/// Calls `$m! { "name" => fn, ... }` with every variant, so that each
/// bench lists them in one place.
#[macro_export]
macro_rules! for_each_variant {
    ($m:ident) => {
        $m! {
            "bare" => bare,
            "floor" => floor,
            "trait" => trait_scope,
            "trait_2" => trait_scope_2,
            "generated" => generated_scope,
            "generated_2" => generated_scope_2,
            "nested_3" => nested_3,
        }
    };
}

/// Every variant, by name, as a loop over `n` scopes.
pub fn run_variant(name: &str, n: u64) -> Option<u64> {
    let mut r = Resource::default();
    macro_rules! each {
        ($($name:literal => $f:ident),* $(,)?) => {
            match name {
                $($name => {
                    for _ in 0..n {
                        black_box(run($f(&mut r)));
                    }
                })*
                _ => return None,
            }
        };
    }
    for_each_variant!(each);
    Some(r.exits)
}

/// The size of each variant's future, in bytes.
pub fn sizes() -> Vec<(&'static str, usize)> {
    let mut r = Resource::default();
    let mut out = Vec::new();
    macro_rules! size {
        ($($name:literal => $f:ident),* $(,)?) => {
            $({
                let fut = $f(&mut r);
                out.push(($name, size_of_val(&fut)));
            })*
        };
    }
    for_each_variant!(size);
    out
}
