//! Finishing borrowed work before a drop returns — an exit that borrows
//! from the caller cannot outlive the dropped future — on any executor,
//! with an upper bound, and never by blocking on a runtime that is going
//! away.
//!
//! The ladder, tried in order:
//!
//! 1. **The runtime is shutting down** (a probe task spawned on it finishes
//!    at once): the drivers are going away, so nothing is waited for. The
//!    work is polled once — what needs no reactor finishes — and is
//!    otherwise `lost`.
//! 2. **A multi-thread tokio worker**: the worker is handed over with
//!    `block_in_place`, so the runtime's timers and I/O keep running while
//!    this thread waits for the work.
//! 3. **Anywhere else** — a current-thread runtime, a `LocalSet`, a nested
//!    executor, no runtime at all: the work is polled here, on this thread,
//!    by a small executor that needs no thread-local and nests in any
//!    other. Most exits (returning a connection, releasing a lock) finish
//!    at once. One that waits on this thread's own reactor cannot progress
//!    while the thread waits, and is abandoned at the bound. With no
//!    runtime, the driver's own runtime is entered, so timers work.
//!
//! Every wait ends at [`in_place_limit`] (default 1 s, set with
//! [`set_in_place_limit`]); past it the work is dropped, and its caller
//! counts and reports it as abandoned.

use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, Once, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};

use super::cascade::{self, Node};
use super::ticket::{Kind, Ticket};
use super::{diag, fallback, spawn, stats};
use crate::Panic;
use crate::outcome::Payload;

static LIMIT_NANOS: AtomicU64 = AtomicU64::new(1_000_000_000);

/// Sets how long a cancelled scope may wait for an exit it must finish in
/// place — a borrowing manager's exit — before the exit is abandoned,
/// counted in [`stats`](crate::stats)`().abandoned` and reported (default
/// 1 s). The bound keeps a stuck exit from blocking its thread, and a
/// runtime from being dropped, forever.
pub fn set_in_place_limit(limit: Duration) {
    LIMIT_NANOS.store(u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX), Relaxed);
}

/// The current bound on in-place exits; see [`set_in_place_limit`].
#[must_use]
pub fn in_place_limit() -> Duration {
    Duration::from_nanos(LIMIT_NANOS.load(Relaxed))
}

/// How an in-place run ended.
pub(crate) enum Ran<T> {
    /// The work finished with this.
    Done(T),
    /// The bound passed first; the work was dropped.
    TimedOut,
    /// The runtime is shutting down; the work was dropped.
    ShuttingDown,
}

/// Finishes `work` (the exit of a manager of the scope at `addr`) before
/// returning, after what the scope collected so far (its inner exits), so
/// that the innermost-first order holds. `work` must not panic (the caller
/// catches its panics).
pub(crate) fn finish<F: Future>(addr: usize, name: &'static str, work: F) -> Ran<F::Output> {
    let ticket = Ticket::new(name, Kind::InPlace);
    finish_after(ticket, cascade::take(addr), name, work)
}

/// [`finish`] for a value dropped inside whatever scope is being dropped
/// (see [`cascade::take_innermost`]), not a manager of a known scope.
pub(crate) fn finish_innermost<F: Future>(name: &'static str, work: F) -> Ran<F::Output> {
    let ticket = Ticket::new(name, Kind::InPlace);
    finish_after(ticket, cascade::take_innermost(), name, work)
}

fn finish_after<F: Future>(
    mut ticket: Ticket,
    inner: Option<Node>,
    name: &'static str,
    work: F,
) -> Ran<F::Output> {
    // Finished here, whatever is being dropped around: no hand-off.
    let ran = super::ticket::refusing(|| {
        cascade::barrier(|| {
            let _running = super::Running::enter();
            // Boxed (a cold path) so that a panic in its drop can be caught.
            let mut work = Box::pin(work);
            let ran = run(inner, work.as_mut(), name);
            if catch_unwind(AssertUnwindSafe(move || drop(work))).is_err() {
                diag::report_exit_error(name, "in place", "its exit panicked while being dropped");
            }
            ran
        })
    });
    ticket.done();
    ran
}

