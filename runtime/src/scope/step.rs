//! The futures a scope awaits, written by hand rather than as `async fn`s:
//! an `async fn` generic over the manager that holds the manager's `enter`
//! future across an await makes the caller's future `!Send` for any manager
//! whose type names a lifetime ("implementation of `AsyncContextManager` is
//! not general enough", rust-lang/rust#110338). Plain structs have plain,
//! structural auto traits.
//!
//! * [`Step`] polls one piece of user code (an enter, the block, an exit),
//!   made on its first poll ([`Lazy`]), so that a manager whose
//!   `enter`/`exit` panics before returning its future is caught like one
//!   whose future panics; it catches panics and — if dropped before the
//!   code finishes — opens the scope's frame on the driver's cascade
//!   *before* the code is dropped, so that scopes nested in it queue their
//!   exits as its children.
//!
//! The happy path pays no drop glue worth the name: a step drops its code
//! in place when it finishes, and what only cancellation, deadlines or
//! diagnostics need sits in a [`Rare`], whose drop is a flag check.
//! * [`Bounded`] runs a `Step` under the scope's active deadline and
//!   cancellation tokens, if any, and when one fires drops it and runs what
//!   it queued.
//! * [`Handover`] runs a boxed exit and, dropped early, hands the rest of it
//!   to the driver.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::driver::cascade::{self, Node};
use crate::driver::{self, Job, JobKind};
use crate::outcome::Payload;

/// What a [`Step`] runs: a [`Lazy`] (an enter or an exit, made on its
/// first poll, which drops itself as it finishes) or a [`Plain`] future
/// (the block).
pub(crate) trait Code: Future {
    /// The code drops itself as it finishes, so a finished step has
    /// nothing to drop.
    const SPENT: bool;

    /// [`Future::poll`]; if the code finishes and then panics as it drops
    /// itself, its output is put in `salvage` before the panic goes on.
    /// (A slot of the caller's frame, not a field: the output's type in
    /// the layout of a future awaiting this would make its auto traits
    /// depend on normalizing it under erased lifetimes,
    /// rust-lang/rust#110338.)
    fn poll_code(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        salvage: &mut Option<Self::Output>,
    ) -> Poll<Self::Output>;
}

/// A future made by `make` on its first poll.
///
/// Written by hand rather than with `pin_project!`: starting it reads
/// `make` out and writes `Gone` over it (a tag store) before `make` runs,
/// so a panic in `make` leaves nothing to drop twice, with no `Option` to
/// take and test (issue 10).
pub(crate) enum Lazy<C, F> {
    Start {
        make: C,
    },
    /// `make` was taken and panicked (the step that polls this stops).
    Gone,
    /// Structurally pinned: never moved out, dropped in place.
    Run {
        fut: F,
    },
    /// `fut` finished and was dropped in place.
    Done,
}

impl<C: FnOnce() -> F, F: Future> Lazy<C, F> {
    #[inline]
    pub(crate) fn new(make: C) -> Self {
        Lazy::Start { make }
    }
}

impl<C: FnOnce() -> F, F: Future> Future for Lazy<C, F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.poll_code(cx, &mut None)
    }
}

impl<C: FnOnce() -> F, F: Future> Code for Lazy<C, F> {
    const SPENT: bool = true;

