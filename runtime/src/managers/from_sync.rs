//! `from_sync`: a blocking enter/exit pair as a manager whose blocking work
//! runs on tokio's blocking threads.
//!
//! Blocking work cannot be cut: once `spawn_blocking` runs the enter, it
//! finishes whatever happens to the scope. So an enter cut by a timeout or a
//! cancellation is not lost — the resource it acquires (a lock on a file,
//! say) is released: when the enter completes after its future was
//! dropped, its exit runs right there, on the blocking thread, with
//! [`Outcome::Cancelled`], counted as entered and exited (and held by a
//! ticket until then, so `drain` waits for it).

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::driver::ticket::{Kind, Ticket};
use crate::driver::{diag, in_place, stats};
use crate::outcome::Payload;
use crate::{AsyncContextManager, Outcome, OwnedManager, Panic};

const NAME: &str = "async_contextlib::from_sync";

/// Turns a blocking enter/exit pair into a manager whose blocking work runs
/// on tokio's blocking threads (`spawn_blocking`), off the async workers:
/// for a file lock, a synchronous database driver, a C library.
///
/// `enter` produces the resource; the block borrows it as `&mut T`; `exit`
/// gets it back with the block's [`Outcome`]. A panic in either resumes in
/// the scope. Needs a tokio runtime.
///
/// An enter cannot be cut once it runs: if the scope is cancelled (or its
/// `timeout` fires) while it does, the exit runs as soon as the enter
/// completes, on the blocking thread, with `Outcome::Cancelled`. Neither
/// can an exit: one in flight when its runtime shuts down finishes on its
/// blocking thread (or on the library's own runtime's, if the shutting-down
/// one refuses it), without holding up the shutdown, and is counted exited
/// when it ends (`drain` waits for it).
///
/// ```
/// use async_contextlib::{from_sync, with_scope, Outcome};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let manager = from_sync(
///     || Ok::<_, std::io::Error>(Vec::<u8>::new()),           // e.g. open and lock a file
///     |buf: Vec<u8>, outcome: Outcome| {                       // e.g. flush and unlock it
///         assert!(outcome.is_success());
///         assert_eq!(buf, b"hi");
///         Ok(())
///     },
/// );
/// let r: Result<(), std::io::Error> = with_scope!(manager as buf => {
///     buf.extend_from_slice(b"hi");
///     Ok(())
/// });
/// r.unwrap();
/// # }
/// ```
pub fn from_sync<T, E, En, Ex>(enter: En, exit: Ex) -> FromSync<T, En, Ex>
where
    En: FnOnce() -> Result<T, E> + Send + 'static,
    Ex: FnOnce(T, Outcome) -> Result<(), E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    FromSync {
        enter: Some(enter),
        shared: Arc::new(Shared {
            state: Mutex::new(State::Idle),
            exit: Mutex::new(Some(exit)),
        }),
        value: None,
    }
}

/// The manager returned by [`from_sync`].
pub struct FromSync<T, En, Ex> {
    enter: Option<En>,
    shared: Arc<Shared<T, Ex>>,
    value: Option<T>,
}

impl<T, En, Ex> std::fmt::Debug for FromSync<T, En, Ex> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromSync")
            .field("entered", &self.value.is_some())
            .finish_non_exhaustive()
    }
}

/// What the blocking enter and the future waiting for it share.
struct Shared<T, Ex> {
    state: Mutex<State<T>>,
    /// Taken by the scope's exit, or by a cut enter's cleanup.
    exit: Mutex<Option<Ex>>,
}

enum State<T> {
    Idle,
    /// Spawned, not yet started by a blocking thread (one that finds
    /// anything else here runs nothing: its future is gone).
    Queued,
    Running,
    /// The enter finished with this value.
    Entered(T),
    /// The enter failed (its error goes back through the join) or
    /// panicked (its payload is here).
    Failed(Option<Payload>),
    /// The future waiting for the enter was dropped: whoever finishes the
    /// enter runs the exit, under this ticket.
    Abandoned(Ticket),
    Taken,
}

fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the exit of an enter whose scope is gone (counted entered by the
/// caller), on this (blocking) thread, and counts it exited.
fn cleanup<T, E, Ex>(shared: &Shared<T, Ex>, value: T, ticket: Ticket)
where
    Ex: FnOnce(T, Outcome) -> Result<(), E>,
{
    let exit = lock(&shared.exit).take();
    let result = exit.map_or(Ok(Ok(())), |exit| {
        catch_unwind(AssertUnwindSafe(|| exit(value, Outcome::Cancelled)))
    });
    count_exit(&result, "after a cut enter", ticket);
}

/// The future of a `from_sync` enter: waits for the blocking enter, and if
/// dropped first, leaves its cleanup to whoever finishes it.
struct SyncEnter<T, E, Ex>
where
    T: Send + 'static,
    E: Send + 'static,
    Ex: FnOnce(T, Outcome) -> Result<(), E> + Send + 'static,
{
    join: JoinHandle<Result<(), E>>,
    shared: Arc<Shared<T, Ex>>,
}

impl<T, E, Ex> Future for SyncEnter<T, E, Ex>
where
    T: Send + 'static,
    E: Send + 'static,
    Ex: FnOnce(T, Outcome) -> Result<(), E> + Send + 'static,
{
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let joined = ready!(Pin::new(&mut self.join).poll(cx));
        let state = std::mem::replace(&mut *lock(&self.shared.state), State::Taken);
        match (state, joined) {
            (State::Entered(value), _) => Poll::Ready(Ok(value)),
            (State::Failed(Some(payload)), _) => resume_unwind(payload),
            (_, Ok(Err(error))) => Poll::Ready(Err(error)),
            (_, Err(e)) if e.is_panic() => resume_unwind(e.into_panic()),
            // Refused before it ran (its runtime is shutting down): nothing
            // was acquired.
            (_, joined) => panic!(
                "async-contextlib: from_sync's enter could not run, nothing was acquired ({:?})",
                joined.err()
            ),
        }
    }
}

impl<T, E, Ex> Drop for SyncEnter<T, E, Ex>
where
    T: Send + 'static,
    E: Send + 'static,
    Ex: FnOnce(T, Outcome) -> Result<(), E> + Send + 'static,
{
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        match std::mem::replace(&mut *state, State::Taken) {
            // Not started: it never will be, nothing was acquired.
            State::Queued => {}
            // Still blocking: its thread runs the exit when it is done.
            State::Running => *state = State::Abandoned(Ticket::new(NAME, Kind::Blocking)),
            // Done, but never picked up: entered, and the value is ours to
            // release, on a blocking pool too — the driver's own if this
            // runtime is shutting down (it would drop the task unrun). With
            // no runtime left to run it, the ticket counts it lost.
            State::Entered(value) => {
                drop(state);
                stats::entered(NAME);
                let ticket = Ticket::new(NAME, Kind::Blocking);
                let shared = self.shared.clone();
                let work = move || cleanup(&shared, value, ticket);
                let handle = Handle::try_current()
                    .ok()
                    .filter(|h| !in_place::shutting_down(h))
                    .or_else(crate::driver::fallback);
                if let Some(handle) = handle {
                    let _ = in_place::silently(move || drop(handle.spawn_blocking(work)));
                }
            }
            other => *state = other,
        }
    }
}

/// A blocking exit, shared by its future and the blocking thread that
/// runs it.
struct ExitSlot<T, E, Ex> {
    /// Until a blocking thread takes it: a task the runtime refused (or
    /// dropped unrun) leaves it here.
    work: Option<(Ex, T, Outcome)>,
    /// What it returned, or its panic, for the future.
    ended: Option<std::thread::Result<Result<(), E>>>,
    /// The future was dropped first, by a job that let the exit count its
    /// own end (`ticket::hand_off`): the blocking thread counts it, under
    /// this ticket. Dropped with the slot unfinished (the exit never ran),
    /// the ticket counts it lost.
    handed: Option<Ticket>,
}

/// The future of a `from_sync` exit: runs the exit on a blocking thread and
/// waits for it.
struct SyncExit<T, E, Ex> {
    slot: Arc<Mutex<ExitSlot<T, E, Ex>>>,
    join: Option<JoinHandle<()>>,
    /// Spawned on the driver's own runtime: the current one refused it, or
    /// is shutting down.
    on_fallback: bool,
    /// How many blocking tasks ended (a second one is spawned only if the
    /// first was refused unrun).
    refused: u8,
}