fn run<F: Future + ?Sized>(
    inner: Option<Node>,
    mut work: Pin<&mut F>,
    name: &'static str,
) -> Ran<F::Output> {
    let handle = Handle::try_current().ok();
    if handle.as_ref().is_some_and(shutting_down) {
        // The one poll its runtime gives it, as a dropped job's.
        let _last = super::last_chance_flag();
        if let Some(mut inner) = inner {
            let _ = poll_once(inner.as_mut());
        }
        return match poll_once(work) {
            Poll::Ready(out) => Ran::Done(out),
            Poll::Pending => Ran::ShuttingDown,
        };
    }
    // No runtime here: enter the driver's, so that timers in the exit work.
    let fallback = if handle.is_none() { fallback() } else { None };
    let _entered = fallback.as_ref().and_then(|h| silently(|| h.enter()).ok());
    let deadline = Instant::now()
        .checked_add(in_place_limit())
        .unwrap_or_else(far_future);
    if let Some(mut inner) = inner {
        if block_here(inner.as_mut(), deadline).is_none() {
            // Nothing is lost: the rest goes on detached.
            diag::report_out_of_order(name);
            spawn(inner);
        }
    }
    match block_here(work.as_mut(), deadline) {
        Some(out) => Ran::Done(out),
        None => Ran::TimedOut,
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(60 * 60 * 24 * 365)
}

/// Whether the runtime behind `handle` is shutting down: a task spawned on
/// it then finishes (is dropped) at once (tokio#4231); on some versions the
/// spawn itself panics (tokio#3043). The probe never finishes by itself (an
/// empty one could be run to its end by another worker before we look),
/// and is aborted once looked at.
pub(crate) fn shutting_down(handle: &Handle) -> bool {
    silently(|| {
        let probe = handle.spawn(std::future::pending::<()>());
        let finished = probe.is_finished();
        probe.abort();
        finished
    })
    .unwrap_or(true)
}

/// Polls `fut` until it finishes or `deadline` passes, handing the worker
/// over on a multi-thread runtime.
fn block_here<F: Future + ?Sized>(mut fut: Pin<&mut F>, deadline: Instant) -> Option<F::Output> {
    let mut out = None;
    if can_hand_over() {
        let mut ran = false;
        // `block_in_place` refuses (panics, before running the closure) in
        // a `LocalSet` and in a few other states; that refusal is expected
        // and silenced, and the work is then run below instead.
        let handed = silently(|| {
            tokio::task::block_in_place(|| {
                ran = true;
                out = Some(loud(|| run_here(fut.as_mut(), deadline)));
            });
        });
        if handed.is_ok() || ran {
            return out.flatten();
        }
    }
    let _stalled = Stalled::enter();
    run_here(fut, deadline)
}

thread_local! {
    /// How many in-place runs this thread is in without its worker handed
    /// over (see [`stalls_runtime`]).
    static STALLED: Cell<u32> = const { Cell::new(0) };
}

/// Marks this thread, while it lives, as polling work in place without
/// having handed its worker over.
struct Stalled(bool);

impl Stalled {
    fn enter() -> Stalled {
        Stalled(STALLED.try_with(|n| n.set(n.get() + 1)).is_ok())
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        if self.0 {
            let _ = STALLED.try_with(|n| n.set(n.get() - 1));
        }
    }
}

/// Whether this thread is finishing work in place without having handed
/// its worker over: a current-thread runtime it drives makes no progress
/// (its tasks do not run) until that work ends. An exit that would wait
/// for such tasks hands the wait to the driver instead.
pub(crate) fn stalls_runtime() -> bool {
    STALLED.try_with(|n| n.get() > 0).unwrap_or(false)
}

pub(crate) fn can_hand_over() -> bool {
    !std::thread::panicking()
        && Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
}

/// Polls `fut` once with a waker that does nothing.
pub(crate) fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// Wakes the thread waiting in [`run_here`]: a flag and a condvar, no
/// thread-local (it works during thread-local teardown too).
#[derive(Default)]
struct Signal {
    woken: Mutex<bool>,
    cvar: Condvar,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        *self.woken.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.cvar.notify_one();
    }
}