    #[inline]
    fn poll_code(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        salvage: &mut Option<F::Output>,
    ) -> Poll<F::Output> {
        // SAFETY: `fut` is never moved out (see the variants): `Gone` and
        // `Run` are only written over `Start`, which holds nothing pinned,
        // and `Done` over a `fut` dropped in place.
        let this: *mut Self = unsafe { self.get_unchecked_mut() };
        // SAFETY: `this` comes from the pinned `&mut` above, and each
        // reference below is derived from it in turn.
        if let Lazy::Start { make } = unsafe { &mut *this } {
            // SAFETY: `make` is read out once, and `Gone` is written over
            // it (without dropping it) before it runs: it is owned by this
            // call from here on.
            let make = unsafe { std::ptr::read(make) };
            // SAFETY: `this` is valid for writes; `Start`'s `make` was moved
            // out above, so not dropping it leaks nothing.
            unsafe { std::ptr::write(this, Lazy::Gone) };
            let fut = make();
            // SAFETY: as above: `Gone` owns nothing; `fut` is moved in
            // before it is pinned.
            unsafe { std::ptr::write(this, Lazy::Run { fut }) };
        }
        // SAFETY: as above.
        let Lazy::Run { fut } = (unsafe { &mut *this }) else {
            // SAFETY: as above.
            polled_again(unsafe { &*this })
        };
        // SAFETY: `fut` is structurally pinned (see above).
        let out = ready!(unsafe { Pin::new_unchecked(&mut *fut) }.poll(cx));
        // Finished: dropped here, where its state is known, so that its
        // drop glue can fold away (issue 10: dropped later, by the step,
        // it was an out-of-line call per exit). If that drop panics, `out`
        // goes to `salvage`, so that an enter that returned a value is
        // still exited.
        let strand = Strand {
            lazy: this,
            out: ManuallyDrop::new(out),
            salvage,
        };
        // SAFETY: `fut` is dropped once, in place; `strand` then writes
        // `Done` over it, on every path.
        unsafe { std::ptr::drop_in_place(fut) };
        Poll::Ready(strand.done())
    }
}

/// Writes `Done` over a [`Lazy`] whose `fut` was dropped, and returns its
/// output; dropped instead (its `fut`'s drop panicked), it puts the output
/// in `salvage`.
struct Strand<'a, C, F, O> {
    lazy: *mut Lazy<C, F>,
    out: ManuallyDrop<O>,
    salvage: &'a mut Option<O>,
}

impl<C, F, O> Strand<'_, C, F, O> {
    #[inline]
    fn done(self) -> O {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `lazy` is the pinned `Lazy` being polled, whose `fut` is
        // dropped: writing over it leaks nothing. `out` is taken once:
        // `this` is not dropped.
        unsafe {
            std::ptr::write(this.lazy, Lazy::Done);
            ManuallyDrop::take(&mut this.out)
        }
    }
}

impl<C, F, O> Drop for Strand<'_, C, F, O> {
    fn drop(&mut self) {
        // SAFETY: as in `done`, which this runs instead of.
        unsafe {
            std::ptr::write(self.lazy, Lazy::Done);
            *self.salvage = Some(ManuallyDrop::take(&mut self.out));
        }
    }
}

#[cold]
#[inline(never)]
fn polled_again<C, F>(lazy: &Lazy<C, F>) -> ! {
    if matches!(lazy, Lazy::Gone) {
        panic!("async-contextlib: a step polled again after its start panicked")
    }
    panic!("async-contextlib: a step polled again after it finished")
}

pin_project! {
    /// A future run as a step's code as is (the block).
    pub(crate) struct Plain<B> {
        #[pin]
        fut: B,
    }
}

impl<B> Plain<B> {
    #[inline]
    pub(crate) fn new(fut: B) -> Self {
        Plain { fut }
    }
}

impl<B: Future> Future for Plain<B> {
    type Output = B::Output;

    #[inline(always)]
    #[allow(clippy::inline_always, reason = "a projection")]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<B::Output> {
        self.project().fut.poll(cx)
    }
}

impl<B: Future> Code for Plain<B> {
    const SPENT: bool = false;

    #[inline(always)]
    #[allow(clippy::inline_always, reason = "a projection")]
    fn poll_code(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        _: &mut Option<B::Output>,
    ) -> Poll<B::Output> {
        self.project().fut.poll(cx)
    }
}

/// An optional value whose drop is out of line, and only when it holds
/// something: the drop glue of the futures a scope awaits stays a flag
/// check on the happy path, where these are empty.
pub(crate) struct Rare<T>(ManuallyDrop<Option<T>>);

impl<T> Rare<T> {
    #[inline]
    pub(crate) fn new(value: Option<T>) -> Self {
        Rare(ManuallyDrop::new(value))
    }

