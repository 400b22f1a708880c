//! Diagnostics: slow-exit warnings and error reports, as `tracing` events.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::watch;

static SLOW_EXIT_NANOS: AtomicU64 = AtomicU64::new(10_000_000);

/// Sets how long an exit may take before a warning event reports it
/// (default 10 ms). `Duration::MAX` turns the warning off.
pub fn set_slow_exit_limit(limit: Duration) {
    let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
    SLOW_EXIT_NANOS.store(nanos, Relaxed);
}

/// Whether slow-exit warnings are on (the limit is not `Duration::MAX`).
pub(crate) fn slow_exit_on() -> bool {
    SLOW_EXIT_NANOS.load(Relaxed) != u64::MAX
}

/// The current slow-exit limit.
#[must_use]
pub fn slow_exit_limit() -> Duration {
    Duration::from_nanos(SLOW_EXIT_NANOS.load(Relaxed))
}

/// The debug-level span of an enter or exit, boxed — or nothing when no
/// subscriber wants it (one load and compare). A boxed option is 8 bytes
/// of future state where a `Span` is 40, and an empty one costs a null
/// check per poll.
macro_rules! span {
    ($($args:tt)*) => {{
        // One load and compare when no subscriber wants debug spans.
        if !::tracing::level_enabled!(::tracing::Level::DEBUG) {
            ::core::option::Option::None
        } else {
            let span = ::tracing::debug_span!($($args)*);
            if span.is_disabled() {
                ::core::option::Option::None
            } else {
                ::core::option::Option::Some(::std::boxed::Box::new(span))
            }
        }
    }};
}
pub(crate) use span;

/// Measures one exit, when a slow-exit warning could be emitted at all (a
/// subscriber wants warnings and the limit is not `Duration::MAX`) or exit
/// latencies are counted per manager; else it reads no clock.
///
/// For the warning alone it reads `CLOCK_MONOTONIC_COARSE` on Linux (a few
/// ns through the vDSO, against ~30 ns for `Instant::now`), whose
/// resolution is the kernel tick (1–4 ms): a latency is reported to within
/// one tick of the truth — plenty for a limit of 10 ms. Per-manager
/// latencies need better, and read the precise clock.
///
/// The start is kept shifted left by one, its low bit saying which clock.
#[derive(Clone, Copy)]
pub(crate) struct Clock(u64);

const PRECISE: u64 = 1;

impl Clock {
    /// No clock: nothing wants this exit timed.
    pub(crate) const OFF: Clock = Clock(0);

    #[inline]
    pub(crate) fn start() -> Clock {
        if !slow_exit_on() || !tracing::level_enabled!(tracing::Level::WARN) {
            return Clock::OFF;
        }
        Clock((now_nanos() << 1).max(2))
    }

    /// [`start`](Clock::start) on the precise clock, for an exit whose
    /// latency is counted per manager.
    #[cold]
    #[inline(never)]
    pub(crate) fn precise() -> Clock {
        Clock((precise_nanos() << 1 | PRECISE).max(2))
    }

    /// [`start`](Clock::start), or [`precise`](Clock::precise) when
    /// counting per manager (cold paths, which check the global switch).
    pub(crate) fn start_counted() -> Clock {
        if watch::per_manager() {
            Clock::precise()
        } else {
            Clock::start()
        }
    }

    /// Whether this clock times anything (see [`Clock::OFF`]).
    #[inline]
    pub(crate) fn is_on(self) -> bool {
        self.0 != 0
    }

    /// Emits a warning if the exit took longer than the limit; counts its
    /// latency if counting per manager.
    #[inline]
    pub(crate) fn check(self, name: &'static str, outcome: &'static str) {
        if self.0 == 0 {
            return;
        }
        self.measured(name, outcome);
    }

    #[cold]
    #[inline(never)]
    fn measured(self, name: &'static str, outcome: &'static str) {
        let now = if self.0 & PRECISE != 0 {
            precise_nanos()
        } else {
            now_nanos()
        };
        let elapsed = now.saturating_sub(self.0 >> 1);
        if self.0 & PRECISE != 0 {
            watch::count(name, watch::Event::Latency(elapsed));
        }
        if elapsed > SLOW_EXIT_NANOS.load(Relaxed) && tracing::level_enabled!(tracing::Level::WARN)
        {
            slow_exit(name, outcome, Duration::from_nanos(elapsed));
        }
    }
}

