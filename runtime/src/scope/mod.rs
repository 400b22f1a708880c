//! The scope machinery: the life of one `with_scope!`.
//!
//! * `mod.rs` — [`Scope`], the scope's state, and the runners its
//!   expansion awaits (`enter`, `body`, `exit`);
//! * `guard.rs` — one manager's [`Guard`]: its state, and its exit when the
//!   scope is dropped;
//! * `step.rs` — the futures the runners are made of (`Step`, `Bounded`,
//!   `Handover`);
//! * `dispatch.rs` — call-site dispatch (autoref) for the expansion.
//!
//! Imports run one way: `mod.rs` → `guard.rs` → `step.rs` → the driver.
//!
//! `with_scope!` expands to straight-line code over a [`Guard`] per manager
//! and one [`Scope`], which holds what unwinding needs: the scope's value so
//! far, the outcome the next exit sees, a caught panic, the active
//! deadline. Its runners are the scope's only await points, so a drop of the
//! scope's future always happens inside one of them, and each opens the
//! scope's frame on the driver's cascade before anything else is dropped
//! (see `step.rs`). Every call into a manager — `name`, `deadline`, `enter`,
//! `exit` — happens inside `catch_unwind`: a manager that panics, before
//! or after returning its future, is a `Panicked` outcome for the others.

pub(crate) mod dispatch;
pub(crate) mod guard;
pub(crate) mod step;

use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use self::guard::{Detach, Guard, Meta, State};
use self::step::{
    Active, Bound, Bounded, Bounds, Caught, Code, Handover, Lazy, Plain, Rare, Step, Stepped,
};
use crate::driver::diag::{self, Clock};
use crate::driver::watch::{self, Hooks, Phase, Watched};
use crate::driver::{cascade, in_place, stats};
use crate::outcome::{Kind, Payload};
use crate::{AsyncContextManager, Deadline, Failure, Outcome, Panic};
use tokio_util::sync::CancellationToken;

/// The state of one `with_scope!` while it runs and unwinds.
#[allow(
    missing_debug_implementations,
    reason = "hidden; generic over values that need not be Debug"
)]
pub struct Scope<R> {
    // Dropped by hand (`finish`, or the cold path of `drop`), so that the
    // scope's drop glue is one flag check on the happy path.
    result: ManuallyDrop<Option<R>>,
    outcome: ManuallyDrop<Outcome>,
    // Boxed (one word): only a panic pays for it.
    panic: ManuallyDrop<Option<Box<Payload>>>,
    depth: u32,
    /// The active deadline and the cancellation tokens of the entered
    /// `timeout`, `move_on_*` and `cancelled_by` managers.
    bounds: Bounds,
    /// Set when a deadline cut the body: the depth of the manager that owns it.
    cut: Option<u32>,
    finished: bool,
    /// The scope's result is a manager's exit error (reported if dropped).
    exit_error: bool,
}

impl<R> Default for Scope<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> Drop for Scope<R> {
    #[inline]
    fn drop(&mut self) {
        if !self.finished {
            dropped_mid_flight(self);
        }
    }
}

/// Dropped mid-flight: the runner in flight opened the frame (or the
/// guards did, if the drop hit an `.await` inside a manager expression).
/// Its work starts now, or joins its parent's.
#[cold]
#[inline(never)]
fn dropped_mid_flight<R>(scope: &mut Scope<R>) {
    // Cancelled while exiting: a failure it was to return reaches no one.
    const CANCELLED: &str = "its scope was cancelled before it could return this";
    scope.finished = true;
    match (&*scope.outcome, &*scope.panic) {
        (_, Some(payload)) => diag::report_exit_error(
            "async_contextlib::with_scope",
            CANCELLED,
            &format!("panicked: {}", Panic::from_payload(&***payload).message()),
        ),
        (Outcome::Failed(failure), None) if scope.exit_error => {
            diag::report_exit_error("async_contextlib::with_scope", CANCELLED, failure.message());
        }
        _ => {}
    }
    cascade::close(scope.addr());
    // SAFETY: dropped once, here; `finished` keeps `finish` from them.
    unsafe {
        ManuallyDrop::drop(&mut scope.result);
        ManuallyDrop::drop(&mut scope.outcome);
        ManuallyDrop::drop(&mut scope.panic);
    }
}