    #[inline]
    pub(crate) fn as_mut(&mut self) -> Option<&mut T> {
        self.0.as_mut()
    }

    #[inline]
    pub(crate) fn as_ref(&self) -> Option<&T> {
        self.0.as_ref()
    }

    #[inline]
    pub(crate) fn take(&mut self) -> Option<T> {
        self.0.take()
    }
}

impl<T> Drop for Rare<T> {
    #[inline]
    fn drop(&mut self) {
        if self.0.is_some() {
            drop_rare(&mut self.0);
        }
    }
}

#[cold]
#[inline(never)]
fn drop_rare<T>(value: &mut ManuallyDrop<Option<T>>) {
    // SAFETY: called once, from `Rare::drop`; the value is not used again.
    unsafe { ManuallyDrop::drop(value) };
}

/// How a step's code ended: its output, or the panic caught in it.
///
/// Boxed (one word): only a panic pays for it, and the happy path moves
/// and tests a smaller value (issue 10).
pub(crate) type Stepped<T> = Result<T, Box<Caught<T>>>;

/// A panic caught in a step, and — if its code finished and then panicked
/// as it dropped itself — the code's output.
pub(crate) struct Caught<T> {
    pub(crate) payload: Payload,
    pub(crate) salvaged: Option<T>,
}

/// One piece of user code, polled with panics caught.
///
/// The code is dropped in place as soon as it finishes (inline, where its
/// state is known; by itself, for a [`Lazy`]); dropped unfinished, the
/// step first opens the scope's frame on the driver's cascade — on a cold
/// path.
pub(crate) struct Step<F> {
    fut: ManuallyDrop<F>,
    // The scope's address, for the driver's cascade.
    addr: usize,
    live: bool,
}

impl<F> Step<F> {
    #[inline]
    pub(crate) fn new(fut: F, addr: usize) -> Self {
        Step {
            fut: ManuallyDrop::new(fut),
            addr,
            live: true,
        }
    }

    /// Drops the code now, without opening the cascade (the caller has).
    fn drop_now(self: Pin<&mut Self>) {
        // SAFETY: `fut` is dropped in place (never moved) and only once.
        let this = unsafe { self.get_unchecked_mut() };
        if std::mem::replace(&mut this.live, false) {
            // SAFETY: as above.
            unsafe { ManuallyDrop::drop(&mut this.fut) };
        }
    }
}

impl<F> Drop for Step<F> {
    #[inline]
    fn drop(&mut self) {
        if self.live {
            drop_unfinished(self);
        }
    }
}

/// A step dropped before its code finished: the scope is being dropped.
#[cold]
#[inline(never)]
fn drop_unfinished<F>(step: &mut Step<F>) {
    // Opens before the code (and scopes nested in it) is dropped.
    cascade::open(step.addr);
    step.live = false;
    let fut = &mut step.fut;
    // SAFETY: the step is being dropped; `fut` was never moved out of it
    // (it is pinned with the step) and is dropped once.
    let dropped = catch_unwind(AssertUnwindSafe(|| unsafe { ManuallyDrop::drop(fut) }));
    // A panic here has no one to resume to (the scope is being dropped,
    // maybe by an unwind already, where it would abort): reported.
    if dropped.is_err() {
        crate::driver::diag::report_exit_error(
            "async_contextlib::with_scope",
            "cancelled",
            "a manager's enter or exit, or the block, panicked as its scope was dropped",
        );
    }
}

impl<F: Code> Future for Step<F> {
    type Output = Stepped<F::Output>;

    #[inline(always)] // measured: benches/instructions.sh, ~90 instructions per scope
    #[allow(clippy::inline_always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `fut` is structurally pinned: never moved, dropped in
        // place.
        let this = unsafe { self.get_unchecked_mut() };
        assert!(
            this.live,
            "async-contextlib: scope step polled after it finished"
        );
        // SAFETY: as above.
        let fut = unsafe { Pin::new_unchecked(&mut *this.fut) };
        let mut salvage = None;
        match catch_unwind(AssertUnwindSafe(|| fut.poll_code(cx, &mut salvage))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => {
                this.live = false;
                // The code finished: drop it here, inline, unless it
                // dropped itself as it finished.
                if !F::SPENT {
                    // SAFETY: as above; `live` is now false, so it is not
                    // dropped again.
                    unsafe { ManuallyDrop::drop(&mut this.fut) };
                }
                Poll::Ready(Ok(out))
            }
            Err(payload) => Poll::Ready(Err(step_panicked(this, payload, salvage))),
        }
    }
}

