//! Process-wide counters of scopes and exits, cheap enough to leave on.
//!
//! The two counters every scope touches (`entered`, `exited`) are sharded
//! per thread over cache-line-padded relaxed atomics, so that a busy
//! multi-thread runtime does not bounce one cache line between cores. The
//! rest move only on cold paths (cancellation, failures).

use std::cell::Cell;
use std::sync::atomic::{
    AtomicU64, AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed},
};

const SHARDS: usize = 16;

#[repr(align(128))]
struct Padded(AtomicU64);

struct Sharded([Padded; SHARDS]);

impl Sharded {
    const fn new() -> Sharded {
        Sharded([const { Padded(AtomicU64::new(0)) }; SHARDS])
    }

    #[inline]
    fn add(&self, n: u64) {
        self.0[shard()].0.fetch_add(n, Relaxed);
    }

    fn sum(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Relaxed)).sum()
    }
}

#[inline]
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Relaxed) % SHARDS;
            s.set(i);
        }
        i
    })
}

static ENTERED: Sharded = Sharded::new();
static EXITED: Sharded = Sharded::new();
static PENDING: AtomicU64 = AtomicU64::new(0);
static EXIT_FAILURES: AtomicU64 = AtomicU64::new(0);
static ABANDONED: AtomicU64 = AtomicU64::new(0);
static LOST: AtomicU64 = AtomicU64::new(0);

/// A snapshot of the process-wide counters, from [`stats()`].
///
/// Counters only grow, except `active` and `pending`, which are gauges.
/// Every entered manager ends up in exactly one of `exited`, `abandoned` or
/// `lost`; until then it is `active`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Managers whose enter succeeded.
    pub entered: u64,
    /// Managers whose exit ran to its end (successfully or not).
    pub exited: u64,
    /// Managers entered and not yet exited, abandoned or lost.
    pub active: u64,
    /// Exits (and shielded futures) handed to the exit driver, not yet finished.
    pub pending: u64,
    /// Exits that returned an error or panicked.
    pub exit_failures: u64,
    /// Exits of borrowing managers that could not run on cancellation
    /// (no multi-thread runtime to finish them in place).
    pub abandoned: u64,
    /// Exits (and shielded futures) handed to the driver that never finished,
    /// because their runtime shut down or refused them.
    pub lost: u64,
}

/// Reads the process-wide counters.
///
/// ```
/// let s = async_contextlib::stats();
/// assert!(s.exited + s.abandoned + s.lost <= s.entered);
/// ```
#[must_use]
pub fn stats() -> Stats {
    // Read the "ends" before `entered`, so that a concurrent scope can make
    // `active` too high for a moment but never underflow it.
    let exited = EXITED.sum();
    let abandoned = ABANDONED.load(Relaxed);
    let lost_exits = LOST_EXITS.load(Relaxed);
    let entered = ENTERED.sum();
    Stats {
        entered,
        exited,
        active: entered.saturating_sub(exited + abandoned + lost_exits),
        pending: PENDING.load(Relaxed),
        exit_failures: EXIT_FAILURES.load(Relaxed),
        abandoned,
        lost: LOST.load(Relaxed),
    }
}

/// Lost exits of managers (as opposed to lost shielded futures, which were
/// never entered managers); kept apart so `active` stays exact.
static LOST_EXITS: AtomicU64 = AtomicU64::new(0);

#[inline]
pub(crate) fn entered() {
    ENTERED.add(1);
}

#[inline]
pub(crate) fn exited() {
    EXITED.add(1);
}

pub(crate) fn exit_failed() {
    EXIT_FAILURES.fetch_add(1, Relaxed);
}

pub(crate) fn abandoned() {
    ABANDONED.fetch_add(1, Relaxed);
}

pub(crate) fn pending_add() {
    PENDING.fetch_add(1, Relaxed);
}

/// Release: what a finished job did happens-before a `drain` that sees the
/// count reach zero (and, with it, the caller's own checks after `drain`).
pub(crate) fn pending_sub() -> u64 {
    PENDING.fetch_sub(1, AcqRel) - 1
}

pub(crate) fn pending() -> u64 {
    PENDING.load(Acquire)
}

/// `manager`: whether the lost work was a manager's exit (vs. a shielded future).
pub(crate) fn lost(manager: bool) {
    LOST.fetch_add(1, Relaxed);
    if manager {
        LOST_EXITS.fetch_add(1, Relaxed);
    }
}