/// A manager's enter starts with some diagnostic wanted: its hooks, and
/// its span if a subscriber wants spans.
#[cold]
#[inline(never)]
fn enter_diagnostics<E>(
    meta: &mut Meta<E>,
    hooks: Hooks,
    name: &'static str,
) -> Option<Box<tracing::Span>> {
    meta.watched.start(hooks, name);
    if hooks.spans() {
        diag::span!("enter", manager = name)
    } else {
        None
    }
}

/// An exit starts with some diagnostic wanted: its clock (slow-exit
/// warning, latency per manager), its outcome's kind for the warning, and
/// its span.
#[cold]
#[inline(never)]
#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "the address of the guard's byte is the registry key"
)]
fn exit_diagnostics(
    watched: &Watched,
    name: &'static str,
    outcome: &Outcome,
) -> (Clock, Kind, Option<Box<tracing::Span>>) {
    let hooks = watched.hooks;
    let clock = if hooks.any() {
        watched.exiting()
    } else if hooks.clock() {
        Clock::start()
    } else {
        Clock::OFF
    };
    let span = if hooks.spans() {
        diag::span!("exit", manager = name, outcome = outcome.label())
    } else {
        None
    };
    (clock, outcome.kind(), span)
}

/// An exit ran to its end with some diagnostic wanted: the hooks' end of
/// it, and the slow-exit check of its clock.
#[cold]
#[inline(never)]
fn exited_diagnostics(watched: &mut Watched, name: &'static str, clock: Clock, kind: Kind) {
    if watched.hooks.any() {
        watched.exited(name);
    }
    if clock.is_on() {
        clock.check(name, kind.label());
    }
}

/// Drops an outcome, out of line unless it is a success (which holds
/// nothing).
#[inline]
fn drop_outcome(outcome: Outcome) {
    if outcome.is_success() {
        std::mem::forget(outcome);
    } else {
        drop_outcome_slow(outcome);
    }
}

#[cold]
#[inline(never)]
fn drop_outcome_slow(outcome: Outcome) {
    drop(outcome);
}

impl<R> Scope<R> {
    /// A scope with nothing entered.
    #[inline]
    #[must_use]
    pub fn new() -> Self {
        Scope {
            result: ManuallyDrop::new(None),
            outcome: ManuallyDrop::new(Outcome::Success),
            panic: ManuallyDrop::new(None),
            depth: 0,
            bounds: Bounds::new(),
            cut: None,
            finished: false,
            exit_error: false,
        }
    }