/// The step's code panicked: what it finished with, if anything, is
/// salvaged and the code dropped; a second panic, in that drop, is
/// reported (a step's poll may run inside a destructor).
#[cold]
#[inline(never)]
#[allow(
    clippy::unnecessary_box_returns,
    reason = "boxed for `Stepped`: one word on the happy path"
)]
fn step_panicked<F: Code>(
    step: &mut Step<F>,
    payload: Payload,
    salvaged: Option<F::Output>,
) -> Box<Caught<F::Output>> {
    step.live = false;
    let fut = &mut step.fut;
    // SAFETY: `fut` is pinned with the step (never moved) and is dropped
    // here, once: `live` is now false.
    if catch_unwind(AssertUnwindSafe(|| unsafe { ManuallyDrop::drop(fut) })).is_err() {
        crate::driver::diag::report_exit_error(
            "async_contextlib::with_scope",
            "scope",
            "a panicked step's code panicked again while it was dropped",
        );
    }
    Box::new(Caught { payload, salvaged })
}

/// How a bounded step ended.
pub(crate) enum Bound<T> {
    /// It finished: its output, or its panic.
    Done(Stepped<T>),
    /// The deadline owned by the manager at this depth cut it.
    Cut(u32),
}

/// What bounds the steps of a scope: a deadline and cancellation tokens.
///
/// Boxed, and only while a manager with a deadline or a token is entered:
/// a scope without any holds one null pointer, which is what a bounded
/// step tests (issue 10: one word, through a reference), and its guards
/// hold no saved bounds.
pub(crate) struct Bounds(Rare<Box<BoundsState>>);

/// The bounds of a scope that has some.
pub(crate) struct BoundsState {
    /// The active deadline, if any, and who set it.
    active: Active,
    /// The tokens, outermost first.
    tokens: Vec<Token>,
    /// The bounds before each bounding manager entered, outermost first
    /// (`None`: there were none), restored when it exits.
    saved: Vec<Option<Active>>,
}

impl Bounds {
    #[inline]
    pub(crate) fn new() -> Self {
        Bounds(Rare::new(None))
    }

    /// The active deadline and owner, if the scope has bounds.
    pub(crate) fn active(&self) -> Option<Active> {
        self.0.as_ref().map(|b| b.active)
    }

    /// Sets the active bounds (saving the previous ones) and adds a token.
    pub(crate) fn push(&mut self, active: Active, token: Option<Token>) {
        let bounds = if let Some(bounds) = self.0.as_mut() {
            bounds.saved.push(Some(bounds.active));
            bounds.active = active;
            bounds
        } else {
            self.0 = Rare::new(Some(Box::new(BoundsState {
                active,
                tokens: Vec::new(),
                saved: vec![None],
            })));
            self.0.as_mut().expect("just set")
        };
        bounds.tokens.extend(token);
    }

    /// Restores the bounds from before the innermost bounding manager, and
    /// takes off its token if it had one.
    pub(crate) fn pop(&mut self, had_token: bool) {
        let Some(bounds) = self.0.as_mut() else {
            return;
        };
        if had_token {
            bounds.tokens.pop();
        }
        match bounds.saved.pop().flatten() {
            Some(prev) => bounds.active = prev,
            // The outermost bounding manager: no bounds are left.
            None => drop(self.0.take()),
        }
    }
}

/// The scope's deadline, if any, and who set it; `Some` in
/// [`Bounds::active`] also when only tokens bound the scope.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Active {
    /// The active deadline, if any (`None`: only tokens bound the scope).
    pub(crate) at: Option<Instant>,
    /// The depth of the manager that set `at`.
    pub(crate) owner: u32,
}

