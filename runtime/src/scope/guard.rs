//! One manager of a scope: the [`Guard`] that owns it, knows how far it got
//! (idle → entered → exiting → done), and finishes its exit if the scope is
//! dropped — detached to the driver (owned managers) or in place (borrowing
//! ones). Exactly-once is structural: the scope's `exit` runs only for a
//! guard in state `Entered` and moves it on; `Drop` runs an exit only for a
//! guard still entered (or resumable mid-exit).

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use super::step::{Boxed, handoff, handoff_counted};
use crate::driver::watch::Watched;
use crate::driver::{self, Job, in_place};
use crate::{AsyncContextManager, Outcome, OwnedManager, Panic};

/// How a guard finishes its manager's exit when the scope is dropped.
/// Chosen at the `with_scope!` call site (see `dispatch`), where the
/// manager's type is concrete.
pub trait Detach<M: AsyncContextManager> {
    /// Whether `job` returns a job (owned manager with a `Send` exit).
    const DETACHABLE: bool;
    /// Turns the manager into a detached job running its exit with
    /// `outcome`, or gives both back.
    fn job(&self, manager: M, name: &'static str, outcome: Outcome) -> Result<Job, (M, Outcome)>;
    /// The manager's exit as a boxed `'static` future (that can be handed to
    /// the driver mid-exit), or the manager back.
    fn boxed_exit(&self, manager: M, outcome: Outcome) -> Result<Boxed<M::Error>, M>;
}

/// Finish the exit in place (borrowing managers, or exits that are not `Send`).
#[derive(Clone, Copy, Debug)]
pub struct InPlace;

impl<M: AsyncContextManager> Detach<M> for InPlace {
    const DETACHABLE: bool = false;
    fn job(&self, manager: M, _: &'static str, outcome: Outcome) -> Result<Job, (M, Outcome)> {
        Err((manager, outcome))
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
    fn job(&self, manager: M, name: &'static str, outcome: Outcome) -> Result<Job, (M, Outcome)> {
        let work = (self.0)(manager, outcome);
        Ok(Job::exit(name, work, M::__EXIT_COUNTS_ITSELF))
    }
    fn boxed_exit(&self, manager: M, outcome: Outcome) -> Result<Boxed<M::Error>, M> {
        // `M: 'static`, so `M::Error: 'static`.
        let handoff = if M::__EXIT_COUNTS_ITSELF {
            handoff_counted::<M::Error>
        } else {
            handoff::<M::Error>
        };
        Ok((Box::pin((self.0)(manager, outcome)), handoff))
    }
}

/// The exit of `manager`, as an owned future (the detached form of an exit).
/// The call to `exit` happens on its first poll, where a panic is caught.
pub async fn exit_task<M: AsyncContextManager>(
    mut manager: M,
    outcome: Outcome,
) -> Result<(), M::Error> {
    manager.exit(outcome).await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
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
    pub(crate) manager: Option<M>,
    pub(crate) meta: Meta<M::Error>,
    detach: D,
}

pub(crate) struct Meta<E> {
    pub(crate) state: State,
    /// The manager's name, read (panics caught) when it was entered: the
    /// drop paths must not call user code outside `catch_unwind`.
    pub(crate) name: &'static str,
    /// The address of the scope that entered it, for the driver's cascade.
    pub(crate) scope: usize,
    /// The error a deadline of this manager fails the scope with.
    pub(crate) deadline_error: Option<E>,
    /// It added a deadline or a token to the scope's bounds: its exit
    /// restores the bounds from before it.
    pub(crate) bounds: bool,
    /// A cut by its deadline is absorbed (trio's `move_on_after`): the
    /// scope's value becomes what its error raises into, and the managers
    /// outside it see success.
    pub(crate) moves_on: bool,
    /// It pushed a cancellation token on the scope (`cancelled_by`).
    pub(crate) has_token: bool,
    /// The opt-in diagnostics on for it (see `driver/watch.rs`).
    pub(crate) watched: Watched,
}

impl<M: AsyncContextManager, D: Detach<M>> Guard<M, D> {
    /// Takes ownership of a manager that is not entered yet.
    #[inline]
    pub fn new(manager: M, detach: D) -> Self {
        Guard {
            manager: Some(manager),
            meta: Meta {
                state: State::Idle,
                name: "",
                scope: 0,
                deadline_error: None,
                bounds: false,
                moves_on: false,
                has_token: false,
                watched: Watched::default(),
            },
            detach,
        }
    }

