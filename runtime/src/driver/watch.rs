//! Opt-in diagnostics (the seeds' run-time hooks): blocking polls of an
//! enter or exit, the scopes held right now (and a warning for one held too
//! long), and the counters broken down by manager.
//!
//! All are off by default. While they are off and no `tracing` subscriber
//! wants spans or slow-exit warnings, a manager's enter pays one relaxed
//! load of [`HOOKS`] and one of `tracing`'s global level ([`Hooks::now`]),
//! and each later hook point a test of the byte that keeps the answer;
//! everything else (spans, clock reads, the registry, the per-manager
//! table) runs only when wanted, out of line. What is wanted is decided
//! when the enter starts: a subscriber installed mid-scope sees the scopes
//! that enter after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::diag::Clock;

/// Which hooks are on: [`BLOCKING`], [`TRACK`], [`PER_MANAGER`].
static HOOKS: AtomicU8 = AtomicU8::new(0);
const BLOCKING: u8 = 1;
const TRACK: u8 = 2;
const PER_MANAGER: u8 = 4;
/// Not a hook: a subscriber wants the debug spans of enters and exits.
const SPANS: u8 = 8;
/// Not a hook: a subscriber wants slow-exit warnings (and a limit is set).
const CLOCK: u8 = 16;
const HOOK_BITS: u8 = BLOCKING | TRACK | PER_MANAGER;

/// What diagnostics were wanted when a manager's enter started, kept in
/// its guard: the opt-in hooks, and whether a `tracing` subscriber wants
/// its spans and its slow-exit clock. Every later check is a test of this
/// byte, in memory the scope touches anyway; with nothing wanted, a scope
/// tests it once where it would make a span or read a clock (issue 10:
/// each `level_enabled!` and gate had cost its own loads and compares,
/// ~80 instructions per scope).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Hooks(u8);

impl Hooks {
    /// What is wanted now: one relaxed load of the hooks, one of
    /// `tracing`'s global level.
    #[inline]
    pub(crate) fn now() -> Hooks {
        let hooks = HOOKS.load(Relaxed);
        let level = tracing::level_filters::LevelFilter::current();
        if tracing::Level::WARN > level
            || tracing::Level::WARN > tracing::level_filters::STATIC_MAX_LEVEL
        {
            return Hooks(hooks);
        }
        Hooks(hooks | tracing_wants(level))
    }

    /// Any hook on (not counting spans and the clock).
    #[inline]
    pub(crate) fn any(self) -> bool {
        self.0 & HOOK_BITS != 0
    }

    /// Anything wanted at all: a hook, spans or the clock.
    #[inline]
    pub(crate) fn wanted(self) -> bool {
        self.0 != 0
    }

    /// A subscriber wants the debug spans.
    pub(crate) fn spans(self) -> bool {
        self.0 & SPANS != 0
    }

    /// A subscriber wants slow-exit warnings.
    pub(crate) fn clock(self) -> bool {
        self.0 & CLOCK != 0
    }

    #[inline]
    pub(crate) fn blocking(self) -> bool {
        self.0 & BLOCKING != 0
    }

    fn track(self) -> bool {
        self.0 & TRACK != 0
    }

    #[inline]
    pub(crate) fn per_manager(self) -> bool {
        self.0 & PER_MANAGER != 0
    }
}

/// What a watched manager's guard keeps: the hooks on when its enter
/// started. One byte; a tracked manager is keyed in the registry by this
/// value's address, fixed while its (pinned) scope runs.
#[derive(Clone, Copy, Default)]
pub(crate) struct Watched {
    pub(crate) hooks: Hooks,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "the address of the guard's byte is the registry key"
)]
impl Watched {
    fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Its enter starts.
    #[cold]
    #[inline(never)]
    pub(crate) fn start(&mut self, hooks: Hooks, name: &'static str) {
        self.hooks = hooks;
        if hooks.track() {
            register(self.key(), name);
        }
    }

    /// Its enter succeeded.
    #[cold]
    #[inline(never)]
    pub(crate) fn entered(&self, name: &'static str) {
        if self.hooks.per_manager() {
            count(name, Event::Entered);
        }
        if self.hooks.track() {
            set_phase(self.key(), Phase::Body);
        }
    }

