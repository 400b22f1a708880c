//! `TaskGroup`: Python 3.11's `asyncio.TaskGroup` (trio's nursery), as a
//! manager over tokio's `JoinSet`.
//!
//! # Layout
//!
//! The manager and every handle share one `Arc<Shared>`: the `JoinSet`, the
//! first failure, and two flags, behind a mutex that is never held across
//! an await (the exit polls the set with `poll_join_next` under the lock,
//! one poll at a time), nor while user code runs (a future is dropped, or a
//! panic raised, only after the lock is released).
//!
//! Each task is the user's future wrapped: its result (or its panic, caught)
//! is recorded in `Shared` by the task itself, which aborts the siblings at
//! once — they do not wait for the scope's exit to notice. The exit then
//! only waits for the set to be empty.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, resume_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::FutureExt;
use tokio::task::{JoinError, JoinSet};

use crate::driver::{Job, JobKind, cascade, diag, in_place, stats};
use crate::managers::stack::{BoxError, ExitResult};
use crate::outcome::Payload;
use crate::{AsyncContextManager, Outcome, OwnedManager, Panic, SendManager};

const NAME: &str = "async_contextlib::TaskGroup";

/// Python 3.11's `asyncio.TaskGroup` (trio's nursery): tasks spawned in a
/// scope, all finished — or all aborted — before the scope ends.
///
/// Entered, it lends a [`TaskGroupHandle`]; [`spawn`](TaskGroupHandle::spawn)
/// starts a task on the tokio runtime (a `JoinSet` underneath). The exit
/// waits for every task, including tasks spawned by tasks (clone the handle
/// into them).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use async_contextlib::{TaskError, TaskGroup, with_scope};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let done = Arc::new(AtomicUsize::new(0));
/// let r: Result<(), TaskError> = with_scope!(TaskGroup::new() as tg => {
///     for _ in 0..3 {
///         let done = done.clone();
///         tg.spawn(async move {
///             tokio::task::yield_now().await;
///             done.fetch_add(1, Ordering::SeqCst);
///         });
///     }
///     Ok(())
/// });
/// r.unwrap();
/// assert_eq!(done.load(Ordering::SeqCst), 3); // the exit waited for all three
/// # }
/// ```
///
/// * **Tasks** are `Send + 'static` futures whose output is `()` or
///   `Result<(), E>` with `E: Into<BoxError>` (any `std::error::Error +
///   Send + Sync + 'static`, or a `String`); see [`ExitResult`]. In an
///   `async` block that uses `?`, name the error type:
///   `Ok::<_, MyError>(())`.
/// * **A task fails** (returns `Err`, or panics): every other task is
///   aborted at once, tasks spawned later are dropped unrun, and the exit —
///   once the aborted tasks are gone — fails the scope with the first
///   failure: an error comes back as [`TaskError`] (converted into the
///   block's error type, like any manager error); a panic resumes in the
///   caller of the scope once every exit has run, as a panic of the block
///   would. Later failures are reported (a warning-level `tracing` event
///   naming the manager) and counted in
///   [`stats()`](crate::stats)`.exit_failures`.
/// * **The block is not cut** by a failing task: it runs to its end, and
///   the exit reports the failure after. A block that should stop early
///   races its work against [`tg.aborted()`](TaskGroupHandle::aborted)
///   (`select!`).
/// * **The block fails, panics, or the scope is cancelled** (its future
///   dropped by `tokio::time::timeout`, `select!` or `JoinHandle::abort`):
///   every task is aborted and the exit waits until each is gone (their
///   destructors have run). On cancellation the group is an owned manager:
///   the exit runs on the exit driver after the drop, and
///   [`drain`](crate::drain) waits for it. A task failure seen then does not
///   replace the block's error: it is reported and counted.
/// * **Runtime.** `spawn` needs a tokio runtime (it panics outside one, as
///   `tokio::spawn` does). Inside a cancelled [`ExitStack`](crate::ExitStack)
///   of owned entries, the group is handed to the exit driver with them.
///   Where the stack finishes its entries in place instead (a borrowing
///   entry or a callback in it), on a current-thread runtime, whose tasks
///   cannot run meanwhile, the group aborts its tasks there and hands the
///   wait for them to the exit driver (`drain` waits for it).
#[derive(Debug)]
pub struct TaskGroup {
    handle: TaskGroupHandle,
}

/// What a [`TaskGroup`]'s scope binds (as `&TaskGroupHandle`): spawns tasks
/// into the group. Clone it to move it into a task that spawns more.
#[derive(Clone)]
pub struct TaskGroupHandle {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Notified (all waiters) when `aborting` becomes true.
    aborting: tokio::sync::Notify,
}