/// Nanoseconds on a precise monotonic clock, from a process-wide epoch.
fn precise_nanos() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX >> 1)
}

#[cfg(target_os = "linux")]
#[inline]
fn now_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE
    // exists on every Linux since 2.6.32 and the call cannot fail with it.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &raw mut ts) };
    #[allow(clippy::cast_sign_loss, reason = "a monotonic clock is never negative")]
    let nanos = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    nanos
}

#[cfg(not(target_os = "linux"))]
#[inline]
fn now_nanos() -> u64 {
    precise_nanos()
}

#[cold]
fn slow_exit(name: &'static str, outcome: &'static str, elapsed: Duration) {
    tracing::warn!(
        manager = name,
        outcome,
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        limit_us = u64::try_from(slow_exit_limit().as_micros()).unwrap_or(u64::MAX),
        "async-contextlib: slow exit"
    );
}

/// An exit error that cannot be returned (the scope already fails with
/// another error, or the exit ran detached).
#[cold]
pub(crate) fn report_exit_error(name: &'static str, context: &'static str, message: &str) {
    tracing::error!(
        manager = name,
        context,
        error = message,
        "async-contextlib: exit failed; reported here because the scope returns another error \
         or the exit ran after its scope"
    );
}

/// A task of a task group that failed after another one had (the scope
/// returns the first failure only).
#[cold]
pub(crate) fn report_task_failure(name: &'static str, message: &str) {
    tracing::warn!(
        manager = name,
        error = message,
        "async-contextlib: a task of the group failed after an earlier failure; reported here \
         because the scope returns the first one; counted in stats().exit_failures"
    );
}

/// An exit that could not run (or finish) in place.
#[cold]
pub(crate) fn report_abandoned(name: &'static str, why: &'static str) {
    tracing::error!(
        manager = name,
        reason = why,
        "async-contextlib: exit abandoned on cancellation; counted in stats().abandoned"
    );
    unmissable_exit(name, "abandoned on cancellation", why, "stats().abandoned");
}

/// Work handed to the driver (or finishing in place) that its runtime
/// dropped unfinished.
#[cold]
pub(crate) fn report_lost(name: &'static str, what: &'static str) {
    tracing::error!(
        manager = name,
        kind = what,
        "async-contextlib: work was dropped before it finished (its runtime shut down); \
         counted in stats().lost"
    );
    unmissable_exit(
        name,
        "lost",
        "its runtime shut down before it could finish",
        "stats().lost",
    );
}

/// `drain()` polled from inside work the driver holds: waiting would wait
/// for that work itself (and what is queued behind it), so it returned.
#[cold]
pub(crate) fn report_drain_in_exit() {
    tracing::error!(
        "async-contextlib: drain() was called from inside an exit (or shielded work) the \
         driver is running; it would wait for itself, so it returned at once"
    );
    unmissable("async_contextlib::drain", || {
        "async-contextlib: drain() was called from inside an exit (or shielded work) the \
         driver is running: it would wait for itself, so it returned at once."
            .to_owned()
    });
}

/// An exit that had to finish in place while exits queued before it (of
/// inner managers) were still running; they go on detached.
#[cold]
pub(crate) fn report_out_of_order(name: &'static str) {
    tracing::warn!(
        manager = name,
        "async-contextlib: exits of inner managers had not finished within the in-place limit \
         when this borrowing manager had to exit in place; they go on detached, after it"
    );
}

/// Abandoned and lost exits must be impossible to miss, also in a test run
/// without a `tracing` subscriber: then the first one of each manager is
/// written straight to the process's stderr (not through `eprintln!`, so
/// the test harness does not swallow it).
fn unmissable_exit(name: &'static str, what: &str, why: &str, counter: &str) {
    unmissable(name, || {
        format!(
            "async-contextlib: the exit of `{name}` was {what}: {why}. Counted in {counter}; \
             install a tracing subscriber to see every such event."
        )
    });
}

/// Writes `line` to stderr, once per `key`, when no subscriber shows errors.
fn unmissable(key: &'static str, line: impl FnOnce() -> String) {
    use std::io::Write;
    static SEEN: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    if tracing::enabled!(tracing::Level::ERROR) {
        return;
    }
    {
        let mut seen = SEEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(&key) {
            return;
        }
        seen.push(key);
    }
    let _ = writeln!(std::io::stderr().lock(), "{}", line());
}
