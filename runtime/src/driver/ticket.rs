//! What the driver holds right now, by name: every detached job and every
//! exit finishing in place carries a [`Ticket`] for as long as it lives.
//! `drain` waits for none to be left; `drain_timeout` names those that are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use slab::Slab;
use tokio::sync::Notify;

use super::{diag, stats};

/// What a ticket stands for, for counting and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The detached exit of an entered manager.
    Exit,
    /// A future passed to [`shield`](crate::shield).
    Shield,
    /// The exit of a borrowing manager, finishing in place (its outcome is
    /// counted by whoever runs it).
    InPlace,
    /// Blocking work that outlived the scope that started it (a `from_sync`
    /// enter that could not be cut), finishing on the blocking pool.
    Blocking,
    /// The unwinding of a cancelled `ExitStack` of owned entries (each
    /// entry counts its own exit, or its loss, as the stack unwinds or is
    /// dropped).
    Stack,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Exit => "detached exit",
            Kind::Shield => "shielded future",
            Kind::InPlace => "in-place exit",
            Kind::Blocking => "blocking exit",
            Kind::Stack => "detached exit stack",
        }
    }
}

/// Live tickets (everything `drain` waits for).
static LIVE: AtomicU64 = AtomicU64::new(0);
pub(crate) static DRAINED: Notify = Notify::const_new();

/// The names of the live tickets, for `drain_timeout`'s report: a slab (a
/// free list over a `Vec`), so that a ticket costs an index, not a hash,
/// on the cancel path (`benches/instructions.sh cancelled`).
fn registry() -> MutexGuard<'static, Slab<&'static str>> {
    static REGISTRY: Mutex<Slab<&'static str>> = Mutex::new(Slab::new());
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts work as held while it lives. Dropped before [`Ticket::done`],
/// detached work is counted `lost` and reported with its name.
#[derive(Debug)]
pub(crate) struct Ticket {
    key: usize,
    name: &'static str,
    kind: Kind,
    done: bool,
}

impl Ticket {
    pub(crate) fn new(name: &'static str, kind: Kind) -> Ticket {
        let key = registry().insert(name);
        LIVE.fetch_add(1, Ordering::Relaxed);
        if kind != Kind::InPlace {
            stats::pending_add();
        }
        Ticket {
            key,
            name,
            kind,
            done: false,
        }
    }

    /// The work finished (its outcome was counted by its runner).
    pub(crate) fn done(&mut self) {
        self.done = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        registry().try_remove(self.key);
        if self.kind != Kind::InPlace {
            // A stack's entries count (and report) their own loss, when
            // the unwinding that holds them is dropped.
            if !self.done && self.kind != Kind::Stack {
                stats::lost(self.name, matches!(self.kind, Kind::Exit | Kind::Blocking));
                diag::report_lost(self.name, self.kind.label());
            }
            stats::pending_sub();
        }
        // Release: what the work did happens-before a `drain` that sees
        // the count reach zero.
        if LIVE.fetch_sub(1, Ordering::AcqRel) == 1 {
            DRAINED.notify_waiters();
        }
    }
}

thread_local! {
    /// While a job drops its unfinished work: `Some(false)` if that work
    /// may hand the counting of its end over ([`hand_off`]), `Some(true)`
    /// once it has; `None` otherwise.
    static HANDOFF: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with the hand-off in `state`, then restores what it was;
/// returns what `f` returned and the state it left.
fn with_handoff<R>(state: Option<bool>, f: impl FnOnce() -> R) -> (R, Option<bool>) {
    let _restore = super::SetFor::new(&HANDOFF, state);
    let out = f();
    (out, HANDOFF.try_with(std::cell::Cell::get).ok().flatten())
}

/// Drops a job's unfinished work (`drop_work`), letting it hand the
/// counting of its end over if `accepts` (the job's manager says its exit
/// counts itself: `AsyncContextManager::__EXIT_COUNTS_ITSELF`); says
/// whether it did (the job's ticket is then not counted lost).
pub(crate) fn dropping(accepts: bool, drop_work: impl FnOnce()) -> bool {
    with_handoff(accepts.then_some(false), drop_work).1 == Some(true)
}

/// Runs `f` (other work: an exit finished in place) where no hand-off is
/// offered, whatever is being dropped around it.
pub(crate) fn refusing<R>(f: impl FnOnce() -> R) -> R {
    with_handoff(None, f).0
}

/// Called by an exit dropped in flight that finishes elsewhere and counts
/// its own end (a blocking exit already handed to a blocking thread): true
/// if the job dropping it takes that over — once per job, so that the end
/// is counted once.
pub(crate) fn hand_off() -> bool {
    HANDOFF
        .try_with(|h| {
            let offered = h.get() == Some(false);
            if offered {
                h.set(Some(true));
            }
            offered
        })
        .unwrap_or(false)
}

/// How many tickets are alive.
pub(crate) fn live() -> u64 {
    LIVE.load(Ordering::Acquire)
}

/// The names of what is held now, sorted.
pub(crate) fn names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = registry().iter().map(|(_, name)| *name).collect();
    names.sort_unstable();
    names
}