struct State {
    set: JoinSet<()>,
    /// The first task failure, returned (or resumed) by the exit.
    first: Option<Fault>,
    /// A task failed, or the block did not succeed: every task is aborted
    /// and new ones are dropped unrun.
    aborting: bool,
    /// The exit is done (or the group was dropped): spawning is a bug.
    closed: bool,
    /// The wait for the aborted tasks went to the driver: failures are
    /// reported, not returned.
    detached: bool,
}

/// How a task failed.
enum Fault {
    Error(BoxError),
    Panic(Payload),
}

impl Fault {
    fn describe(&self) -> String {
        match self {
            Fault::Error(e) => e.to_string(),
            Fault::Panic(p) => format!("panicked: {}", Panic::from_payload(&**p).message()),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a task's failure: the first one aborts every task; later
    /// ones are reported and counted.
    fn fail(&self, fault: Fault) {
        let mut state = self.lock();
        if state.first.is_none() && !state.closed && !state.detached {
            state.first = Some(fault);
            state.aborting = true;
            state.set.abort_all();
            drop(state);
            self.aborting.notify_waiters();
        } else {
            drop(state);
            stats::exit_failed(NAME);
            diag::report_task_failure(NAME, &fault.describe());
        }
    }

    fn abort(&self) {
        let mut state = self.lock();
        state.aborting = true;
        state.set.abort_all();
        drop(state);
        self.aborting.notify_waiters();
    }

    /// A task that ended without recording its own result: aborted (not a
    /// failure), or panicked while being dropped (a failure).
    fn joined(&self, result: Result<(), JoinError>) {
        if let Err(e) = result {
            if e.is_panic() {
                self.fail(Fault::Panic(e.into_panic()));
            }
        }
    }

    /// Ready once the set is empty; then closes the group.
    fn poll_empty(&self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut state = self.lock();
            match state.set.poll_join_next(cx) {
                Poll::Ready(Some(result)) => {
                    drop(state);
                    self.joined(result);
                }
                Poll::Ready(None) => {
                    state.closed = true;
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl TaskGroup {
    /// An empty group.
    #[must_use]
    pub fn new() -> TaskGroup {
        TaskGroup {
            handle: TaskGroupHandle {
                shared: Arc::new(Shared {
                    state: Mutex::new(State {
                        set: JoinSet::new(),
                        first: None,
                        aborting: false,
                        closed: false,
                        detached: false,
                    }),
                    aborting: tokio::sync::Notify::new(),
                }),
            },
        }
    }
}

impl Default for TaskGroup {
    fn default() -> TaskGroup {
        TaskGroup::new()
    }
}

impl Drop for TaskGroup {
    /// Dropped without its exit (never entered, or its exit abandoned): the
    /// tasks left are aborted, not awaited.
    fn drop(&mut self) {
        let shared = &self.handle.shared;
        let mut state = shared.lock();
        state.closed = true;
        state.aborting = true;
        state.set.abort_all();
        drop(state);
        shared.aborting.notify_waiters();
    }
}

impl TaskGroupHandle {
    /// Spawns `task` into the group, on the current tokio runtime.
    ///
    /// The task's output is `()` or `Result<(), E>` with `E:
    /// Into<BoxError>`; an `Err` or a panic fails the group (see
    /// [`TaskGroup`]). Once the group is failing or aborting (a task failed,
    /// the block did not succeed, the scope was cancelled), `task` is
    /// dropped without being run.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or after the group's exit has finished (a
    /// handle kept past its scope).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future + Send + 'static,
        F::Output: ExitResult,
    {
        assert!(
            tokio::runtime::Handle::try_current().is_ok(),
            "async-contextlib: TaskGroupHandle::spawn called outside a tokio runtime"
        );
        let mut state = self.shared.lock();
        if state.closed {
            drop(state);
            panic!("async-contextlib: TaskGroupHandle::spawn called after the group's scope ended");
        }
        if state.aborting {
            drop(state);
            drop(task);
            return;
        }
        // Tasks that ended are collected here too, so that a long-lived
        // group does not keep one entry per finished task until its exit.
        let mut ended = Vec::new();
        while let Some(result) = state.set.try_join_next() {
            ended.push(result);
        }
        let shared = self.shared.clone();
        state.set.spawn(async move {
            match AssertUnwindSafe(task).catch_unwind().await {
                Ok(output) => {
                    if let Err(error) = output.into_exit() {
                        shared.fail(Fault::Error(error));
                    }
                }
                Err(payload) => shared.fail(Fault::Panic(payload)),
            }
        });
        drop(state);
        for result in ended {
            self.shared.joined(result);
        }
    }

    /// The number of tasks spawned and not yet collected (finished tasks
    /// are collected by the next `spawn` and by the exit).
    #[must_use]
    pub fn len(&self) -> usize {
        self.shared.lock().set.len()
    }

    /// Whether [`len`](Self::len) is zero.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the group is aborting its tasks: one failed, the block did
    /// not succeed, or the scope was cancelled.
    #[must_use]
    pub fn is_aborting(&self) -> bool {
        self.shared.lock().aborting
    }

    /// Resolves once the group is aborting (see
    /// [`is_aborting`](Self::is_aborting)): a task failed. A failing task
    /// does not cut the block; a block that should stop early races its
    /// work against this.
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_contextlib::{TaskGroup, with_scope};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let r: Result<&str, async_contextlib::TaskError> = with_scope!(TaskGroup::new() as tg => {
    ///     tg.spawn(async { Err::<(), _>("no route to host") });
    ///     tokio::select! {
    ///         () = tg.aborted() => Ok("stopped early"),
    ///         () = tokio::time::sleep(Duration::from_secs(60)) => Ok("finished"),
    ///     }
    /// });
    /// // The block stopped early; the scope fails with the task's error.
    /// assert_eq!(r.unwrap_err().to_string(), "no route to host");
    /// # }
    /// ```
    pub async fn aborted(&self) {
        let notified = self.shared.aborting.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the flag is read: a notification in between is
        // not missed.
        notified.as_mut().enable();
        if self.is_aborting() {
            return;
        }
        notified.await;
    }
}

impl fmt::Debug for TaskGroupHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("TaskGroupHandle")
            .field("tasks", &state.set.len())
            .field("aborting", &state.aborting)
            .field("closed", &state.closed)
            .finish_non_exhaustive()
    }
}

impl AsyncContextManager for TaskGroup {
    type Value<'a> = &'a TaskGroupHandle;
    type Error = TaskError;

    async fn enter(&mut self) -> Result<&TaskGroupHandle, TaskError> {
        Ok(&self.handle)
    }

    async fn exit(&mut self, outcome: Outcome) -> Result<(), TaskError> {
        let shared = &*self.handle.shared;
        if !outcome.is_success() {
            shared.abort();
            if in_place::stalls_runtime() {
                // Finishing in place (a cancelled `ExitStack`) on a thread
                // whose runtime cannot run the aborted tasks meanwhile: the
                // driver waits for them instead, and `drain` waits for it.
                self.wait_detached();
            }
        }
        std::future::poll_fn(|cx| shared.poll_empty(cx)).await;
        let first = shared.lock().first.take();
        match first {
            None => Ok(()),
            Some(Fault::Error(error)) => Err(TaskError { inner: error }),
            Some(Fault::Panic(payload)) => resume_unwind(payload),
        }
    }

    fn name(&self) -> &'static str {
        NAME
    }
}

impl TaskGroup {
    /// Hands the wait for the (aborted) tasks to the exit driver; failures
    /// seen from now on are reported, not returned. The group is closed.
    fn wait_detached(&self) {
        let mut state = self.handle.shared.lock();
        state.detached = true;
        let set = std::mem::take(&mut state.set);
        drop(state);
        let shared = self.handle.shared.clone();
        let mut set = set;
        let job = Job::new(NAME, JobKind::Shield, async move {
            while let Some(result) = set.join_next().await {
                shared.joined(result);
            }
            Ok::<(), std::convert::Infallible>(())
        });
        cascade::push_child(job.into_node());
    }
}

impl OwnedManager for TaskGroup {}

impl SendManager for TaskGroup {
    async fn exit_owned(mut self, outcome: Outcome) -> Result<(), TaskError> {
        self.exit(outcome).await
    }
    crate::managers::stack::detach_static!();
}

/// The error of a [`TaskGroup`] scope whose task returned `Err`: that
/// task's error, boxed.
///
/// It is a `std::error::Error + Send + Sync + 'static`, so it converts with
/// `?` into [`BoxError`], `anyhow::Error` and the like, and into
/// `std::io::Error`; for your own error type, write `impl From<TaskError>`
/// (and match on [`downcast`](Self::downcast) to get the task's own error
/// back). `Display` and `source` are those of the task's error.
pub struct TaskError {
    inner: BoxError,
}

impl TaskError {
    /// The task's error.
    #[must_use]
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.inner
    }

    /// The task's error, boxed.
    #[must_use]
    pub fn into_inner(self) -> BoxError {
        self.inner
    }

    /// The task's error, if it is an `E`.
    #[must_use]
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.inner.downcast_ref()
    }

    /// The task's error as an `E`, or `self` back if it is not one.
    ///
    /// # Errors
    ///
    /// `self`, if the task's error is not an `E`.
    pub fn downcast<E: std::error::Error + 'static>(self) -> Result<E, TaskError> {
        self.inner
            .downcast::<E>()
            .map(|e| *e)
            .map_err(|inner| TaskError { inner })
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TaskError").field(&self.inner).finish()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

impl From<TaskError> for std::io::Error {
    fn from(error: TaskError) -> std::io::Error {
        match error.inner.downcast::<std::io::Error>() {
            Ok(io) => *io,
            Err(inner) => std::io::Error::other(inner),
        }
    }
}

impl From<std::convert::Infallible> for TaskError {
    fn from(never: std::convert::Infallible) -> TaskError {
        match never {}
    }
}
