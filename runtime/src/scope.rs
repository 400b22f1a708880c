//! The life of one `with_scope!`: guards, the scope state and its runners.
//!
//! `with_scope!` expands to straight-line code over two types:
//!
//! * a [`Guard`] per manager owns the manager and knows how far it got
//!   (idle → entered → exiting → done). Its `Drop` is the cancellation path:
//!   a guard dropped while entered hands the exit to the driver (owned
//!   managers) or finishes it in place (borrowing ones);
//! * one [`Scope`] holds what unwinding needs: the scope's value so far,
//!   the outcome the next exit sees, a caught panic, the active deadline.
//!   Its runners (`enter`, `body`, `exit`) are the scope's only await points,
//!   so a drop of the scope's future always happens inside one of them, and
//!   each marks the driver's cascade open before anything else is dropped.
//!
//! Exactly-once is structural: `exit` runs only for a guard in state
//! `Entered` and moves it on; `Drop` runs exits only for guards still
//! entered (or resumable mid-exit).

use std::any::Any;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, resume_unwind};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use futures_util::FutureExt;
use tokio::time::Instant;

use crate::driver::{self, Job, JobKind};
use crate::{AsyncContextManager, Failure, Outcome, OwnedManager, Panic, stats};

type Payload = Box<dyn Any + Send + 'static>;

/// How a guard finishes its manager's exit when the scope is dropped.
/// Chosen at the `with_scope!` call site (see `dispatch`), where the
/// manager's type is concrete.
pub trait Detach<M: AsyncContextManager> {
    /// Whether `job` returns a job (owned manager with a `Send` exit).
    const DETACHABLE: bool;
    /// Turns the manager into a detached job running its exit, or gives it back.
    fn job(&self, manager: M) -> Result<Job, M>;
    /// The manager's exit as a boxed `'static` future (that can be handed to
    /// the driver mid-exit), or the manager back.
    /// With the function that turns it into a job if it is dropped unfinished.
    fn boxed_exit(&self, manager: M, outcome: Outcome) -> Result<Boxed<M::Error>, M>;
}

/// An owned manager's exit, boxed so that it can outlive its scope.
pub(crate) type BoxedExit<E> = Pin<Box<dyn Future<Output = Result<(), E>> + Send + 'static>>;

/// A boxed exit and what hands it over.
pub(crate) type Boxed<E> = (BoxedExit<E>, Handoff<E>);

/// Turns the rest of a boxed exit into a detached job.
pub(crate) type Handoff<E> = fn(BoxedExit<E>, &'static str) -> Job;

fn handoff<E: 'static>(exit: BoxedExit<E>, name: &'static str) -> Job {
    Job::new(name, JobKind::Exit, exit)
}

/// Finish the exit in place (borrowing managers, or exits that are not `Send`).
#[derive(Clone, Copy, Debug)]
pub struct InPlace;

impl<M: AsyncContextManager> Detach<M> for InPlace {
    const DETACHABLE: bool = false;
    fn job(&self, manager: M) -> Result<Job, M> {
        Err(manager)
    }
    fn boxed_exit(&self, manager: M, _: Outcome) -> Result<Boxed<M::Error>, M> {
        Err(manager)
    }
}

/// Hand the exit to the driver: `G` is `exit_task::<M>`, whose future the
/// call site proved `Send + 'static`.
#[derive(Clone, Copy, Debug)]
pub struct Detachable<G>(pub(crate) G);

impl<M, G, F> Detach<M> for Detachable<G>
where
    M: OwnedManager,
    G: Fn(M, Outcome) -> F,
    F: Future<Output = Result<(), M::Error>> + Send + 'static,
{
    const DETACHABLE: bool = true;
    fn job(&self, manager: M) -> Result<Job, M> {
        let name = manager.name();
        Ok(Job::new(
            name,
            JobKind::Exit,
            (self.0)(manager, Outcome::Cancelled),
        ))
    }
    fn boxed_exit(&self, manager: M, outcome: Outcome) -> Result<Boxed<M::Error>, M> {
        // `M: 'static`, so `M::Error: 'static`.
        Ok((Box::pin((self.0)(manager, outcome)), handoff::<M::Error>))
    }
}