    /// Its exit starts: the clock to time it with.
    #[cold]
    #[inline(never)]
    pub(crate) fn exiting(&self) -> Clock {
        if self.hooks.track() {
            set_phase(self.key(), Phase::Exiting);
        }
        if self.hooks.per_manager() {
            Clock::precise()
        } else {
            Clock::start()
        }
    }

    /// Its exit ran to its end.
    #[cold]
    #[inline(never)]
    pub(crate) fn exited(&mut self, name: &'static str) {
        if self.hooks.per_manager() {
            count(name, Event::Exited);
        }
        self.end();
    }

    /// Its scope is done with it (failed enter, exit done, guard dropped).
    #[cold]
    #[inline(never)]
    pub(crate) fn end(&mut self) {
        if self.hooks.track() {
            unregister(self.key());
            self.hooks.0 &= !TRACK;
        }
    }
}

/// The spans and the clock, for a subscriber at `level` (warn or finer).
#[cold]
#[inline(never)]
fn tracing_wants(level: tracing::level_filters::LevelFilter) -> u8 {
    let spans = tracing::Level::DEBUG <= level
        && tracing::Level::DEBUG <= tracing::level_filters::STATIC_MAX_LEVEL;
    let clock = super::diag::slow_exit_on();
    (if spans { SPANS } else { 0 }) | (if clock { CLOCK } else { 0 })
}

fn switch(bit: u8, on: bool) {
    if on {
        HOOKS.fetch_or(bit, Relaxed);
    } else {
        HOOKS.fetch_and(!bit, Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// ------------------------------------------------------------ blocking polls

static BLOCKING_NANOS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Warns when one poll of a manager's enter or exit holds its thread longer
/// than `limit` (asyncio's debug-mode slow-callback warning): a sign of
/// blocking work (file or socket I/O, a `std` lock, heavy computation) in
/// async code, which stalls every task on that thread. The warning names
/// the manager, the phase and the time, and suggests
/// [`from_sync`](crate::from_sync) or `tokio::task::spawn_blocking`.
///
/// `None` (the default) turns it off; then it costs one relaxed load per
/// poll. On, each poll of an enter or exit reads the clock twice.
///
/// ```
/// use std::time::Duration;
/// async_contextlib::diagnostics::set_blocking_limit(Some(Duration::from_millis(20)));
/// # async_contextlib::diagnostics::set_blocking_limit(None);
/// ```
pub fn set_blocking_limit(limit: Option<Duration>) {
    BLOCKING_NANOS.store(limit.map_or(u64::MAX, nanos), Relaxed);
    switch(BLOCKING, limit.is_some());
}

/// One poll of an enter or exit that some diagnostic wants (out of line:
/// the hot path tests one byte and polls): inside its span, if any, and
/// timed if the blocking hook is on.
#[inline(never)]
pub(crate) fn poll_watched<T>(
    hooks: Hooks,
    span: Option<&tracing::Span>,
    name: &'static str,
    phase: Phase,
    poll: impl FnOnce() -> T,
) -> T {
    let _entered = span.map(tracing::Span::enter);
    if hooks.blocking() {
        timed(name, phase, poll)
    } else {
        poll()
    }
}

/// Runs one poll of an enter or exit, timed; warns if it held the thread
/// longer than the limit.
#[cold]
#[inline(never)]
pub(crate) fn timed<T>(name: &'static str, phase: Phase, poll: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = poll();
    let held = started.elapsed();
    let limit = BLOCKING_NANOS.load(Relaxed);
    if nanos(held) > limit {
        tracing::warn!(
            manager = name,
            phase = phase.as_str(),
            held_us = u64::try_from(held.as_micros()).unwrap_or(u64::MAX),
            limit_us = limit / 1_000,
            "async-contextlib: one poll of this manager's {} held its thread for {:?}: \
             blocking work in async code stalls every task on the thread; run it with \
             `async_contextlib::from_sync` or `tokio::task::spawn_blocking`",
            phase.as_str(),
            held,
        );
    }
    out
}

// ------------------------------------------------------------ held scopes

/// Where a tracked manager is in its scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Its enter is running.
    Entering,
    /// Entered: the block (or the managers after it) runs.
    Body,
    /// Its exit is running.
    Exiting,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Entering => "enter",
            Phase::Body => "body",
            Phase::Exiting => "exit",
        }
    }
}