impl<T, E, Ex> SyncExit<T, E, Ex>
where
    T: Send + 'static,
    E: Send + 'static,
    Ex: FnOnce(T, Outcome) -> Result<(), E> + Send + 'static,
{
    /// Hands the exit to a blocking thread: of the current runtime, else
    /// of the driver's own one — also when the current one is shutting
    /// down (it refused the task, or this is the one last poll of a job it
    /// dropped: the exit must neither block that shutdown nor wait on it).
    /// `None` where neither can take it.
    fn spawn(&mut self) -> Option<JoinHandle<()>> {
        // Refused by the driver's own runtime too: nowhere.
        if self.refused > 1 {
            return None;
        }
        self.on_fallback |= crate::driver::last_chance() || self.refused > 0;
        if !self.on_fallback {
            if let Ok(handle) = Handle::try_current() {
                if let Some(join) = spawn_on(&handle, &self.slot) {
                    return Some(join);
                }
            }
            self.on_fallback = true;
        }
        spawn_on(&crate::driver::fallback()?, &self.slot)
    }
}

fn spawn_on<T, E, Ex>(
    handle: &Handle,
    slot: &Arc<Mutex<ExitSlot<T, E, Ex>>>,
) -> Option<JoinHandle<()>>
where
    T: Send + 'static,
    E: Send + 'static,
    Ex: FnOnce(T, Outcome) -> Result<(), E> + Send + 'static,
{
    let slot = slot.clone();
    // A runtime shutting down may panic here (older tokio): refused.
    in_place::silently(move || handle.spawn_blocking(move || run_exit(&slot))).ok()
}

/// On the blocking thread: runs the exit, and leaves what it returned to
/// its future, or counts it (handed over).
fn run_exit<T, E, Ex>(slot: &Mutex<ExitSlot<T, E, Ex>>)
where
    Ex: FnOnce(T, Outcome) -> Result<(), E>,
{
    let Some((exit, value, outcome)) = lock(slot).work.take() else {
        return;
    };
    let result = catch_unwind(AssertUnwindSafe(|| exit(value, outcome)));
    let mut slot = lock(slot);
    match slot.handed.take() {
        None => slot.ended = Some(result),
        Some(ticket) => {
            drop(slot);
            count_exit(&result, "detached", ticket);
        }
    }
}

/// Counts the end of an exit no future waits for (a cut enter's, or one
/// whose future was dropped first), as the job that would have run it
/// would: exited, failed if it failed, reported (`context`).
fn count_exit<E>(
    result: &std::thread::Result<Result<(), E>>,
    context: &'static str,
    mut ticket: Ticket,
) {
    let failure = match result {
        Ok(Ok(())) => None,
        Ok(Err(_)) => Some(format!("an error of type `{}`", std::any::type_name::<E>())),
        Err(payload) => Some(format!(
            "panicked: {}",
            Panic::from_payload(&**payload).message()
        )),
    };
    if let Some(failure) = failure {
        stats::exit_failed(NAME);
        diag::report_exit_error(NAME, context, &failure);
    }
    stats::exited(NAME);
    ticket.done();
}

impl<T, E, Ex> Future for SyncExit<T, E, Ex>
where
    T: Send + 'static,
    E: Send + 'static,
    Ex: FnOnce(T, Outcome) -> Result<(), E> + Send + 'static,
{
    type Output = Result<(), E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        loop {
            if let Some(join) = self.join.as_mut() {
                // Its end is in the slot (the exit's panic is caught there);
                // a task refused unrun left the work there.
                let _ = ready!(Pin::new(join).poll(cx));
                self.join = None;
                self.refused += 1;
            }
            let mut slot = lock(&self.slot);
            match slot.ended.take() {
                Some(Ok(result)) => return Poll::Ready(result),
                Some(Err(payload)) => resume_unwind(payload),
                None => {
                    assert!(
                        slot.work.is_some(),
                        "async-contextlib: a from_sync exit ended without a result"
                    );
                    drop(slot);
                    match self.spawn() {
                        Some(join) => self.join = Some(join),
                        // No runtime can take it: here, then.
                        None => run_exit(&self.slot),
                    }
                }
            }
        }
    }
}