    fn addr(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Fixes the type of a manager's error converter (written at the call
    /// site, where the error's type is concrete) so it can be used twice.
    #[inline]
    pub fn converter<M, D, C>(&self, _guard: &Guard<M, D>, convert: C) -> C
    where
        M: AsyncContextManager,
        D: Detach<M>,
        C: Fn(M::Error) -> (Failure, R) + Copy,
    {
        convert
    }

    /// Enters the guard's manager. `None`: it failed or panicked (recorded
    /// for the exits of the managers before it) or a deadline cut it.
    #[inline]
    pub fn enter<'s, 'g, M, D, C>(
        &'s mut self,
        guard: &'g mut Guard<M, D>,
        convert: C,
    ) -> impl Future<Output = Option<M::Value<'g>>> + use<'s, 'g, R, M, D, C>
    where
        M: AsyncContextManager,
        D: Detach<M>,
        C: FnOnce(M::Error) -> (Failure, R),
    {
        let addr = self.addr();
        let (manager, meta) = guard.parts();
        meta.scope = addr;
        if M::__MOVES_ON {
            meta.moves_on = true;
        }
        // User code: a panic here is the manager's, caught like one in
        // its enter.
        let prelude = catch_unwind(AssertUnwindSafe(|| {
            (manager.name(), manager.deadline(), manager.__cut_by())
        }));
        let (name, limit, started) = match prelude {
            Ok((name, deadline, token)) => {
                let limit = match (deadline, token) {
                    (Some(deadline), token) => Some(Limit::Deadline(deadline, token)),
                    (None, Some((token, error))) => Some(Limit::Token(token, error)),
                    (None, None) => None,
                };
                (name, limit, true)
            }
            Err(payload) => (self.enter_panicked(payload), None, false),
        };
        meta.name = name;
        // One gate for every diagnostic (hooks, span, the exit's clock).
        let hooks = Hooks::now();
        let span = if hooks.wanted() && started {
            enter_diagnostics(meta, hooks, name)
        } else {
            None
        };
        // Built in the struct (issue 10: built before it and moved in, the
        // step was copied, 64 bytes for a trait manager).
        let bounded = if started {
            Some(Bounded::new(
                Lazy::new(move || manager.enter()),
                addr,
                &self.bounds,
            ))
        } else {
            None
        };
        Enter {
            scope: self,
            meta,
            convert: Some(convert),
            limit: ManuallyDrop::new(Rare::new(limit)),
            span: ManuallyDrop::new(Rare::new(span)),
            finished: false,
            bounded: ManuallyDrop::new(bounded),
        }
    }

    /// Runs the scope's block; `classify` turns its output into the
    /// scope's value and the [`Outcome`] the exits see.
    #[inline]
    pub fn body<B, K>(
        &mut self,
        body: B,
        classify: K,
    ) -> impl Future<Output = ()> + use<'_, R, B, K>
    where
        // The block's value is the scope's: so that, with `R` known from
        // the context (see `expected`), `classify` sees a known type.
        B: Future<Output = R>,
        // `Copy` (the expansion's closure captures nothing): called by
        // value, with no `Option` to take.
        K: FnOnce(R) -> (R, Outcome) + Copy,
    {
        let addr = self.addr();
        let bounded = Bounded::new(Plain::new(body), addr, &self.bounds);
        Body {
            scope: self,
            classify,
            bounded,
        }
    }

    /// Exits the guard's manager if it was entered, with the outcome so far.
    #[inline]
    pub fn exit<'s, 'g, M, D, C>(
        &'s mut self,
        guard: &'g mut Guard<M, D>,
        convert: C,
    ) -> impl Future<Output = ()> + use<'s, 'g, R, M, D, C>
    where
        M: AsyncContextManager,
        D: Detach<M>,
        C: Fn(M::Error) -> (Failure, R),
    {
        let run = self.start_exit(guard);
        Exit {
            scope: self,
            convert,
            run,
        }
    }

    /// Everything an exit needs before it runs: its outcome, its depth, and
    /// the exit future itself (made on its first poll, panics caught); or
    /// nothing to do, for a manager that was not entered.
    #[inline(always)] // measured: benches/instructions.sh, ~90 instructions per scope
    #[allow(clippy::inline_always)]
    fn start_exit<'g, M, D>(
        &mut self,
        guard: &'g mut Guard<M, D>,
    ) -> ExitRun<'g, M::Error, impl Code<Output = Result<(), M::Error>> + use<'g, R, M, D>>
    where
        M: AsyncContextManager,
        D: Detach<M>,
    {
        let name = guard.meta.name;
        if guard.meta.state != State::Entered {
            return ExitRun {
                meta: &mut guard.meta,
                depth: 0,
                clock: Clock::OFF,
                kind: Outcome::Success.kind(),
                span: ManuallyDrop::new(Rare::new(None)),
                resumable: false,
                // Nothing to run, nothing to drop.
                finished: true,
                step: ManuallyDrop::new(ExitStep::Skip),
            };
        }
        let depth = self.depth;
        self.depth -= 1;
        let outcome = match self.cut {
            Some(owner) if depth >= owner => Outcome::Cancelled,
            // A success holds nothing: no clone through the enum's match.
            _ if self.outcome.is_success() => Outcome::Success,
            _ => Outcome::clone(&self.outcome),
        };
        if guard.meta.bounds {
            self.unbound(&guard.meta);
        }
        let addr = self.addr();
        let (clock, kind, span) = if guard.meta.watched.hooks.wanted() {
            exit_diagnostics(&guard.meta.watched, name, &outcome)
        } else {
            (Clock::OFF, Outcome::Success.kind(), None)
        };
        let span = ManuallyDrop::new(Rare::new(span));
        // An owned manager whose exit can be neither resumed by the driver
        // (hand-written) nor finished in place with its runtime still
        // driving it (no multi-thread runtime) runs its exit boxed, so that
        // a drop mid-exit can hand the exit itself to the driver instead of
        // cutting it short. Only there does an exit cost an allocation.
        let boxed = if D::DETACHABLE && !M::__RESUMABLE_EXIT && !in_place::can_hand_over() {
            guard.boxed_exit(outcome.clone())
        } else {
            None
        };
        if let Some((exit, handoff)) = boxed {
            guard.meta.state = State::Done;
            ExitRun {
                meta: &mut guard.meta,
                depth,
                clock,
                kind,
                span,
                resumable: false,
                finished: false,
                step: ManuallyDrop::new(ExitStep::Boxed {
                    handover: Handover::new(exit, handoff, name, addr),
                }),
            }
        } else {
            let (manager, meta) = guard.parts();
            meta.state = State::Exiting;
            let exit = move || manager.exit(outcome);
            ExitRun {
                meta,
                depth,
                clock,
                kind,
                span,
                // Not finished in place if dropped mid-exit: the driver
                // resumes it, or the manager's own drop finishes it.
                resumable: (M::__RESUMABLE_EXIT && D::DETACHABLE) || M::__DROP_CANCELS,
                finished: false,
                step: ManuallyDrop::new(ExitStep::Plain {
                    step: Step::new(Lazy::new(exit), addr),
                }),
            }
        }
    }