/// The exit of `manager`, as an owned future (the detached form of an exit).
pub async fn exit_task<M: AsyncContextManager>(
    mut manager: M,
    outcome: Outcome,
) -> Result<(), M::Error> {
    manager.exit(outcome).await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Entered,
    /// Exit started; its future was dropped before it finished and the
    /// manager can resume it (generated managers), so `Drop` detaches it.
    Exiting,
    Done,
}

/// Owns one manager of a scope and runs its exit on cancellation.
#[allow(
    missing_debug_implementations,
    reason = "hidden; generic over managers that need not be Debug"
)]
pub struct Guard<M: AsyncContextManager, D: Detach<M>> {
    manager: Option<M>,
    meta: Meta<M::Error>,
    detach: D,
}

struct Meta<E> {
    state: State,
    depth: u32,
    /// The error a deadline of this manager fails the scope with.
    deadline_error: Option<E>,
    /// The scope's active deadline before this manager's was pushed.
    prev_active: Option<Active>,
    has_deadline: bool,
}

impl<M: AsyncContextManager, D: Detach<M>> Guard<M, D> {
    /// Takes ownership of a manager that is not entered yet.
    #[inline]
    pub fn new(manager: M, detach: D) -> Self {
        Guard {
            manager: Some(manager),
            meta: Meta {
                state: State::Idle,
                depth: 0,
                deadline_error: None,
                prev_active: None,
                has_deadline: false,
            },
            detach,
        }
    }

