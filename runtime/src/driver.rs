//! The exit driver: finishes exits and shielded futures that outlive the
//! future that started them.
//!
//! Rust drops a cancelled future synchronously, so an exit that still has to
//! await goes one of two ways (SPEC §5):
//!
//! * **detached** — owned work (`'static + Send`) becomes a [`Job`] and runs
//!   as a task on the current tokio runtime, or on the driver's own
//!   background runtime when there is none;
//! * **in place** — borrowed work is finished before the drop returns, with
//!   the worker handed over (`block_in_place`) on a multi-thread runtime.
//!   Where that is impossible it is abandoned, reported and counted.
//!
//! Jobs created while one scope future is being dropped are queued on a
//! thread-local *cascade* and spawned as one task that runs them in the
//! order they were queued — innermost exit first — once the outermost scope
//! being dropped is gone. A scope marks the cascade open before anything of
//! it is dropped (see `step::Step`), so nested scopes dropped inside it
//! queue behind one another instead of racing.
//!
//! Every job holds a [`Ticket`]: it counts the job `pending` while it lives
//! and, if the job is dropped unfinished (its runtime shut down), counts it
//! `lost` and reports it. [`drain`] waits for `pending` to reach zero.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Notify;

use crate::stats;

/// A unit of detached work: an exit or a shielded future, owning its ticket.
pub struct Job {
    fut: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

/// What a job is, for counting and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobKind {
    /// The exit of an entered manager.
    Exit,
    /// A future passed to [`shield`](crate::shield).
    Shield,
}

impl Job {
    /// Wraps work whose `Err` and panics are reported and counted as exit
    /// failures (for `Exit`) and whose completion is counted as an exit.
    pub(crate) fn new<F, E>(name: &'static str, kind: JobKind, work: F) -> Job
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let ticket = Ticket::new(name, kind);
        Job {
            fut: Box::pin(async move {
                // Move the whole ticket in (not just the field written below),
                // so that it lives, and counts, as long as this future.
                let mut ticket = ticket;
                let started = crate::diag::Clock::start();
                let result = AssertUnwindSafe(work).catch_unwind().await;
                ticket.done = true;
                let failed = !matches!(result, Ok(Ok(())));
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => crate::diag::report_exit_error(
                        name,
                        "detached",
                        &format!("an error of type `{}`", std::any::type_name::<E>()),
                    ),
                    Err(payload) => crate::diag::report_exit_error(
                        name,
                        "detached",
                        &format!(
                            "panicked: {}",
                            crate::Panic::from_payload(&*payload).message()
                        ),
                    ),
                }
                if kind == JobKind::Exit {
                    if failed {
                        stats::exit_failed();
                    }
                    stats::exited();
                    started.check(name, &crate::Outcome::Cancelled);
                }
            }),
        }
    }
}

/// Counts a job `pending` while it lives; `lost` if it dies unfinished.
struct Ticket {
    id: u64,
    name: &'static str,
    kind: JobKind,
    done: bool,
}

static NEXT_TICKET: AtomicU64 = AtomicU64::new(0);

fn registry() -> &'static Mutex<HashMap<u64, &'static str>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u64, &'static str>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl Ticket {
    fn new(name: &'static str, kind: JobKind) -> Ticket {
        let id = NEXT_TICKET.fetch_add(1, Relaxed);
        registry()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, name);
        stats::pending_add();
        Ticket {
            id,
            name,
            kind,
            done: false,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        registry()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
        if !self.done {
            stats::lost(self.kind == JobKind::Exit);
            tracing::error!(
                manager = self.name,
                kind = ?self.kind,
                "async-contextlib: detached work was dropped before it finished \
                 (its runtime shut down or refused it); counted as lost"
            );
        }
        if stats::pending_sub() == 0 {
            DRAINED.notify_waiters();
        }
    }
}

static DRAINED: Notify = Notify::const_new();

thread_local! {
    static CASCADE: RefCell<Cascade> = const { RefCell::new(Cascade { open: Vec::new(), chain: Vec::new() }) };
}

struct Cascade {
    /// Scopes (by address) being dropped on this thread, outermost first.
    open: Vec<usize>,
    /// Jobs queued while they are dropped, innermost exit first.
    chain: Vec<Job>,
}

/// Marks the scope at `addr` as being dropped: jobs queue until it closes.
pub(crate) fn open(addr: usize) {
    CASCADE.with(|c| c.borrow_mut().open.push(addr));
}

/// The scope at `addr` is gone (whether or not it had called `open`).
/// When no scope is left open, the queued jobs are spawned as one task.
pub(crate) fn close(addr: usize) {
    let chain = CASCADE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(pos) = c.open.iter().rposition(|&a| a == addr) {
            c.open.remove(pos);
        }
        if c.open.is_empty() {
            std::mem::take(&mut c.chain)
        } else {
            Vec::new()
        }
    });
    spawn_chain(chain);
}

/// Queues a job behind the ones already queued on this thread's cascade.
/// If no scope is being dropped, it is spawned at once.
pub(crate) fn push(job: Job) {
    let now = CASCADE.with(|c| {
        let mut c = c.borrow_mut();
        c.chain.push(job);
        if c.open.is_empty() {
            std::mem::take(&mut c.chain)
        } else {
            Vec::new()
        }
    });
    spawn_chain(now);
}