    /// A manager panicked before its enter started (in `name`, `deadline`
    /// or `enter` itself): a failure of the manager, like a panicking enter.
    #[cold]
    #[inline(never)]
    fn enter_panicked(&mut self, payload: Payload) -> &'static str {
        let name = "<a manager whose name() panicked>";
        stats::exit_failed(name);
        self.panicked(payload, name);
        name
    }

    fn panicked(&mut self, payload: Payload, name: &'static str) {
        if self.panic.is_none() {
            *self.outcome = Outcome::Panicked(Panic::from_payload(&*payload));
            *self.panic = Some(Box::new(payload));
        } else {
            diag::report_exit_error(
                name,
                "scope",
                &format!(
                    "panicked while unwinding another panic: {}",
                    Panic::from_payload(&*payload).message()
                ),
            );
        }
    }

    /// Records a manager's error: the scope's result if it had none, else
    /// reported and counted.
    fn exit_failed(&mut self, failure: Failure, result: R, name: &'static str) {
        stats::exit_failed(name);
        if self.outcome.is_success() && self.cut.is_none() {
            *self.outcome = Outcome::Failed(failure);
            *self.result = Some(result);
            self.exit_error = true;
        } else {
            diag::report_exit_error(name, "scope", failure.message());
        }
    }

    /// Never called: `with_scope!` names it in a branch never taken, so
    /// that the type the context expects of the scope (a `let` with a
    /// type, the fn it returns from) becomes `R` before the block's value
    /// is classified: an error type known only from there (a `Debug`-only
    /// enum) is then known where `Display` or `Debug` is chosen.
    #[doc(hidden)]
    #[inline]
    pub fn expected(&self) -> R {
        unreachable!("async-contextlib: Scope::expected is never called")
    }

    /// A witness of `R`, for the block to coerce its value through.
    #[doc(hidden)]
    #[inline]
    pub fn witness(&self) -> Witness<R> {
        Witness(std::marker::PhantomData)
    }

    /// The scope's value, or the resumed panic.
    #[inline(always)] // measured: benches/instructions.sh, ~90 instructions per scope
    #[allow(clippy::inline_always)]
    pub fn finish(&mut self) -> R {
        self.finished = true;
        // Taken by `&mut`, so the scope outlives this call: empty values
        // are left in their place, never moved-out bits. A scope used
        // again through the hidden API (a second `finish`, an `enter`
        // after it) then finds nothing to drop twice: `finish` panics
        // for want of a value, and what an `enter` stores is leaked
        // (`finished` keeps `drop` from the fields).
        let result = self.result.take();
        let outcome = std::mem::replace(&mut *self.outcome, Outcome::Success);
        let panic = self.panic.take();
        drop_outcome(outcome);
        if let Some(payload) = panic {
            drop(result);
            resume_unwind(*payload);
        }
        result.expect("async-contextlib: internal error: a scope finished without a value")
    }

    /// Adds a just-entered manager's deadline and token to the scope's
    /// bounds (out of line: most managers have neither).
    #[cold]
    #[inline(never)]
    fn bound<E>(&mut self, meta: &mut Meta<E>, limit: Limit<E>) {
        let (deadline, token) = match limit {
            Limit::Deadline(deadline, token) => (Some(deadline), token),
            Limit::Token(token, error) => (None, Some((token, error))),
        };
        meta.bounds = true;
        let current = self.bounds.active();
        // Only a token bounds the scope until a deadline does.
        let mut active = current.unwrap_or(Active { at: None, owner: 0 });
        if let Some(deadline) = deadline {
            meta.deadline_error = Some(deadline.error);
            let earlier = match current {
                Some(Active { at: Some(at), .. }) => deadline.at < at,
                _ => true,
            };
            if earlier {
                active = Active {
                    at: Some(deadline.at),
                    owner: self.depth,
                };
            }
        }
        let token = token.map(|(token, error)| {
            meta.has_token = true;
            meta.deadline_error = Some(error);
            (token, self.depth)
        });
        self.bounds.push(active, token);
    }

    /// Takes an exiting manager's deadline and token off the scope's
    /// bounds (exits run innermost first, so the previous bounds return).
    #[cold]
    #[inline(never)]
    fn unbound<E>(&mut self, meta: &Meta<E>) {
        self.bounds.pop(meta.has_token);
    }

    fn cut(&mut self, owner: u32) {
        self.cut = Some(owner);
        *self.outcome = Outcome::Cancelled;
    }
}