/// A cancellation token a bounded step runs under, and who set it (the
/// depth of its `cancelled_by` manager).
pub(crate) type Token = (CancellationToken, u32);

pin_project! {
    /// A [`Step`] under the scope's active deadline and tokens (if any).
    pub(crate) struct Bounded<F> {
        #[pin]
        step: Step<F>,
        // Boxed: only scopes with a deadline or a token pay for it.
        deadline: Rare<Pin<Box<Deadline>>>,
    }
}

pin_project! {
    /// The timer and token waits of a bounded step, and — once one fired —
    /// what the cut step queued, running inline.
    struct Deadline {
        #[pin]
        sleep: Option<Sleep>,
        // Outermost first.
        tokens: Vec<(Pin<Box<WaitForCancellationFutureOwned>>, u32)>,
        // The timer's owner until it fires; then the owner of the cut.
        owner: u32,
        addr: usize,
        cut: Option<Node>,
        fired: bool,
        // The cut code panicked as it was dropped: the step's outcome, once
        // what it queued has run.
        panicked: Option<Payload>,
    }

    impl PinnedDrop for Deadline {
        fn drop(this: Pin<&mut Self>) {
            // The scope was dropped while the exits of what was cut ran:
            // they go on as children of its frame, before its own exits.
            let this = this.project();
            if let Some(node) = this.cut.take() {
                cascade::add(*this.addr, node, true);
            }
        }
    }
}

impl<F: Code> Bounded<F> {
    #[inline]
    pub(crate) fn new(fut: F, addr: usize, bounds: &Bounds) -> Self {
        // One test: the bounds' box exists whenever the scope has a
        // deadline or a token. Before the step is made, so that it is made in place (measured:
        // made first, it was copied, ~20 instructions).
        let deadline = bounds.0.as_ref().map(|bounds| new_deadline(addr, bounds));
        Bounded {
            step: Step::new(fut, addr),
            deadline: Rare::new(deadline),
        }
    }

    #[inline]
    pub(crate) fn poll_bounded(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Bound<F::Output>> {
        let this = self.project();
        let Some(deadline) = this.deadline.as_mut() else {
            // No deadline: the step alone.
            return this.step.poll(cx).map(Bound::Done);
        };
        poll_with_deadline(this.step, deadline, cx)
    }
}

#[cold]
#[inline(never)]
fn new_deadline(addr: usize, bounds: &BoundsState) -> Pin<Box<Deadline>> {
    let active = bounds.active;
    Box::pin(Deadline {
        sleep: active.at.map(tokio::time::sleep_until),
        tokens: bounds
            .tokens
            .iter()
            .map(|(token, owner)| (Box::pin(token.clone().cancelled_owned()), *owner))
            .collect(),
        owner: active.owner,
        addr,
        cut: None,
        fired: false,
        panicked: None,
    })
}

/// [`Bounded::poll_bounded`] under a deadline or token (out of line: only
/// scopes with a `timeout`/`deadline`/`cancelled_by` take it).
#[inline(never)]
fn poll_with_deadline<F: Code>(
    mut step: Pin<&mut Step<F>>,
    deadline: &mut Pin<Box<Deadline>>,
    cx: &mut Context<'_>,
) -> Poll<Bound<F::Output>> {
    let deadline = deadline.as_mut().project();
    if *deadline.fired {
        if let Some(node) = deadline.cut.as_mut() {
            ready!(node.as_mut().poll(cx));
            *deadline.cut = None;
        }
        return Poll::Ready(cut_or_panicked(deadline.panicked, *deadline.owner));
    }
    // The code first: one that finishes as the deadline fires is untouched.
    if let Poll::Ready(out) = step.as_mut().poll(cx) {
        return Poll::Ready(Bound::Done(out));
    }
    // The outermost that fired cuts: it cuts the most.
    let mut owner = None;
    if let Some(sleep) = deadline.sleep.as_pin_mut() {
        if sleep.poll(cx).is_ready() {
            owner = Some(*deadline.owner);
        }
    }
    for (wait, token_owner) in deadline.tokens.iter_mut() {
        if wait.as_mut().poll(cx).is_ready() {
            owner = Some(owner.map_or(*token_owner, |o: u32| o.min(*token_owner)));
            break;
        }
    }
    let Some(owner) = owner else {
        return Poll::Pending;
    };
    *deadline.owner = owner;
    // Cut: drop the code (its inner scopes queue their exits on the
    // cascade) and finish those exits here, innermost first, before the
    // managers of this scope exit. If this scope is itself dropped
    // meanwhile, `Deadline`'s drop hands the rest to the driver.
    let addr = step.addr;
    *deadline.fired = true;
    // A panic as the cut code is dropped is caught (it would unwind out of
    // the scope's poll, as if the scope itself were dropped): it becomes
    // the step's outcome once what the drop queued has run.
    let panicked = &mut *deadline.panicked;
    *deadline.cut = cascade::drop_in_cascade(addr, || {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| step.as_mut().drop_now())) {
            *panicked = Some(payload);
        }
    });
    if let Some(node) = deadline.cut.as_mut() {
        ready!(node.as_mut().poll(cx));
        *deadline.cut = None;
    }
    Poll::Ready(cut_or_panicked(deadline.panicked, owner))
}