    /// Moves the manager into its boxed exit (see `Scope::exit`), if `D`
    /// can detach it.
    fn boxed_exit(&mut self, outcome: Outcome) -> Option<(Boxed<M::Error>, &'static str)>
    where
        D: Detach<M>,
    {
        let manager = self.manager.take()?;
        let name = manager.name();
        match self.detach.boxed_exit(manager, outcome) {
            Ok(boxed) => Some((boxed, name)),
            Err(manager) => {
                self.manager = Some(manager);
                None
            }
        }
    }

    fn parts(&mut self) -> (&mut M, &mut Meta<M::Error>) {
        // The manager is only taken out in `drop`.
        let manager = self
            .manager
            .as_mut()
            .expect("async-contextlib: guard used after drop");
        (manager, &mut self.meta)
    }
}

impl<M: AsyncContextManager, D: Detach<M>> Drop for Guard<M, D> {
    fn drop(&mut self) {
        let resumable = M::__RESUMABLE_EXIT && D::DETACHABLE;
        match self.meta.state {
            State::Entered => {}
            State::Exiting if resumable => {}
            _ => return,
        }
        self.meta.state = State::Done;
        let Some(manager) = self.manager.take() else {
            return;
        };
        match self.detach.job(manager) {
            Ok(job) => driver::queue(job),
            Err(manager) => finish_in_place(manager),
        }
    }
}

/// The exit of a cancelled borrowing manager: before the drop returns, or
/// abandoned and counted.
#[cold]
fn finish_in_place<M: AsyncContextManager>(manager: M) {
    let name = manager.name();
    let work = AssertUnwindSafe(exit_task(manager, Outcome::Cancelled)).catch_unwind();
    match driver::block_in_place(work) {
        Some(result) => {
            if !matches!(result, Ok(Ok(()))) {
                stats::exit_failed();
                crate::diag::report_exit_error(
                    name,
                    "cancelled",
                    &describe_exit_failure::<M::Error>(result.err()),
                );
            }
            stats::exited();
        }
        None => {
            stats::abandoned();
            crate::diag::report_abandoned(
                name,
                "a borrowing manager's exit can only be finished in place on a multi-thread \
                 tokio runtime; implement OwnedManager for owned managers",
            );
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Active {
    at: Instant,
    owner: u32,
}

/// The state of one `with_scope!` while it runs and unwinds.
#[allow(
    missing_debug_implementations,
    reason = "hidden; generic over values that need not be Debug"
)]
pub struct Scope<R> {
    result: Option<R>,
    outcome: Outcome,
    panic: Option<Payload>,
    depth: u32,
    active: Option<Active>,
    /// Set when a deadline cut the body: the depth of the manager that owns it.
    cut: Option<u32>,
    finished: bool,
}

impl<R> Default for Scope<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> Drop for Scope<R> {
    fn drop(&mut self) {
        if !self.finished {
            // Dropped mid-flight: one of our runners opened the cascade (or
            // none did, if the drop hit an `.await` inside a manager
            // expression). Either way the queued exits start now unless an
            // enclosing scope is still being dropped.
            driver::close(self.addr());
        }
    }
}

/// Opens the driver's cascade when a runner is dropped mid-await: declared
/// after the future it runs, so it is dropped first.
struct Opener {
    addr: usize,
    armed: bool,
}

impl Drop for Opener {
    fn drop(&mut self) {
        if self.armed {
            driver::open(self.addr);
        }
    }
}

impl<R> Scope<R> {
    /// A scope with nothing entered.
    #[inline]
    pub fn new() -> Self {
        Scope {
            result: None,
            outcome: Outcome::Success,
            panic: None,
            depth: 0,
            active: None,
            cut: None,
            finished: false,
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

    /// Runs `fut` under the active deadline, if any. `None`: the deadline
    /// cut it; it was dropped and the exits it queued were awaited.
    async fn bounded<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let Some(active) = self.active else {
            // Pin `fut` in a local declared *before* the opener: locals drop
            // in reverse order, so the opener fires first. (`fut.await` would
            // move `fut` into a temporary declared after the opener, dropped
            // before it: nested scopes then spawned their exits as separate
            // tasks, racing the outer ones instead of running first.)
            let mut fut = pin!(fut);
            let mut opener = Opener {
                addr: self.addr(),
                armed: true,
            };
            let out = fut.as_mut().await;
            opener.armed = false;
            return Some(out);
        };
        let mut slot = pin!(Some(fut));
        let mut sleep = pin!(tokio::time::sleep_until(active.at));
        let mut opener = Opener {
            addr: self.addr(),
            armed: true,
        };
        let polled = poll_fn(|cx: &mut Context<'_>| {
            if let Some(fut) = slot.as_mut().as_pin_mut() {
                if let Poll::Ready(out) = fut.poll(cx) {
                    return Poll::Ready(Some(out));
                }
            }
            match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        opener.armed = false;
        if polled.is_some() {
            return polled;
        }
        // Cut: drop what ran (its inner scopes queue their exits on the
        // cascade) and finish those exits here, innermost first, before the
        // managers of this scope exit.
        let jobs = driver::drop_in_cascade(self.addr(), || slot.set(None));
        driver::run_inline(jobs).await;
        self.cut = Some(active.owner);
        self.outcome = Outcome::Cancelled;
        None
    }

    /// Enters the guard's manager. `None`: it failed or panicked (recorded
    /// for the exits of the managers before it) or a deadline cut it.
    pub async fn enter<'g, M, D, C>(
        &mut self,
        guard: &'g mut Guard<M, D>,
        convert: C,
    ) -> Option<M::Value<'g>>
    where
        M: AsyncContextManager,
        D: Detach<M>,
        C: FnOnce(M::Error) -> (Failure, R),
    {
        let (manager, meta) = guard.parts();
        let deadline = manager.deadline();
        let name = manager.name();
        let entered = AssertUnwindSafe(manager.enter()).catch_unwind();
        let span = tracing::debug_span!("enter", manager = name);
        match self
            .bounded(tracing::Instrument::instrument(entered, span))
            .await?
        {
            Ok(Ok(value)) => {
                stats::entered();
                self.depth += 1;
                meta.state = State::Entered;
                meta.depth = self.depth;
                if let Some(deadline) = deadline {
                    meta.has_deadline = true;
                    meta.deadline_error = Some(deadline.error);
                    meta.prev_active = self.active;
                    if self.active.is_none_or(|a| deadline.at < a.at) {
                        self.active = Some(Active {
                            at: deadline.at,
                            owner: self.depth,
                        });
                    }
                }
                Some(value)
            }
            Ok(Err(error)) => {
                let (failure, result) = convert(error);
                self.outcome = Outcome::Failed(failure);
                self.result = Some(result);
                None
            }
            Err(payload) => {
                self.panicked(payload, name);
                None
            }
        }
    }

    /// Runs the scope's block; `classify` reads its value as an [`Outcome`].
    pub async fn body<B, K>(&mut self, body: B, classify: K)
    where
        B: Future<Output = R>,
        K: FnOnce(&R) -> Outcome,
    {
        match self.bounded(AssertUnwindSafe(body).catch_unwind()).await {
            Some(Ok(value)) => {
                self.outcome = classify(&value);
                self.result = Some(value);
            }
            Some(Err(payload)) => self.panicked(payload, "the scope's block"),
            None => {}
        }
    }

    /// Exits the guard's manager if it was entered, with the outcome so far.
    pub async fn exit<M, D, C>(&mut self, guard: &mut Guard<M, D>, convert: C)
    where
        M: AsyncContextManager,
        D: Detach<M>,
        C: Fn(M::Error) -> (Failure, R),
    {
        if guard.meta.state != State::Entered {
            return;
        }
        let depth = self.depth;
        self.depth -= 1;
        let cut_here = self.cut == Some(depth);
        let outcome = match self.cut {
            Some(owner) if depth >= owner => Outcome::Cancelled,
            _ => self.outcome.clone(),
        };
        let addr = self.addr();
        // An owned manager whose exit can be neither resumed by the driver
        // (hand-written) nor finished in place (no multi-thread runtime)
        // runs its exit boxed, so that a drop mid-exit can hand the exit
        // itself to the driver instead of cutting it short. Only there does
        // an exit cost an allocation.
        let boxed = if D::DETACHABLE && !M::__RESUMABLE_EXIT && !driver::can_block_in_place() {
            guard.boxed_exit(outcome.clone())
        } else {
            None
        };
        let (name, meta) = match &guard.manager {
            Some(manager) => (manager.name(), &mut guard.meta),
            None => (boxed.as_ref().map_or("", |b| b.1), &mut guard.meta),
        };
        if meta.has_deadline {
            self.active = meta.prev_active;
        }
        let result = match boxed {
            Some(((exit, handoff), name)) => {
                meta.state = State::Done;
                run_boxed_exit(exit, handoff, name, outcome).await
            }
            None => {
                let (manager, meta) = guard.parts();
                run_exit::<M, D>(manager, &mut meta.state, outcome, addr).await
            }
        };
        let meta = &mut guard.meta;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                stats::exit_failed();
                let (failure, result) = convert(error);
                if self.outcome.is_success() && self.cut.is_none() {
                    self.outcome = Outcome::Failed(failure);
                    self.result = Some(result);
                } else {
                    crate::diag::report_exit_error(name, "scope", failure.message());
                }
            }
            Err(payload) => {
                stats::exit_failed();
                self.panicked(payload, name);
            }
        }
        if cut_here {
            self.cut = None;
            if let Some(error) = meta.deadline_error.take() {
                let (failure, result) = convert(error);
                if self.panic.is_none() {
                    self.outcome = Outcome::Failed(failure);
                    self.result = Some(result);
                }
            }
        }
    }

    fn panicked(&mut self, payload: Payload, name: &'static str) {
        if self.panic.is_none() {
            self.outcome = Outcome::Panicked(Panic::from_payload(&*payload));
            self.panic = Some(payload);
        } else {
            crate::diag::report_exit_error(
                name,
                "scope",
                &format!(
                    "panicked while unwinding another panic: {}",
                    Panic::from_payload(&*payload).message()
                ),
            );
        }
    }

    /// The scope's value, or the resumed panic.
    pub fn finish(mut self) -> R {
        self.finished = true;
        if let Some(payload) = self.panic.take() {
            resume_unwind(payload);
        }
        self.result
            .take()
            .expect("async-contextlib: internal error: a scope finished without a value")
    }
}

/// Runs one exit, shielded: if the future running it is dropped before the
/// exit is done, the exit is finished — by the driver if the manager can
/// resume it, else in place, else abandoned and counted.
async fn run_exit<M, D>(
    manager: &mut M,
    state: &mut State,
    outcome: Outcome,
    addr: usize,
) -> Result<Result<(), M::Error>, Payload>
where
    M: AsyncContextManager,
    D: Detach<M>,
{
    let name = manager.name();
    let clock = crate::diag::Clock::start();
    let span = tracing::debug_span!("exit", manager = name, outcome = outcome.label());
    let exit = AssertUnwindSafe(manager.exit(outcome.clone())).catch_unwind();
    let exit = pin!(tracing::Instrument::instrument(exit, span));
    *state = State::Exiting;
    let mut shield = Shield {
        exit,
        state,
        name,
        resumable: M::__RESUMABLE_EXIT && D::DETACHABLE,
        opener: Opener { addr, armed: true },
    };
    let result = (&mut shield).await;
    shield.opener.armed = false;
    *shield.state = State::Done;
    stats::exited();
    clock.check(name, &outcome);
    result
}

/// Runs a boxed exit (see `Scope::exit`); dropped before it finishes, it
/// hands the rest of the exit to the driver.
async fn run_boxed_exit<E>(
    exit: BoxedExit<E>,
    handoff: Handoff<E>,
    name: &'static str,
    outcome: Outcome,
) -> Result<Result<(), E>, Payload> {
    let clock = crate::diag::Clock::start();
    let span = tracing::debug_span!("exit", manager = name, outcome = outcome.label());
    let mut handover = Handover {
        exit: Some(exit),
        handoff,
        name,
    };
    let result = tracing::Instrument::instrument(&mut handover, span).await;
    stats::exited();
    clock.check(name, &outcome);
    result
}

struct Handover<E> {
    exit: Option<BoxedExit<E>>,
    handoff: Handoff<E>,
    name: &'static str,
}

impl<E> Future for Handover<E> {
    type Output = Result<Result<(), E>, Payload>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let exit = self
            .exit
            .as_mut()
            .expect("async-contextlib: exit polled after it finished");
        let poll = std::panic::catch_unwind(AssertUnwindSafe(|| exit.as_mut().poll(cx)));
        let out = match poll {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => Ok(result),
            Err(payload) => Err(payload),
        };
        self.exit = None;
        Poll::Ready(out)
    }
}