/// The scope's value type, carried into its block (see `Scope::witness`).
#[doc(hidden)]
#[allow(missing_debug_implementations, reason = "hidden; a zero-sized marker")]
pub struct Witness<R>(std::marker::PhantomData<fn() -> R>);

impl<R> Clone for Witness<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Witness<R> {}

impl<R> Witness<R> {
    /// The block's value, coerced to the scope's type.
    #[inline(always)]
    #[allow(clippy::inline_always, reason = "an identity")]
    #[allow(clippy::unused_self, reason = "`self` carries the type `R`")]
    pub fn value(self, value: R) -> R {
        value
    }
}

/// A manager's deadline and cancellation token, added to the scope's
/// bounds once it entered. Every variant holds an `E`, so that for an
/// infallible manager `Option<Limit<E>>` is zero-sized and its tests fold
/// away.
enum Limit<E> {
    /// A deadline, and maybe a token.
    Deadline(Deadline<E>, Option<(CancellationToken, E)>),
    /// A token alone.
    Token(CancellationToken, E),
}

/// One enter in flight. Like [`ExitRun`], its drop glue is one flag test:
/// the fields that own something are dropped by hand, inline when the
/// enter finishes (where their state is known), or on the cold path of
/// `drop` (in declaration order).
struct Enter<'s, 'g, R, E, C, F> {
    scope: &'s mut Scope<R>,
    meta: &'g mut Meta<E>,
    convert: Option<C>,
    // Out of line: only `timeout`, `deadline`, `move_on_*` and
    // `cancelled_by` have one.
    limit: ManuallyDrop<Rare<Limit<E>>>,
    span: ManuallyDrop<Rare<Box<tracing::Span>>>,
    /// The fields above and `bounded` are dropped.
    finished: bool,
    // Structurally pinned: never moved out, dropped in place.
    bounded: ManuallyDrop<Option<Bounded<F>>>,
}

