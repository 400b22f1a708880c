//! Diagnostics: slow-exit warnings and error reports, as `tracing` events.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::Outcome;

static SLOW_EXIT_NANOS: AtomicU64 = AtomicU64::new(10_000_000);

/// Sets how long an exit may take before a warning event reports it
/// (default 10 ms). `Duration::MAX` turns the warning off.
pub fn set_slow_exit_limit(limit: Duration) {
    let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
    SLOW_EXIT_NANOS.store(nanos, Relaxed);
}

/// The current slow-exit limit.
#[must_use]
pub fn slow_exit_limit() -> Duration {
    Duration::from_nanos(SLOW_EXIT_NANOS.load(Relaxed))
}

/// Measures one exit.
pub(crate) struct Clock(Instant);

impl Clock {
    #[inline]
    pub(crate) fn start() -> Clock {
        Clock(Instant::now())
    }

    /// Emits a warning if the exit took longer than the limit.
    #[inline]
    pub(crate) fn check(self, name: &'static str, outcome: &Outcome) {
        let elapsed = self.0.elapsed();
        let limit = SLOW_EXIT_NANOS.load(Relaxed);
        if u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX) > limit {
            slow_exit(name, outcome, elapsed);
        }
    }
}

#[cold]
fn slow_exit(name: &'static str, outcome: &Outcome, elapsed: Duration) {
    tracing::warn!(
        manager = name,
        outcome = outcome.label(),
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

/// An exit that could not run at all.
#[cold]
pub(crate) fn report_abandoned(name: &'static str, why: &'static str) {
    tracing::error!(
        manager = name,
        reason = why,
        "async-contextlib: exit abandoned on cancellation; counted in stats().abandoned"
    );
}