/// Queues a job without spawning: the scope's own drop (`close`) spawns it.
pub(crate) fn queue(job: Job) {
    CASCADE.with(|c| c.borrow_mut().chain.push(job));
}

/// Runs `drop` with the cascade open for `addr` and returns the jobs it
/// queued, for the caller to run inline (a deadline cut a body).
pub(crate) fn drop_in_cascade(addr: usize, drop: impl FnOnce()) -> Vec<Job> {
    let start = CASCADE.with(|c| {
        let mut c = c.borrow_mut();
        c.open.push(addr);
        c.chain.len()
    });
    drop();
    CASCADE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(pos) = c.open.iter().rposition(|&a| a == addr) {
            c.open.remove(pos);
        }
        let start = start.min(c.chain.len());
        c.chain.split_off(start)
    })
}

/// Runs `jobs` inline, in order. Dropped before they are done (the scope
/// running them was cancelled), it queues the unfinished job and the rest on
/// the cascade, where the scope's own drop hands them to the driver: an exit
/// is never cut short, nor counted as lost, because of it.
pub(crate) async fn run_inline(jobs: Vec<Job>) {
    struct Rest(VecDeque<Job>);
    impl Drop for Rest {
        fn drop(&mut self) {
            for job in self.0.drain(..) {
                queue(job);
            }
        }
    }
    let mut rest = Rest(jobs.into());
    while let Some(job) = rest.0.front_mut() {
        job.fut.as_mut().await;
        rest.0.pop_front();
    }
}

/// Takes the jobs queued so far on this thread, to run them in place before
/// an in-place exit, so that order is kept.
fn take_chain() -> Vec<Job> {
    CASCADE.with(|c| std::mem::take(&mut c.borrow_mut().chain))
}

async fn run_chain(chain: Vec<Job>) {
    for job in chain {
        job.fut.await;
    }
}

fn spawn_chain(chain: Vec<Job>) {
    if chain.is_empty() {
        return;
    }
    let task = run_chain(chain);
    let handle = Handle::try_current().unwrap_or_else(|_| fallback());
    // Spawning on a runtime that is shutting down may panic (tokio#3043) or
    // drop the task at once (tokio#4231); either way the jobs' tickets count
    // them as lost. Nothing is lost silently.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(handle.spawn(task))));
}

/// The driver's own runtime, for exits detached where no runtime is current
/// (e.g. a scope run by `futures::executor::block_on`).
fn fallback() -> Handle {
    static FALLBACK: OnceLock<Handle> = OnceLock::new();
    FALLBACK
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name("async-contextlib-driver")
                .build()
                .expect("async-contextlib: cannot build the exit driver's runtime");
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("async-contextlib-driver".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .expect("async-contextlib: cannot start the exit driver's thread");
            handle
        })
        .clone()
}

/// Whether work can be finished in place here: only on a multi-thread tokio
/// runtime, whose worker can be handed over while this thread blocks.
pub(crate) fn can_block_in_place() -> bool {
    matches!(Handle::try_current(), Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread)
}

/// Finishes `work` before returning, with the worker handed over. Runs the
/// jobs queued on this thread's cascade first, to keep innermost-first
/// order. Returns `None` (and runs nothing) where that is impossible.
pub(crate) fn block_in_place<F: Future>(work: F) -> Option<F::Output> {
    if !can_block_in_place() {
        return None;
    }
    let chain = take_chain();
    let run = move || {
        futures_executor::block_on(async move {
            run_chain(chain).await;
            work.await
        })
    };
    // `block_in_place` refuses (panics) in a few states we cannot see from
    // outside, e.g. while the runtime is shutting down; treat that as
    // "impossible" rather than letting it escape a `Drop`.
    catch_unwind(AssertUnwindSafe(|| tokio::task::block_in_place(run))).ok()
}

/// Waits until every exit and shielded future handed to the exit driver has
/// finished — including ones handed over while it waits.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// async_contextlib::drain().await;
/// assert_eq!(async_contextlib::stats().pending, 0);
/// # }
/// ```
pub async fn drain() {
    loop {
        let notified = DRAINED.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if stats::pending() == 0 {
            return;
        }
        notified.await;
    }
}

/// [`drain`] with a limit: returns the names of the exits still pending when
/// `limit` runs out, instead of hanging on an exit that never finishes.
///
/// # Errors
///
/// [`StillPending`] lists what had not finished in time.
pub async fn drain_timeout(limit: Duration) -> Result<(), StillPending> {
    if tokio::time::timeout(limit, drain()).await.is_ok() {
        return Ok(());
    }
    let mut names: Vec<&'static str> = registry()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .copied()
        .collect();
    names.sort_unstable();
    if names.is_empty() {
        Ok(())
    } else {
        Err(StillPending { names })
    }
}

/// The exits (by manager name) still pending when [`drain_timeout`] gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StillPending {
    names: Vec<&'static str>,
}

impl StillPending {
    /// The names of the managers (or `shield`) whose work had not finished.
    #[must_use]
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

impl std::fmt::Display for StillPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exit(s) still pending after drain_timeout: {}",
            self.names.len(),
            self.names.join(", ")
        )
    }
}

impl std::error::Error for StillPending {}