impl<R, E, C, F> Enter<'_, '_, R, E, C, F> {
    /// Drops what the enter owns, once (`finished` guards it).
    #[inline(always)]
    #[allow(
        clippy::inline_always,
        reason = "inline where the fields' state is known"
    )]
    fn drop_fields(&mut self) {
        self.finished = true;
        // SAFETY: dropped once (callers test `finished` first), in place:
        // `bounded` was pinned and is not moved.
        unsafe {
            ManuallyDrop::drop(&mut self.limit);
            ManuallyDrop::drop(&mut self.span);
            ManuallyDrop::drop(&mut self.bounded);
        }
    }

    /// The manager's enter returned its value: it is entered, and will be
    /// exited.
    #[inline(always)]
    #[allow(clippy::inline_always, reason = "the happy path's bookkeeping")]
    fn mark_entered(&mut self) {
        let scope = &mut *self.scope;
        stats::count_entered();
        if self.meta.watched.hooks.any() {
            self.meta.watched.entered(self.meta.name);
        }
        scope.depth += 1;
        self.meta.state = State::Entered;
        if let Some(limit) = self.limit.take() {
            scope.bound(self.meta, limit);
        }
    }

    /// The enter panicked: a failure of the manager, and a `Panicked`
    /// outcome for the others. If its future had returned a value and
    /// panicked only as it was dropped, the manager is entered all the
    /// same (its exit runs, with that outcome), but the block does not run.
    #[cold]
    #[inline(never)]
    #[allow(
        clippy::boxed_local,
        reason = "unboxed by the caller, the enter's poll grew (nested_3 +168)"
    )]
    fn caught<V>(&mut self, caught: Box<Caught<Result<V, E>>>)
    where
        C: FnOnce(E) -> (Failure, R),
    {
        match caught.salvaged {
            Some(Ok(value)) => {
                self.mark_entered();
                // The block does not get it; a panic in its drop is
                // reported (this one is the scope's).
                if catch_unwind(AssertUnwindSafe(move || drop(value))).is_err() {
                    diag::report_exit_error(
                        self.meta.name,
                        "enter",
                        "the value its panicking enter returned panicked as it was dropped",
                    );
                }
            }
            Some(Err(error)) => {
                if self.meta.watched.hooks.any() {
                    self.meta.watched.end();
                }
                // The panic is the scope's outcome; the error is reported.
                if let Some(convert) = self.convert.take() {
                    let (failure, _) = convert(error);
                    diag::report_exit_error(self.meta.name, "enter", failure.message());
                }
            }
            None => {
                if self.meta.watched.hooks.any() {
                    self.meta.watched.end();
                }
            }
        }
        // A panicking enter counts as a failure of the manager.
        stats::exit_failed(self.meta.name);
        self.scope.panicked(caught.payload, self.meta.name);
    }
}

impl<R, E, C, F> Drop for Enter<'_, '_, R, E, C, F> {
    #[inline]
    fn drop(&mut self) {
        if !self.finished {
            enter_dropped(self);
        }
    }
}

/// An enter dropped before it finished: the scope is being dropped.
#[cold]
#[inline(never)]
fn enter_dropped<R, E, C, F>(enter: &mut Enter<'_, '_, R, E, C, F>) {
    enter.drop_fields();
}

impl<R, E, V, C, F> Future for Enter<'_, '_, R, E, C, F>
where
    F: Code<Output = Result<V, E>>,
    C: FnOnce(E) -> (Failure, R),
{
    type Output = Option<V>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<V>> {
        // SAFETY: `bounded` stays pinned (below); nothing is moved out of it.
        let this = unsafe { self.get_unchecked_mut() };
        // Its fields are dropped once it finished.
        assert!(
            !this.finished,
            "async-contextlib: enter polled after it finished"
        );
        if this.bounded.is_none() {
            // The manager panicked before its enter started (recorded by
            // `Scope::enter`).
            this.drop_fields();
            return Poll::Ready(None);
        }
        // SAFETY: `bounded` is structurally pinned: never moved out of the
        // enter, dropped in place (`drop_fields`).
        let bounded = unsafe { Pin::new_unchecked(&mut *this.bounded) };
        let bounded = bounded.as_pin_mut().expect("tested above");
        let hooks = this.meta.watched.hooks;
        let bound = if hooks.wanted() {
            let span = this.span.as_ref().map(|span| &**span);
            ready!(watch::poll_watched(
                hooks,
                span,
                this.meta.name,
                Phase::Entering,
                || bounded.poll_bounded(cx)
            ))
        } else {
            ready!(bounded.poll_bounded(cx))
        };
        let scope = &mut *this.scope;
        let out = match bound {
            Bound::Done(Ok(Ok(value))) => {
                this.mark_entered();
                Some(value)
            }
            Bound::Done(Ok(Err(error))) => {
                if this.meta.watched.hooks.any() {
                    this.meta.watched.end();
                }
                let convert = this.convert.take().expect("enter finished twice");
                let (failure, result) = convert(error);
                *scope.outcome = Outcome::Failed(failure);
                *scope.result = Some(result);
                None
            }
            Bound::Done(Err(caught)) => {
                this.caught(caught);
                None
            }
            Bound::Cut(owner) => {
                if this.meta.watched.hooks.any() {
                    this.meta.watched.end();
                }
                scope.cut(owner);
                None
            }
        };
        // Done: its step owns nothing now, and what it still holds goes
        // here, inline.
        this.drop_fields();
        Poll::Ready(out)
    }
}

pin_project! {
    struct Body<'s, R, B, K> {
        scope: &'s mut Scope<R>,
        classify: K,
        #[pin]
        bounded: Bounded<Plain<B>>,
    }
}

