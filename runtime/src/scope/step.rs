//! The futures a scope awaits, written by hand rather than as `async fn`s:
//! an `async fn` generic over the manager that holds the manager's `enter`
//! future across an await makes the caller's future `!Send` for any manager
//! whose type names a lifetime ("implementation of `AsyncContextManager` is
//! not general enough", rust-lang/rust#110338). Plain structs have plain,
//! structural auto traits.
//!
//! * [`Step`] polls one piece of user code (an enter, the block, an exit):
//!   it *makes* the code's future on its first poll ([`Lazy`]), so that a
//!   manager whose `enter`/`exit` panics before returning its future is
//!   caught like one whose future panics; it catches panics, enters the
//!   `tracing` span, and — if dropped before the code finishes — opens the
//!   scope's frame on the driver's cascade *before* the code is dropped, so
//!   that scopes nested in it queue their exits as its children.
//! * [`Bounded`] runs a `Step` under the scope's active deadline, if any,
//!   and when the deadline fires drops it and runs what it queued.
//! * [`Handover`] runs a boxed exit and, dropped early, hands the rest of it
//!   to the driver.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::driver::cascade::{self, Node};
use crate::driver::diag::MaybeSpan;
use crate::driver::{self, Job, JobKind};
use crate::outcome::Payload;

pin_project! {
    /// A future made by `make` on its first poll.
    #[project = LazyProj]
    pub(crate) enum Lazy<C, F> {
        Start { make: Option<C> },
        Run { #[pin] fut: F },
    }
}

impl<C: FnOnce() -> F, F: Future> Lazy<C, F> {
    #[inline]
    pub(crate) fn new(make: C) -> Self {
        Lazy::Start { make: Some(make) }
    }
}

impl<C: FnOnce() -> F, F: Future> Future for Lazy<C, F> {
    type Output = F::Output;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if let LazyProj::Start { make } = self.as_mut().project() {
            let make = make.take().expect("async-contextlib: step started twice");
            self.set(Lazy::Run { fut: make() });
        }
        match self.project() {
            LazyProj::Run { fut } => fut.poll(cx),
            LazyProj::Start { .. } => unreachable!("started above"),
        }
    }
}

pin_project! {
    /// One piece of user code, polled with panics caught and its span entered.
    pub(crate) struct Step<F> {
        #[pin]
        fut: F,
        span: MaybeSpan,
        // The scope's address, for the driver's cascade.
        addr: usize,
        done: bool,
    }

    impl<F> PinnedDrop for Step<F> {
        fn drop(this: Pin<&mut Self>) {
            // Runs before `fut` is dropped (fields drop after this).
            if !this.done {
                cascade::open(this.addr);
            }
        }
    }
}

impl<F> Step<F> {
    #[inline]
    pub(crate) fn new(fut: F, span: MaybeSpan, addr: usize) -> Self {
        Step {
            fut,
            span,
            addr,
            done: false,
        }
    }

    /// Drops the code without opening the cascade (the caller has).
    fn disarm(self: Pin<&mut Self>) {
        *self.project().done = true;
    }
}

impl<F: Future> Future for Step<F> {
    type Output = Result<F::Output, Payload>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _span = this.span.as_ref().map(|s| s.enter());
        let fut = this.fut;
        let out = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(out)) => Ok(out),
            Err(payload) => Err(payload),
        };
        *this.done = true;
        Poll::Ready(out)
    }
}

/// How a bounded step ended.
pub(crate) enum Bound<T> {
    /// It finished: its output, or its panic.
    Done(Result<T, Payload>),
    /// The deadline owned by the manager at this depth cut it.
    Cut(u32),
}

/// The deadline a bounded step runs under, and who set it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Active {
    pub(crate) at: Instant,
    pub(crate) owner: u32,
}

pin_project! {
    /// A [`Step`] under the scope's active deadline (if any).
    pub(crate) struct Bounded<F> {
        #[pin]
        step: Option<Step<F>>,
        // Boxed: only scopes with a deadline pay for it.
        deadline: Option<Pin<Box<Deadline>>>,
    }
}

