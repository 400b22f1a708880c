//! Process-wide counters of scopes and exits, cheap enough to leave on.
//!
//! The two counters every scope touches (`entered`, `exited`) are kept per
//! thread: the owning thread bumps them with a plain load and store (no
//! locked instruction, no shared cache line), and [`stats()`] sums every
//! live thread's counters plus those folded in by threads that have ended.
//! The rest move only on cold paths (cancellation, failures).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use super::watch::{self, Event};

/// One thread's hot counters. Only the owning thread writes them.
#[derive(Default)]
struct Local {
    entered: AtomicU64,
    exited: AtomicU64,
}

/// Registers a thread's counters, and folds them into `RETIRED` when the
/// thread ends.
struct Registered(Arc<Local>);

/// Every live thread's counters, and the totals of threads that ended.
struct Registry {
    live: Vec<Arc<Local>>,
    retired_entered: u64,
    retired_exited: u64,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    live: Vec::new(),
    retired_entered: 0,
    retired_exited: 0,
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// One counter summed over live threads, ended threads, and bumps made
    /// during thread teardown.
    fn total(&self, retired: u64, late: &AtomicU64, pick: fn(&Local) -> &AtomicU64) -> u64 {
        retired + late.load(Relaxed) + self.live.iter().map(|l| pick(l).load(Relaxed)).sum::<u64>()
    }
}

impl Registered {
    fn new() -> Registered {
        let local = Arc::new(Local::default());
        registry().live.push(local.clone());
        Registered(local)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut registry = registry();
        registry.retired_entered += self.0.entered.load(Relaxed);
        registry.retired_exited += self.0.exited.load(Relaxed);
        registry.live.retain(|l| !Arc::ptr_eq(l, &self.0));
    }
}

thread_local! {
    static LOCAL: Registered = Registered::new();
}

/// Bumps this thread's counter; during thread teardown, the shared fallback.
#[inline]
fn bump(pick: fn(&Local) -> &AtomicU64, fallback: &AtomicU64) {
    let bumped = LOCAL.try_with(|local| {
        let counter = pick(&local.0);
        // Only this thread writes `counter`: a plain load and store suffice.
        counter.store(counter.load(Relaxed) + 1, Relaxed);
    });
    if bumped.is_err() {
        fallback.fetch_add(1, Relaxed);
    }
}

static LATE_ENTERED: AtomicU64 = AtomicU64::new(0);
static LATE_EXITED: AtomicU64 = AtomicU64::new(0);
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
    let (entered, exited, abandoned, lost_exits) = {
        let registry = registry();
        let exited = registry.total(registry.retired_exited, &LATE_EXITED, |l| &l.exited);
        let abandoned = ABANDONED.load(Relaxed);
        let lost_exits = LOST_EXITS.load(Relaxed);
        let entered = registry.total(registry.retired_entered, &LATE_ENTERED, |l| &l.entered);
        (entered, exited, abandoned, lost_exits)
    };
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

/// Counts an entered manager (and, if on, under its name).
pub(crate) fn entered(name: &'static str) {
    count_entered();
    if watch::per_manager() {
        watch::count(name, Event::Entered);
    }
}

/// Counts an exited manager (and, if on, under its name).
pub(crate) fn exited(name: &'static str) {
    count_exited();
    if watch::per_manager() {
        watch::count(name, Event::Exited);
    }
}

/// [`entered`] for the scope's happy path, which checks its hooks itself
/// (once per manager, see `watch::Hooks`).
#[inline]
pub(crate) fn count_entered() {
    bump(|l| &l.entered, &LATE_ENTERED);
}

/// [`exited`] for the scope's happy path.
#[inline]
pub(crate) fn count_exited() {
    bump(|l| &l.exited, &LATE_EXITED);
}

pub(crate) fn exit_failed(name: &'static str) {
    EXIT_FAILURES.fetch_add(1, Relaxed);
    if watch::per_manager() {
        watch::count(name, Event::Failed);
    }
}

pub(crate) fn abandoned(name: &'static str) {
    ABANDONED.fetch_add(1, Relaxed);
    if watch::per_manager() {
        watch::count(name, Event::Abandoned);
    }
}

pub(crate) fn pending_add() {
    PENDING.fetch_add(1, Relaxed);
}

pub(crate) fn pending_sub() {
    PENDING.fetch_sub(1, Relaxed);
}

/// `manager`: whether the lost work was a manager's exit (vs. a shielded future).
pub(crate) fn lost(name: &'static str, manager: bool) {
    LOST.fetch_add(1, Relaxed);
    if manager {
        LOST_EXITS.fetch_add(1, Relaxed);
        if watch::per_manager() {
            watch::count(name, Event::Lost);
        }
    }
}