impl<R, B, K> Future for Body<'_, R, B, K>
where
    B: Future,
    K: FnOnce(B::Output) -> (R, Outcome) + Copy,
{
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let scope = &mut **this.scope;
        match ready!(this.bounded.poll_bounded(cx)) {
            Bound::Done(Ok(output)) => {
                let (value, outcome) = (*this.classify)(output);
                *scope.outcome = outcome;
                *scope.result = Some(value);
            }
            Bound::Done(Err(caught)) => scope.panicked(caught.payload, "the scope's block"),
            Bound::Cut(owner) => scope.cut(owner),
        }
        Poll::Ready(())
    }
}

pin_project! {
    #[project = ExitStepProj]
    enum ExitStep<E, X> {
        // The manager was not entered: nothing to exit.
        Skip,
        Plain { #[pin] step: Step<X> },
        Boxed { handover: Handover<E> },
    }
}

/// One exit in flight, shielded: if dropped before the exit is done, the
/// exit is finished — by the driver if the manager can resume it (the
/// guard's `Drop` hands it over), else in place, else abandoned and
/// counted; a boxed exit hands itself to the driver.
///
/// Its drop glue is one flag test (issue 10: the glue of its fields, out
/// of line, cost ~20 instructions per exit): `span` and `step` are dropped
/// by hand, `span` when the exit finishes (`step` then owns nothing), both
/// on the cold path of `drop` otherwise.
struct ExitRun<'g, E, X: Code<Output = Result<(), E>>> {
    meta: &'g mut Meta<E>,
    depth: u32,
    clock: Clock,
    // The outcome's kind, for the slow-exit warning's label.
    kind: Kind,
    span: ManuallyDrop<Rare<Box<tracing::Span>>>,
    resumable: bool,
    /// `span` and `step` are dropped (or own nothing).
    finished: bool,
    // Structurally pinned: never moved out, dropped in place.
    step: ManuallyDrop<ExitStep<E, X>>,
}

impl<E, X: Code<Output = Result<(), E>>> ExitRun<'_, E, X> {
    /// The run's fields other than `step`, which stay pinned.
    fn fields(self: Pin<&mut Self>) -> &mut Self {
        // SAFETY: callers move nothing out of `step` through this.
        unsafe { self.get_unchecked_mut() }
    }
}

impl<E, X: Code<Output = Result<(), E>>> Drop for ExitRun<'_, E, X> {
    #[inline]
    fn drop(&mut self) {
        if !self.finished {
            exit_run_dropped(self);
        }
    }
}

/// An exit run dropped before its exit finished: the scope is being
/// dropped. (A skipped exit is made finished: it holds nothing.)
#[cold]
#[inline(never)]
fn exit_run_dropped<E, X: Code<Output = Result<(), E>>>(run: &mut ExitRun<'_, E, X>) {
    run.finished = true;
    // SAFETY: `run` is being dropped and was pinned: `step` is used in
    // place and dropped once, below, never moved.
    let mut step = unsafe { Pin::new_unchecked(&mut *run.step) };
    if run.meta.state == State::Exiting && !run.resumable {
        run.meta.state = State::Done;
        let scope = run.meta.scope;
        if let ExitStepProj::Plain { step } = step.as_mut().project() {
            finish_in_place::<E, X>(step, run.meta.name, scope);
        }
    }
    // SAFETY: dropped once, here (`finished` is set); `step` in place.
    unsafe {
        ManuallyDrop::drop(&mut run.span);
        ManuallyDrop::drop(&mut run.step);
    }
}

/// The rest of a plain exit whose scope was dropped mid-exit.
#[cold]
fn finish_in_place<E, X: Code<Output = Result<(), E>>>(
    step: Pin<&mut Step<X>>,
    name: &'static str,
    scope: usize,
) {
    use futures_util::FutureExt as _;
    let step = step.map(|ran| {
        ran.map_err(|caught| {
            if matches!(caught.salvaged, Some(Err(_))) {
                diag::report_exit_error(
                    name,
                    "cancelled mid-exit",
                    "its exit returned an error, then panicked as it was dropped",
                );
            }
            caught.payload
        })
    });
    in_place::record::<E>(
        name,
        "cancelled mid-exit",
        in_place::finish(scope, name, step),
    );
}