/// A minimal `block_on` with a deadline, on this thread.
///
/// It also polls again after a quiet spell, without a wake: on a runtime
/// thread, tokio defers some wakes (`yield_now`, an exhausted coop budget)
/// to its scheduler's next tick, which never comes while the thread waits
/// here; a future must accept a spurious poll, and this one is cheap next
/// to a wake that never arrives. The budget is lifted too
/// (`tokio::task::unconstrained`), so tokio's own primitives do not yield.
fn run_here<F: Future + ?Sized>(fut: Pin<&mut F>, deadline: Instant) -> Option<F::Output> {
    let mut fut = tokio::task::unconstrained(fut);
    let signal = Arc::new(Signal::default());
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    let mut quiet = Duration::from_micros(100);
    loop {
        if let Poll::Ready(out) = Pin::new(&mut fut).poll(&mut cx) {
            return Some(out);
        }
        let mut woken = signal.woken.lock().unwrap_or_else(PoisonError::into_inner);
        if !*woken {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let wait = quiet.min(deadline - now);
            woken = signal
                .cvar
                .wait_timeout(woken, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if !*woken {
                quiet = (quiet * 2).min(Duration::from_millis(50));
            }
        }
        *woken = false;
    }
}

thread_local! {
    /// Set while this thread calls something whose panic is an expected
    /// refusal, not a bug (see [`silently`]).
    static SILENT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, catching a panic *without printing it*: for tokio calls that
/// refuse by panicking (`block_in_place` in a `LocalSet`, `spawn` during
/// shutdown). The first call installs a panic hook that defers to the one
/// it replaced except while this thread is in `silently`; user code run
/// from inside `f` is wrapped in [`loud`] so its panics still print.
pub(crate) fn silently<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    static HOOK: Once = Once::new();
    if !std::thread::panicking() {
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if SILENT.try_with(Cell::get) != Ok(true) {
                    previous(info);
                }
            }));
        });
    }
    let was = SILENT.try_with(|s| s.replace(true)).ok();
    let out = catch_unwind(AssertUnwindSafe(f));
    if let Some(was) = was {
        let _ = SILENT.try_with(|s| s.set(was));
    }
    out
}

/// Undoes [`silently`] for `f`.
fn loud<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(Option<bool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(was) = self.0 {
                let _ = SILENT.try_with(|s| s.set(was));
            }
        }
    }
    let _restore = Restore(SILENT.try_with(|s| s.replace(false)).ok());
    f()
}

/// The context of an exit stack's entries finished in place when dropped.
pub(crate) const STACK_DROPPED: &str = "exit stack dropped";

/// Counts and reports an exit the scope finished in place on cancellation.
pub(crate) fn record<E>(
    name: &'static str,
    context: &'static str,
    ran: Ran<Result<Result<(), E>, Payload>>,
) {
    let result = match ran {
        Ran::Done(result) => result,
        Ran::TimedOut => {
            stats::abandoned(name);
            diag::report_abandoned(
                name,
                if context == STACK_DROPPED {
                    "the exit did not finish within the in-place limit \
                     (async_contextlib::set_in_place_limit); a dropped exit stack finishes its \
                     entries in place, and on a current-thread runtime an exit that waits on \
                     that runtime's timers or I/O cannot progress then: close the stack \
                     (`stack.close().await`) where it can be awaited, run it on a multi-thread \
                     runtime, or `shield` the part of the exit that waits"
                } else {
                    "the exit did not finish within the in-place limit \
                     (async_contextlib::set_in_place_limit); on a current-thread runtime an exit \
                     that waits on that runtime's timers or I/O cannot progress while it is \
                     finished in place: make the manager owned (its signature borrowing nothing, \
                     or `impl OwnedManager`) so that it is detached instead"
                },
            );
            return;
        }
        Ran::ShuttingDown => {
            stats::lost(name, true);
            diag::report_lost(name, "in-place exit");
            return;
        }
    };
    if !matches!(result, Ok(Ok(()))) {
        stats::exit_failed(name);
        diag::report_exit_error(name, context, &describe_exit_failure::<E>(result.err()));
    }
    stats::exited(name);
}

/// Text for an exit failure seen where the error's type is generic: a
/// panic's message, or the error type's name.
fn describe_exit_failure<E>(panic: Option<Payload>) -> String {
    match panic {
        Some(payload) => format!("panicked: {}", Panic::from_payload(&*payload).message()),
        None => format!("an error of type `{}`", std::any::type_name::<E>()),
    }
}

/// [`record`] for a cleanup callback (not an entered manager): its failure
/// is reported and counted, but it is not counted as exited (it was never
/// entered), nor abandoned or lost.
pub(crate) fn record_callback<E: std::fmt::Display>(
    name: &'static str,
    ran: Ran<Result<Result<(), E>, Payload>>,
) {
    let failure = match ran {
        Ran::Done(Ok(Ok(()))) => return,
        Ran::Done(Ok(Err(error))) => error.to_string(),
        Ran::Done(Err(payload)) => {
            format!("panicked: {}", Panic::from_payload(&*payload).message())
        }
        Ran::TimedOut => "it did not finish within the in-place limit".to_owned(),
        Ran::ShuttingDown => "its runtime shut down before it could finish".to_owned(),
    };
    stats::exit_failed(name);
    diag::report_exit_error(name, "callback", &failure);
}