/// One manager of a scope held right now, from [`scopes`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScopeInfo {
    /// The manager's name.
    pub name: &'static str,
    /// Where it is.
    pub phase: Phase,
    /// How long ago its enter started.
    pub age: Duration,
}

struct Held {
    name: &'static str,
    phase: Phase,
    since: Instant,
    warned: bool,
}

/// The managers being tracked, by the address of their guard's [`Watched`].
static REGISTRY: Mutex<Option<HashMap<usize, Held>>> = Mutex::new(None);

/// Records, from now on, every manager entered in a `with_scope!` (its
/// name, phase and age) so that [`scopes`] can list them: the seeds'
/// watch for leaked or stuck scopes. Off by default; on, each manager
/// entered takes a global lock three times (enter, exit start, end).
///
/// ```
/// async_contextlib::diagnostics::track_scopes(true);
/// # async_contextlib::diagnostics::track_scopes(false);
/// ```
pub fn track_scopes(on: bool) {
    switch(TRACK, on || HELD_NANOS.load(Relaxed) != u64::MAX);
}

/// The managers held in scopes right now (entered while tracking was on),
/// oldest first. Empty while [`track_scopes`] is off.
#[must_use]
pub fn scopes() -> Vec<ScopeInfo> {
    let now = Instant::now();
    let mut out: Vec<ScopeInfo> = lock(&REGISTRY)
        .iter()
        .flat_map(HashMap::values)
        .map(|h| ScopeInfo {
            name: h.name,
            phase: h.phase,
            age: now.saturating_duration_since(h.since),
        })
        .collect();
    out.sort_by_key(|s| std::cmp::Reverse(s.age));
    out
}

fn register(key: usize, name: &'static str) {
    let held = Held {
        name,
        phase: Phase::Entering,
        since: Instant::now(),
        warned: false,
    };
    lock(&REGISTRY)
        .get_or_insert_with(HashMap::new)
        .insert(key, held);
}

fn set_phase(key: usize, phase: Phase) {
    if let Some(held) = lock(&REGISTRY).as_mut().and_then(|r| r.get_mut(&key)) {
        held.phase = phase;
    }
}

fn unregister(key: usize) {
    if let Some(registry) = lock(&REGISTRY).as_mut() {
        registry.remove(&key);
    }
}

static HELD_NANOS: AtomicU64 = AtomicU64::new(u64::MAX);
static WATCHER: AtomicBool = AtomicBool::new(false);

/// Warns, once per manager, when a scope has held it longer than `limit`
/// (a transaction left open for minutes, a lock never released): a watch
/// thread looks at the tracked scopes a few times per `limit` and emits a
/// warning naming the manager, its phase and age. Turns [`track_scopes`]
/// on; `None` (the default) turns the warning off.
///
/// ```
/// use std::time::Duration;
/// async_contextlib::diagnostics::set_held_limit(Some(Duration::from_secs(60)));
/// # async_contextlib::diagnostics::set_held_limit(None);
/// ```
pub fn set_held_limit(limit: Option<Duration>) {
    HELD_NANOS.store(limit.map_or(u64::MAX, nanos), Relaxed);
    if limit.is_some() {
        switch(TRACK, true);
        if !WATCHER.swap(true, Relaxed) {
            let started = std::thread::Builder::new()
                .name("async-contextlib-watch".into())
                .spawn(watch_held);
            if started.is_err() {
                WATCHER.store(false, Relaxed);
                tracing::error!(
                    "async-contextlib: could not start the thread that watches held scopes; \
                     set_held_limit has no effect"
                );
            }
        }
    }
}