#[inline(always)] // measured: benches/instructions.sh
#[allow(clippy::inline_always)]
fn poll_step<E, X: Code<Output = Result<(), E>>>(
    step: ExitStepProj<'_, E, X>,
    cx: &mut Context<'_>,
) -> Poll<Stepped<Result<(), E>>> {
    match step {
        ExitStepProj::Plain { step } => step.poll(cx),
        ExitStepProj::Boxed { handover } => Pin::new(handover).poll(cx),
        ExitStepProj::Skip => unreachable!("a skipped exit is not polled"),
    }
}

/// How an exit ended (its result or panic), and its depth.
type Exited<E> = (Stepped<Result<(), E>>, u32);

impl<E, X: Code<Output = Result<(), E>>> ExitRun<'_, E, X> {
    #[inline(always)] // measured: benches/instructions.sh, ~90 instructions per scope
    #[allow(clippy::inline_always)]
    fn poll_exit(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Exited<E>> {
        // SAFETY: `step` stays pinned (below); nothing is moved out of it.
        let this = unsafe { self.get_unchecked_mut() };
        // Its span and step are gone once it finished.
        assert!(
            !this.finished,
            "async-contextlib: exit polled after it finished"
        );
        // SAFETY: `step` is structurally pinned: never moved out of the
        // run, dropped in place (see `exit_run_dropped`).
        let step = unsafe { Pin::new_unchecked(&mut *this.step) }.project();
        let hooks = this.meta.watched.hooks;
        let result = if hooks.wanted() {
            let span = this.span.as_ref().map(|span| &**span);
            ready!(watch::poll_watched(
                hooks,
                span,
                this.meta.name,
                Phase::Exiting,
                || poll_step(step, cx)
            ))
        } else {
            ready!(poll_step(step, cx))
        };
        // The step finished: it owns nothing now. The span goes here.
        this.finished = true;
        // SAFETY: dropped once, here; `finished` keeps `drop` from it.
        unsafe { ManuallyDrop::drop(&mut this.span) };
        this.meta.state = State::Done;
        stats::count_exited();
        if this.meta.watched.hooks.wanted() {
            exited_diagnostics(
                &mut this.meta.watched,
                this.meta.name,
                this.clock,
                this.kind,
            );
        }
        Poll::Ready((result, this.depth))
    }
}

pin_project! {
    struct Exit<'s, 'g, R, E, C, X: Code<Output = Result<(), E>>> {
        scope: &'s mut Scope<R>,
        // `Fn`: called by reference, for the exit's error and a cut's.
        convert: C,
        #[pin]
        run: ExitRun<'g, E, X>,
    }
}

impl<R, E, C, X> Future for Exit<'_, '_, R, E, C, X>
where
    X: Code<Output = Result<(), E>>,
    C: Fn(E) -> (Failure, R),
{
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if matches!(*this.run.step, ExitStep::Skip) {
            return Poll::Ready(());
        }
        let (result, depth) = ready!(this.run.as_mut().poll_exit(cx));
        // Read only on the failure paths below.
        let name = this.run.meta.name;
        let scope = &mut **this.scope;
        let convert = &*this.convert;
        let cut_here = scope.cut == Some(depth);
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let (failure, result) = convert(error);
                // With a cut pending, reported: the scope fails with the
                // deadline's error below.
                scope.exit_failed(failure, result, name);
            }
            Err(caught) => {
                // An exit that returned an error and then panicked as it
                // was dropped: the panic is the outcome, the error is
                // reported.
                if let Some(Err(error)) = caught.salvaged {
                    let (failure, _) = convert(error);
                    diag::report_exit_error(name, "exit", failure.message());
                }
                stats::exit_failed(name);
                scope.panicked(caught.payload, name);
            }
        }
        if cut_here {
            scope.cut = None;
            if let Some(error) = this.run.as_mut().fields().meta.deadline_error.take() {
                let moves_on = this.run.meta.moves_on;
                let (failure, result) = convert(error);
                if scope.panic.is_none() {
                    // Moved on: the cut is absorbed here, as trio's
                    // `move_on_after` absorbs its `Cancelled`.
                    *scope.outcome = if moves_on {
                        drop(failure);
                        Outcome::Success
                    } else {
                        Outcome::Failed(failure)
                    };
                    *scope.result = Some(result);
                }
            }
        }
        Poll::Ready(())
    }
}