impl<T, E, Ex> Drop for SyncExit<T, E, Ex> {
    fn drop(&mut self) {
        if self.join.is_none() {
            // Never spawned, or ended and returned.
            return;
        }
        let mut slot = lock(&self.slot);
        // Its runtime is shutting down, the exit in flight: it is counted
        // once, here or by its blocking thread (or lost with the slot if
        // it never runs), if the job dropping this lets it.
        if crate::driver::ticket::hand_off() {
            let ticket = Ticket::new(NAME, Kind::Blocking);
            match slot.ended.take() {
                Some(result) => {
                    drop(slot);
                    count_exit(&result, "detached", ticket);
                }
                None => slot.handed = Some(ticket),
            }
        }
    }
}

impl<T, E, En, Ex> AsyncContextManager for FromSync<T, En, Ex>
where
    En: FnOnce() -> Result<T, E> + Send + 'static,
    Ex: FnOnce(T, Outcome) -> Result<(), E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    type Value<'a>
        = &'a mut T
    where
        Self: 'a;
    type Error = E;

    async fn enter(&mut self) -> Result<&mut T, E> {
        let enter = self
            .enter
            .take()
            .expect("async-contextlib: from_sync manager entered twice; a manager is single-use");
        *lock(&self.shared.state) = State::Queued;
        let shared = self.shared.clone();
        let join = tokio::task::spawn_blocking(move || {
            {
                let mut state = lock(&shared.state);
                if !matches!(*state, State::Queued) {
                    // Its future is gone: nothing to acquire.
                    return Ok(());
                }
                *state = State::Running;
            }
            let entered = catch_unwind(AssertUnwindSafe(enter));
            let mut state = lock(&shared.state);
            match (std::mem::replace(&mut *state, State::Taken), entered) {
                (State::Abandoned(ticket), Ok(Ok(value))) => {
                    drop(state);
                    stats::entered(NAME);
                    cleanup(&shared, value, ticket);
                    Ok(())
                }
                // Abandoned and failed or panicked: nothing was acquired.
                (State::Abandoned(mut ticket), _) => {
                    ticket.done();
                    Ok(())
                }
                (_, Ok(Ok(value))) => {
                    *state = State::Entered(value);
                    Ok(())
                }
                (_, Ok(Err(error))) => {
                    *state = State::Failed(None);
                    Err(error)
                }
                (_, Err(payload)) => {
                    *state = State::Failed(Some(payload));
                    Ok(())
                }
            }
        });
        let shared = self.shared.clone();
        let value = SyncEnter { join, shared }.await?;
        Ok(self.value.insert(value))
    }

    async fn exit(&mut self, outcome: Outcome) -> Result<(), E> {
        let exit = lock(&self.shared.exit).take();
        let (Some(exit), Some(value)) = (exit, self.value.take()) else {
            return Ok(());
        };
        SyncExit {
            slot: Arc::new(Mutex::new(ExitSlot {
                work: Some((exit, value, outcome)),
                ended: None,
                handed: None,
            })),
            join: None,
            on_fallback: false,
            refused: 0,
        }
        .await
    }

    fn name(&self) -> &'static str {
        NAME
    }

    const __EXIT_COUNTS_ITSELF: bool = true;
}

impl<T, E, En, Ex> OwnedManager for FromSync<T, En, Ex>
where
    En: FnOnce() -> Result<T, E> + Send + 'static,
    Ex: FnOnce(T, Outcome) -> Result<(), E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
}

impl<T, E, En, Ex> crate::SendManager for FromSync<T, En, Ex>
where
    En: FnOnce() -> Result<T, E> + Send + 'static,
    Ex: FnOnce(T, Outcome) -> Result<(), E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    async fn exit_owned(mut self, outcome: Outcome) -> Result<(), E> {
        self.exit(outcome).await
    }
    crate::managers::stack::detach_static!();
}