/// The watch thread: runs while a held limit is set.
fn watch_held() {
    loop {
        let limit = HELD_NANOS.load(Relaxed);
        if limit == u64::MAX {
            WATCHER.store(false, Relaxed);
            // A limit set again between the load and the store restarts it.
            if HELD_NANOS.load(Relaxed) == u64::MAX || WATCHER.swap(true, Relaxed) {
                return;
            }
            continue;
        }
        let limit = Duration::from_nanos(limit);
        let now = Instant::now();
        let mut late = Vec::new();
        for held in lock(&REGISTRY).iter_mut().flat_map(HashMap::values_mut) {
            let age = now.saturating_duration_since(held.since);
            if !held.warned && age > limit {
                held.warned = true;
                late.push((held.name, held.phase, age));
            }
        }
        for (name, phase, age) in late {
            tracing::warn!(
                manager = name,
                phase = phase.as_str(),
                age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
                limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                "async-contextlib: a scope has held this manager for {:?} (in its {}), \
                 longer than the held limit: a scope left open or stuck?",
                age,
                phase.as_str(),
            );
        }
        std::thread::sleep((limit / 4).clamp(Duration::from_millis(1), Duration::from_millis(250)));
    }
}

// ------------------------------------------------------------ per manager

/// One manager's counters, from [`manager_stats`]: [`Stats`](crate::Stats)
/// by name, plus its exit latency.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagerStats {
    /// The manager's name (`AsyncContextManager::name`).
    pub name: &'static str,
    /// Enters that succeeded.
    pub entered: u64,
    /// Exits that ran to their end.
    pub exited: u64,
    /// Exits (or enters) that failed or panicked.
    pub exit_failures: u64,
    /// Exits abandoned on cancellation.
    pub abandoned: u64,
    /// Exits lost at runtime shutdown.
    pub lost: u64,
    /// How long its exits took (in-scope and cancelled ones that ran in
    /// the scope's drop; detached exits are not timed).
    pub exit_latency: Latency,
}

/// Exit latency percentiles, from a log-scale histogram (each figure is
/// the upper bound of its bucket: within 19% above the truth); `max` is
/// exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Latency {
    /// Exits timed.
    pub count: u64,
    /// The median.
    pub p50: Duration,
    /// The 90th percentile.
    pub p90: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The slowest.
    pub max: Duration,
}

/// Four buckets per power of two of nanoseconds.
const BUCKETS: usize = 64 * 4;

#[derive(Clone)]
struct Counters {
    entered: u64,
    exited: u64,
    exit_failures: u64,
    abandoned: u64,
    lost: u64,
    histogram: Box<[u64; BUCKETS]>,
    max: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            entered: 0,
            exited: 0,
            exit_failures: 0,
            abandoned: 0,
            lost: 0,
            histogram: Box::new([0; BUCKETS]),
            max: 0,
        }
    }
}

fn bucket(ns: u64) -> usize {
    if ns < 4 {
        return usize::try_from(ns).unwrap_or(0);
    }
    let log = ns.ilog2();
    let quarter = (ns >> (log - 2)) & 3;
    (log as usize) * 4 + usize::try_from(quarter).unwrap_or(0)
}

/// The largest latency that falls in `bucket`.
fn bucket_top(bucket: usize) -> u64 {
    match bucket {
        // 0..=3 ns exactly; 4..8 are never used (4 ns is bucket 8).
        0..4 => bucket as u64,
        4..8 => 3,
        _ => {
            let (log, quarter) = (bucket / 4, (bucket % 4) as u64);
            let base = 1u64 << log;
            base - 1 + (quarter + 1) * (base >> 2)
        }
    }
}

impl Counters {
    fn latency(&self) -> Latency {
        let count: u64 = self.histogram.iter().sum();
        let at = |p: u64| {
            let rank = (count * p).div_ceil(100).max(1);
            let mut seen = 0;
            for (i, n) in self.histogram.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Duration::from_nanos(bucket_top(i).min(self.max));
                }
            }
            Duration::from_nanos(self.max)
        };
        if count == 0 {
            return Latency::default();
        }
        Latency {
            count,
            p50: at(50),
            p90: at(90),
            p99: at(99),
            max: Duration::from_nanos(self.max),
        }
    }
}