/// How a cut step ended: cut, or — if its code panicked as it was dropped —
/// panicked.
fn cut_or_panicked<T>(panicked: &mut Option<Payload>, owner: u32) -> Bound<T> {
    match panicked.take() {
        Some(payload) => Bound::Done(Err(Box::new(Caught {
            payload,
            salvaged: None,
        }))),
        None => Bound::Cut(owner),
    }
}

/// An owned manager's exit, boxed so that it can outlive its scope.
pub(crate) type BoxedExit<E> = Pin<Box<dyn Future<Output = Result<(), E>> + Send + 'static>>;

/// Turns the rest of a boxed exit into a detached job.
pub(crate) type Handoff<E> = fn(BoxedExit<E>, &'static str) -> Job;

/// A boxed exit and what hands it over.
pub(crate) type Boxed<E> = (BoxedExit<E>, Handoff<E>);

/// The [`Handoff`] of a boxed exit.
pub(crate) fn handoff<E: 'static>(exit: BoxedExit<E>, name: &'static str) -> Job {
    Job::new(name, JobKind::Exit, exit)
}

/// The [`Handoff`] of a boxed exit that counts itself when dropped in
/// flight (`__EXIT_COUNTS_ITSELF`).
pub(crate) fn handoff_counted<E: 'static>(exit: BoxedExit<E>, name: &'static str) -> Job {
    Job::exit(name, exit, true)
}

/// A boxed owned exit (see `Scope::exit`): dropped before it finishes, it
/// hands the rest of the exit to the driver.
pub(crate) struct Handover<E> {
    exit: Rare<BoxedExit<E>>,
    handoff: Handoff<E>,
    name: &'static str,
    addr: usize,
}

impl<E> Handover<E> {
    pub(crate) fn new(
        exit: BoxedExit<E>,
        handoff: Handoff<E>,
        name: &'static str,
        addr: usize,
    ) -> Self {
        Handover {
            exit: Rare::new(Some(exit)),
            handoff,
            name,
            addr,
        }
    }
}

impl<E> Future for Handover<E> {
    type Output = Stepped<Result<(), E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let slot = &mut this.exit;
        // The exit is dropped inside the catch as it finishes: a panic in
        // that drop is the exit's, with its result kept.
        let mut finished = None;
        let polled = catch_unwind(AssertUnwindSafe(|| {
            let exit = slot
                .as_mut()
                .expect("async-contextlib: exit polled after it finished");
            finished = Some(ready!(exit.as_mut().poll(cx)));
            drop(slot.take());
            Poll::Ready(())
        }));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => Poll::Ready(Ok(finished.expect("set as it finished"))),
            Err(payload) => {
                // Dropped here, not handed over: it panicked (or was dropped
                // already, and `take` left nothing).
                if catch_unwind(AssertUnwindSafe(|| drop(this.exit.take()))).is_err() {
                    crate::driver::diag::report_exit_error(
                        this.name,
                        "exit",
                        "a panicked exit panicked again while it was dropped",
                    );
                }
                Poll::Ready(Err(Box::new(Caught {
                    payload,
                    salvaged: finished,
                })))
            }
        }
    }
}