pin_project! {
    /// The timer of a bounded step, and — once it fired — what the cut step
    /// queued, running inline.
    struct Deadline {
        #[pin]
        sleep: Sleep,
        owner: u32,
        addr: usize,
        cut: Option<Node>,
        fired: bool,
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

impl<F: Future> Bounded<F> {
    #[inline]
    pub(crate) fn new(step: Step<F>, active: Option<Active>) -> Self {
        let addr = step.addr;
        Bounded {
            step: Some(step),
            deadline: active.map(|a| {
                Box::pin(Deadline {
                    sleep: tokio::time::sleep_until(a.at),
                    owner: a.owner,
                    addr,
                    cut: None,
                    fired: false,
                })
            }),
        }
    }

    #[inline]
    pub(crate) fn poll_bounded(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Bound<F::Output>> {
        let mut this = self.project();
        if let Some(deadline) = this.deadline.as_mut() {
            let deadline = deadline.as_mut().project();
            if *deadline.fired {
                if let Some(node) = deadline.cut.as_mut() {
                    ready!(node.as_mut().poll(cx));
                    *deadline.cut = None;
                }
                return Poll::Ready(Bound::Cut(*deadline.owner));
            }
        }
        let mut step = this
            .step
            .as_mut()
            .as_pin_mut()
            .expect("async-contextlib: scope step polled after it finished");
        // The code first: one that finishes as the deadline fires is untouched.
        if let Poll::Ready(out) = step.as_mut().poll(cx) {
            return Poll::Ready(Bound::Done(out));
        }
        let Some(deadline) = this.deadline.as_mut() else {
            return Poll::Pending;
        };
        let deadline = deadline.as_mut().project();
        ready!(deadline.sleep.poll(cx));
        // Cut: drop the code (its inner scopes queue their exits on the
        // cascade) and finish those exits here, innermost first, before the
        // managers of this scope exit. If this scope is itself dropped
        // meanwhile, `Deadline`'s drop hands the rest to the driver.
        let addr = step.addr;
        step.disarm();
        *deadline.fired = true;
        *deadline.cut = cascade::drop_in_cascade(addr, || this.step.set(None));
        if let Some(node) = deadline.cut.as_mut() {
            ready!(node.as_mut().poll(cx));
            *deadline.cut = None;
        }
        Poll::Ready(Bound::Cut(*deadline.owner))
    }
}

/// An owned manager's exit, boxed so that it can outlive its scope.
pub(crate) type BoxedExit<E> = Pin<Box<dyn Future<Output = Result<(), E>> + Send + 'static>>;

/// Turns the rest of a boxed exit into a detached job.
pub(crate) type Handoff<E> = fn(BoxedExit<E>, &'static str) -> Job;

/// A boxed exit and what hands it over.
pub(crate) type Boxed<E> = (BoxedExit<E>, Handoff<E>);

/// The [`Handoff`] of every boxed exit.
pub(crate) fn handoff<E: 'static>(exit: BoxedExit<E>, name: &'static str) -> Job {
    Job::new(name, JobKind::Exit, exit)
}

/// A boxed owned exit (see `Scope::exit`): dropped before it finishes, it
/// hands the rest of the exit to the driver.
pub(crate) struct Handover<E> {
    exit: Option<BoxedExit<E>>,
    handoff: Handoff<E>,
    name: &'static str,
    addr: usize,
    span: MaybeSpan,
}

impl<E> Handover<E> {
    pub(crate) fn new(
        exit: BoxedExit<E>,
        handoff: Handoff<E>,
        name: &'static str,
        addr: usize,
        span: MaybeSpan,
    ) -> Self {
        Handover {
            exit: Some(exit),
            handoff,
            name,
            addr,
            span,
        }
    }
}

impl<E> Future for Handover<E> {
    type Output = Result<Result<(), E>, Payload>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let _span = this.span.as_ref().map(|s| s.enter());
        let exit = this
            .exit
            .as_mut()
            .expect("async-contextlib: exit polled after it finished");
        let out = match catch_unwind(AssertUnwindSafe(|| exit.as_mut().poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => Ok(result),
            Err(payload) => Err(payload),
        };
        this.exit = None;
        Poll::Ready(out)
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