static TABLE: Mutex<Option<HashMap<&'static str, Counters>>> = Mutex::new(None);

/// Counts, from now on, every manager by its name as well (what
/// [`manager_stats`] returns): the seeds' "teardown SLA" and "pool drains
/// under load" checks as data. Off by default; on, each counted event
/// takes a global lock and each exit reads the clock twice.
///
/// Export the table to a metrics system from a periodic task, e.g. with the
/// `metrics` crate:
///
/// ```text
/// for m in async_contextlib::diagnostics::manager_stats() {
///     metrics::gauge!("scope_active", "manager" => m.name)
///         .set((m.entered - m.exited - m.abandoned - m.lost) as f64);
///     metrics::counter!("scope_exit_failures", "manager" => m.name).absolute(m.exit_failures);
///     metrics::gauge!("scope_exit_p99_seconds", "manager" => m.name)
///         .set(m.exit_latency.p99.as_secs_f64());
/// }
/// ```
pub fn set_per_manager_stats(on: bool) {
    switch(PER_MANAGER, on);
}

/// The per-manager counters gathered while [`set_per_manager_stats`] was
/// on, by name.
#[must_use]
pub fn manager_stats() -> Vec<ManagerStats> {
    let table = lock(&TABLE);
    let mut out: Vec<ManagerStats> = table
        .iter()
        .flatten()
        .map(|(name, c)| ManagerStats {
            name,
            entered: c.entered,
            exited: c.exited,
            exit_failures: c.exit_failures,
            abandoned: c.abandoned,
            lost: c.lost,
            exit_latency: c.latency(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(b.name));
    out
}

/// Forgets every per-manager counter gathered so far.
pub fn reset_manager_stats() {
    *lock(&TABLE) = None;
}

/// Whether events are counted per manager now.
#[inline]
pub(crate) fn per_manager() -> bool {
    HOOKS.load(Relaxed) & PER_MANAGER != 0
}

/// A counted event of one manager.
#[derive(Clone, Copy)]
pub(crate) enum Event {
    Entered,
    Exited,
    Failed,
    Abandoned,
    Lost,
    /// An exit took this many nanoseconds.
    Latency(u64),
}

/// Counts `event` for `name`.
#[cold]
#[inline(never)]
pub(crate) fn count(name: &'static str, event: Event) {
    let mut table = lock(&TABLE);
    let c = table
        .get_or_insert_with(HashMap::new)
        .entry(name)
        .or_default();
    match event {
        Event::Entered => c.entered += 1,
        Event::Exited => c.exited += 1,
        Event::Failed => c.exit_failures += 1,
        Event::Abandoned => c.abandoned += 1,
        Event::Lost => c.lost += 1,
        Event::Latency(ns) => {
            c.histogram[bucket(ns).min(BUCKETS - 1)] += 1;
            c.max = c.max.max(ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values_within_a_quarter() {
        for ns in [
            0,
            1,
            3,
            4,
            5,
            7,
            8,
            100,
            1_000,
            12_345,
            1 << 40,
            u64::MAX / 2,
        ] {
            let b = bucket(ns);
            assert!(
                bucket_top(b) >= ns,
                "{ns}: bucket {b} tops at {}",
                bucket_top(b)
            );
            if ns >= 8 {
                assert!(bucket_top(b) <= ns + ns / 4, "{ns}: {}", bucket_top(b));
            }
            if b > 0 {
                assert!(
                    bucket_top(b - 1) < ns,
                    "{ns}: lower bucket tops at {}",
                    bucket_top(b - 1)
                );
            }
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut c = Counters::default();
        for ns in 1..=100u64 {
            c.histogram[bucket(ns * 1_000)] += 1;
            c.max = c.max.max(ns * 1_000);
        }
        let l = c.latency();
        assert_eq!(l.count, 100);
        assert_eq!(l.max, Duration::from_micros(100));
        assert!(l.p50 >= Duration::from_micros(50) && l.p50 <= Duration::from_micros(63));
        assert!(l.p99 >= Duration::from_micros(99) && l.p99 <= Duration::from_micros(100));
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max);
    }
}