impl<E> Unpin for Handover<E> {}

impl<E> Drop for Handover<E> {
    fn drop(&mut self) {
        if let Some(exit) = self.exit.take() {
            driver::queue(self.addr, (self.handoff)(exit, self.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::rc::Rc;
    use std::task::Waker;

    fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
        fut.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_lazy_future_runs_make_once_and_drops_what_it_captured_once() {
        let captured = Rc::new(());
        let held = captured.clone();
        let mut lazy = pin!(Lazy::new(move || {
            let held = held;
            async move { Rc::strong_count(&held) }
        }));
        assert_eq!(Rc::strong_count(&captured), 2);
        assert_eq!(poll_once(lazy.as_mut()), Poll::Ready(2));
        // The finished future dropped what it held.
        assert_eq!(Rc::strong_count(&captured), 1);
        // Never started: its closure is dropped with it.
        let unstarted = Lazy::new({
            let held = captured.clone();
            move || async move { drop(held) }
        });
        assert_eq!(Rc::strong_count(&captured), 2);
        drop(unstarted);
        assert_eq!(Rc::strong_count(&captured), 1);
    }

    /// Ready at once; counts its drops, and panics in the first one if
    /// told to.
    struct Finishes<'a> {
        drops: &'a std::cell::Cell<u32>,
        panic_in_drop: bool,
    }

    impl Future for Finishes<'_> {
        type Output = u32;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u32> {
            Poll::Ready(7)
        }
    }

    impl Drop for Finishes<'_> {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
            assert!(!self.panic_in_drop, "the finished future's drop panics");
        }
    }

    #[test]
    fn a_lazy_future_drops_its_future_once_as_it_finishes_even_if_that_drop_panics() {
        for panic_in_drop in [false, true] {
            let drops = std::cell::Cell::new(0);
            let mut lazy = Box::pin(Lazy::new(|| Finishes {
                drops: &drops,
                panic_in_drop,
            }));
            let first = catch_unwind(AssertUnwindSafe(|| poll_once(lazy.as_mut())));
            // Dropped as it finished, before the lazy future is.
            assert_eq!(drops.get(), 1);
            assert_eq!(first.is_err(), panic_in_drop);
            if !panic_in_drop {
                assert_eq!(first.ok(), Some(Poll::Ready(7)));
            }
            let again = catch_unwind(AssertUnwindSafe(|| poll_once(lazy.as_mut())));
            let payload = again.expect_err("a second poll panics");
            assert!(
                payload
                    .downcast_ref::<&str>()
                    .is_some_and(|m| m.contains("after it finished"))
            );
            drop(lazy);
            // Never dropped twice, nor polled again.
            assert_eq!(drops.get(), 1);
        }
    }

    #[test]
    fn a_lazy_future_whose_make_panics_drops_its_captures_once_and_refuses_a_second_poll() {
        let captured = Rc::new(());
        let held = captured.clone();
        let mut lazy = pin!(Lazy::new(move || -> std::future::Ready<()> {
            // Panics holding `held`: the unwind drops it.
            assert!(Rc::strong_count(&held) == 0, "make panicked");
            std::future::ready(())
        }));
        let first = catch_unwind(AssertUnwindSafe(|| poll_once(lazy.as_mut())));
        assert!(first.is_err());
        // The closure (and what it held) was dropped by the unwind, once.
        assert_eq!(Rc::strong_count(&captured), 1);
        let again = catch_unwind(AssertUnwindSafe(|| poll_once(lazy.as_mut())));
        let payload = again.expect_err("a second poll panics");
        assert!(
            payload
                .downcast_ref::<&str>()
                .is_some_and(|m| m.contains("after its start panicked"))
        );
    }
}