impl<E> Unpin for Handover<E> {}

impl<E> Drop for Handover<E> {
    fn drop(&mut self) {
        if let Some(exit) = self.exit.take() {
            // The scope's own drop (`Scope::drop` → `driver::close`) spawns it.
            driver::queue((self.handoff)(exit, self.name));
        }
    }
}

struct Shield<'a, F: Future<Output = Result<Result<(), E>, Payload>>, E> {
    exit: Pin<&'a mut F>,
    state: &'a mut State,
    name: &'static str,
    resumable: bool,
    opener: Opener,
}

impl<F: Future<Output = Result<Result<(), E>, Payload>>, E> Future for Shield<'_, F, E> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.exit.as_mut().poll(cx)
    }
}

impl<F: Future<Output = Result<Result<(), E>, Payload>>, E> Unpin for Shield<'_, F, E> {}

impl<F: Future<Output = Result<Result<(), E>, Payload>>, E> Drop for Shield<'_, F, E> {
    fn drop(&mut self) {
        if *self.state != State::Exiting {
            return;
        }
        if self.resumable {
            // The guard's `Drop` hands the manager to the driver, which
            // resumes this exit where it stopped.
            return;
        }
        *self.state = State::Done;
        if let Some(result) = driver::block_in_place(self.exit.as_mut()) {
            if !matches!(result, Ok(Ok(()))) {
                stats::exit_failed();
                crate::diag::report_exit_error(
                    self.name,
                    "cancelled mid-exit",
                    &describe_exit_failure::<E>(result.err()),
                );
            }
            stats::exited();
        } else {
            stats::abandoned();
            crate::diag::report_abandoned(
                self.name,
                "the scope was dropped mid-exit where the exit cannot be finished in place \
                 (no multi-thread tokio runtime)",
            );
        }
    }
}

/// Text for an exit failure seen where the error's type is generic: a
/// panic's message, or the error type's name.
fn describe_exit_failure<E>(panic: Option<Payload>) -> String {
    match panic {
        Some(payload) => format!("panicked: {}", Panic::from_payload(&*payload).message()),
        None => format!("an error of type `{}`", std::any::type_name::<E>()),
    }
}