    /// Moves the manager into its boxed exit (see `Scope::exit`), if `D`
    /// can detach it.
    pub(crate) fn boxed_exit(&mut self, outcome: Outcome) -> Option<Boxed<M::Error>> {
        let manager = self.manager.take()?;
        match self.detach.boxed_exit(manager, outcome) {
            Ok(boxed) => Some(boxed),
            Err(manager) => {
                self.manager = Some(manager);
                None
            }
        }
    }

    pub(crate) fn parts(&mut self) -> (&mut M, &mut Meta<M::Error>) {
        // The manager is only taken out in `drop` and by `boxed_exit`.
        let manager = self
            .manager
            .as_mut()
            .expect("async-contextlib: guard used after drop");
        (manager, &mut self.meta)
    }
}

impl<M: AsyncContextManager, D: Detach<M>> Drop for Guard<M, D> {
    #[inline]
    fn drop(&mut self) {
        // Not entered, or exited: nothing to do (a tracked manager's
        // registry entry ended with its enter or exit). The happy path
        // tests this and nothing else.
        if matches!(self.meta.state, State::Entered | State::Exiting) {
            self.dropped_entered();
        }
    }
}

impl<M: AsyncContextManager, D: Detach<M>> Guard<M, D> {
    /// A guard dropped with its manager entered (or mid-exit): the scope
    /// was cancelled, or a panic unwinds through it.
    #[cold]
    #[inline(never)]
    fn dropped_entered(&mut self) {
        if self.meta.watched.hooks.any() {
            self.meta.watched.end();
        }
        if M::__DROP_CANCELS {
            // Its own drop (right after this) finishes what it entered;
            // that is its exit.
            crate::driver::stats::exited(self.meta.name);
            return;
        }
        let resumable = M::__RESUMABLE_EXIT && D::DETACHABLE;
        if self.meta.state == State::Exiting && !resumable {
            return;
        }
        self.meta.state = State::Done;
        let Some(manager) = self.manager.take() else {
            return;
        };
        let (name, scope) = (self.meta.name, self.meta.scope);
        let outcome = dropped_outcome("the scope");
        match self.detach.job(manager, name, outcome) {
            Ok(job) => driver::queue(scope, job),
            Err((manager, outcome)) => finish_in_place(manager, name, scope, outcome),
        }
    }
}

/// What the exits of something dropped with managers entered (a guard, an
/// exit stack: `what`) see: `Cancelled`, or `Panicked` when a panic
/// unwinds through it (from outside a scope's steps: a later manager's
/// expression, a sibling future of the same task).
#[cold]
pub(crate) fn dropped_outcome(what: &str) -> Outcome {
    if std::thread::panicking() {
        Outcome::Panicked(Panic::new(&format!("a panic unwound through {what}")))
    } else {
        Outcome::Cancelled
    }
}

/// The exit of a dropped borrowing manager: before the drop returns, or
/// abandoned and counted.
#[cold]
fn finish_in_place<M: AsyncContextManager>(
    manager: M,
    name: &'static str,
    scope: usize,
    outcome: Outcome,
) {
    let label = outcome.label();
    let work = AssertUnwindSafe(exit_task(manager, outcome)).catch_unwind();
    in_place::record::<M::Error>(name, label, in_place::finish(scope, name, work));
}
