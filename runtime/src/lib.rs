//! Runtime of [`async-contextlib`](https://docs.rs/async-contextlib): the
//! [`AsyncContextManager`] trait, [`Outcome`], the scope guard that
//! `with_scope!` expands to, the state machine behind
//! `#[async_context_manager]`, and the cancellation-safe exit driver.
//!
//! Depend on `async-contextlib` instead; it re-exports everything public
//! here next to the macros.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::pedantic)]
// Allowed pedantic lints, with the reason:
#![allow(
    // Hidden items (`__private`, trait plumbing for generated code) return
    // `Result`s and may panic on internal invariants; the public API
    // documents its errors and panics in prose.
    clippy::missing_errors_doc,
    clippy::missing_panics_doc,
)]
#![doc(test(no_crate_inject, attr(deny(warnings))))]

// The four subsystems (see each folder's `mod.rs`), lowest first: the exit
// driver with its counters and diagnostics; the generator and its pool; the
// scope machinery; the library's own managers. The trait and `Outcome`
// stay at the root.
mod driver;
mod generator;
mod managers;
mod scope;

mod manager;
mod outcome;
pub mod testing;

pub use driver::diag::{set_slow_exit_limit, slow_exit_limit};
pub use driver::{
    Stats, StillPending, drain, drain_timeout, in_place_limit, set_in_place_limit, stats,
};
pub use manager::{AsyncContextManager, Deadline, OwnedManager, SendManager};
pub use managers::adapters::{AsyncClose, Closing, NullContext, closing, nullcontext};
pub use managers::boxed::{BoxFuture, BoxManager, BoxManagerRef};
pub use managers::cancel::{CancelledBy, TokenCancelled, cancelled_by};
pub use managers::from_sync::{FromSync, from_sync};
pub use managers::shield::{Shield, shield};
pub use managers::stack::{BoxError, ExitResult, ExitStack, LocalExitStack, StackRef};
pub use managers::sync::{
    Acquired, AcquiredOwned, Locked, LockedOwned, ReadLocked, SemaphoreClosed, WriteLocked,
    acquired, acquired_owned, locked, locked_owned, read_locked, write_locked,
};
pub use managers::task_group::{TaskError, TaskGroup, TaskGroupHandle};
pub use managers::timeout::{
    Elapsed, EnterError, EnterTimeout, MoveOn, MovedOn, Timeout, deadline, enter_timeout,
    move_on_after, move_on_at, timeout,
};
pub use outcome::{Failure, Outcome, Panic};

/// Run-time diagnostics beyond the counters of [`stats()`], all off by
/// default; while off, a manager's enter reads the switches once and each
/// later hook point tests one byte:
///
/// * [`set_blocking_limit`](diagnostics::set_blocking_limit) — a warning
///   when one poll of an enter or exit holds its thread too long (blocking
///   work in async code);
/// * [`track_scopes`](diagnostics::track_scopes) and
///   [`scopes`](diagnostics::scopes) — the managers held in scopes right
///   now, with phase and age; [`set_held_limit`](diagnostics::set_held_limit)
///   — a warning for one held too long;
/// * [`set_per_manager_stats`](diagnostics::set_per_manager_stats) and
///   [`manager_stats`](diagnostics::manager_stats) — the counters broken
///   down by manager name, with exit latency percentiles, for a metrics
///   system;
/// * the slow-exit warning ([`set_slow_exit_limit`]), on by default while
///   a subscriber wants warnings.
pub mod diagnostics {
    pub use crate::driver::diag::{set_slow_exit_limit, slow_exit_limit};
    pub use crate::driver::watch::{
        Latency, ManagerStats, Phase, ScopeInfo, manager_stats, reset_manager_stats, scopes,
        set_blocking_limit, set_held_limit, set_per_manager_stats, track_scopes,
    };
}

/// The types `#[async_context_manager]` fns return.
///
/// An `#[async_context_manager] async fn f(..) -> Result<&mut T, E>`
/// becomes `fn f(..) -> Generator<impl Future<Output = Result<(), E>>,
/// LendMut<T>, Owned>` (or `Borrowing`, if its signature borrows): a
/// manager whose `Value<'a>` is `&'a mut T` and whose `Error` is `E`.
pub mod generated {
    pub use crate::generator::{
        Borrowing, ByValue, GenOutput, Generator, LendMut, LendRef, Owned, YieldMode,
    };
}

/// Not public API: what generated code names, through the facade's
/// `__private`.
#[doc(hidden)]
pub mod __private {
    pub use crate::driver::Job;
    pub use crate::generator::{Co, YieldLend, YieldValue};
    pub use crate::managers::boxed::FromParts;
    pub use crate::managers::stack::{
        DetachBorrowing, DetachOwned, DetachedEntry, OwnedProbe, detach_entry, exit_reported,
    };
    pub use crate::scope::Scope;
    pub use crate::scope::dispatch::{
        Check, CheckManager, Classify, ClassifyDebug, ClassifyDisplay, ClassifyOpaque,
        ClassifyOther, Describe, DescribeDebug, DescribeDisplay, DescribeOpaque, PickDetach,
        PickInPlace, Probe, Raise, RaiseFrom, RaiseNever, RaiseNone,
    };
    pub use crate::scope::guard::{Detach, Detachable, Guard, InPlace, exit_task};

    /// An argument of an owned generated manager (a signature that seems
    /// to borrow nothing) proven `'static` in its own fn: a lifetime hidden
    /// in the argument's path (`Conn` for `Conn<'a>`) is an error there,
    /// naming the argument, rather than at every `with_scope!` that uses it.
    #[inline(always)]
    #[allow(clippy::inline_always, reason = "a no-op")]
    pub fn owned_argument<T: ?Sized + 'static>(_: &T) {}

    /// A shared borrow of a scope's guard once its block is done: where a
    /// value lent to the block outlives it, the one error (`scope.rs`).
    #[inline(always)]
    #[allow(clippy::inline_always, reason = "a no-op")]
    pub fn touch<T: ?Sized>(_: &T) {}

    /// The placeholder of a `yield_!` in a manager fn that failed to
    /// compile: its body is kept (type-checked, never run) so that one
    /// mistake gives one error.
    #[doc(hidden)]
    pub fn stub_yield<T>(_value: T) -> crate::Outcome {
        unreachable!("a stub of an #[async_context_manager] fn that did not compile")
    }
}
