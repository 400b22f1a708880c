//! The exit driver: finishes exits (and shielded futures) that outlive the
//! future that started them, and counts every one. The lowest layer of the
//! runtime: it never names the scope machinery above it.
//!
//! * `mod.rs` — [`Job`] (detached work with its ticket), spawning, the
//!   driver's own runtime, [`drain`] and [`drain_timeout`];
//! * `cascade.rs` — the tree of scopes being dropped on a thread, and the
//!   order their exits run in;
//! * `in_place.rs` — finishing borrowed work before a drop returns, bounded;
//! * `ticket.rs` — what is held now, by name;
//! * `stats.rs`, `diag.rs` — the counters and the `tracing` reports;
//! * `watch.rs` — the opt-in hooks: blocking polls, held scopes, counters
//!   per manager.
//!
//! Rust drops a cancelled future synchronously, so an exit that still has to
//! await goes one of two ways (SPEC §5):
//!
//! * **detached** — owned work (`'static + Send`) becomes a [`Job`] and runs
//!   as a task on the current tokio runtime, or on the driver's own runtime
//!   when there is none;
//! * **in place** — borrowed work is finished before the drop returns
//!   (`in_place.rs`), or abandoned at a bound, reported and counted.
//!
//! Every job holds a ticket: `pending` while it lives, `lost` (reported by
//! name) if it is dropped unfinished — its runtime shut down. A job dropped
//! that way is polled once first, so that work needing no reactor still
//! finishes.

pub(crate) mod cascade;
pub(crate) mod diag;
pub(crate) mod in_place;
pub(crate) mod stats;
pub(crate) mod ticket;
pub(crate) mod watch;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::runtime::Handle;

use self::cascade::Node;
use self::ticket::Ticket;

pub use self::in_place::{in_place_limit, set_in_place_limit};
pub use self::stats::{Stats, stats};
pub(crate) use self::ticket::Kind as JobKind;

/// Boxed, type-erased work with its ticket: an exit, or a shielded future.
pub struct Job {
    node: Node,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Job {
    /// Wraps `work`: its `Err` and panics are reported (and, for exits,
    /// counted as exit failures); its end is counted as an exit.
    pub(crate) fn new<F, E>(name: &'static str, kind: JobKind, work: F) -> Job
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        Job::build(name, kind, work, false)
    }

    /// [`Job::new`] for the exit of a manager whose exit, dropped in
    /// flight, counts its own end (`__EXIT_COUNTS_ITSELF`): the job lets
    /// it (`ticket::hand_off`).
    pub(crate) fn exit<F, E>(name: &'static str, work: F, counts_itself: bool) -> Job
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        Job::build(name, JobKind::Exit, work, counts_itself)
    }

    fn build<F, E>(name: &'static str, kind: JobKind, work: F, accepts: bool) -> Job
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let ticket = Ticket::new(name, kind);
        Job {
            node: Box::pin(async move {
                let started = diag::Clock::start_counted();
                // The ticket lives (and counts) as long as the work.
                let mut held = std::pin::pin!(Held {
                    work: Some(AssertUnwindSafe(work).catch_unwind()),
                    ticket,
                    accepts,
                });
                let result = std::future::poll_fn(|cx| {
                    let _running = Running::enter();
                    held.as_mut().poll_work(cx)
                })
                .await;
                held.as_mut().done();
                let failed = !matches!(result, Ok(Ok(())));
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => diag::report_exit_error(
                        name,
                        "detached",
                        &format!("an error of type `{}`", std::any::type_name::<E>()),
                    ),
                    Err(payload) => diag::report_exit_error(
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
                        stats::exit_failed(name);
                    }
                    stats::exited(name);
                    started.check(name, "cancelled");
                }
            }),
        }
    }

    pub(crate) fn into_node(self) -> Node {
        self.node
    }
}

pin_project_lite::pin_project! {
    /// A job's work and its ticket. Dropped unfinished, the ticket counts
    /// the work lost, unless the work (an exit that counts itself,
    /// `accepts`) hands the counting of its end to whoever finishes it
    /// (`ticket::hand_off`).
    struct Held<W> {
        #[pin]
        work: Option<W>,
        ticket: Ticket,
        accepts: bool,
    }

    impl<W> PinnedDrop for Held<W> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if this.work.is_some() {
                let work = &mut this.work;
                if ticket::dropping(*this.accepts, || work.set(None)) {
                    this.ticket.done();
                }
            }
        }
    }
}

impl<W: Future> Held<W> {
    fn poll_work(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<W::Output> {
        let work = self.project().work.as_pin_mut();
        work.expect("async-contextlib: a job polled after its work ended")
            .poll(cx)
    }

    /// The work ended (its outcome is counted by the job).
    fn done(self: Pin<&mut Self>) {
        let mut this = self.project();
        this.work.set(None);
        this.ticket.done();
    }
}

/// A spawned node; dropped unfinished (its runtime shut down), it polls
/// the work once — what needs no reactor finishes — before the rest is
/// dropped and its tickets count it lost.
struct LastChance(Option<Node>);

impl Future for LastChance {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(node) = self.0.as_mut() else {
            return Poll::Ready(());
        };
        std::task::ready!(node.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(())
    }
}

impl Drop for LastChance {
    fn drop(&mut self) {
        if let Some(mut node) = self.0.take() {
            let _flag = last_chance_flag();
            // Jobs catch their work's panics; a panic here is the driver's
            // own and must not escape a destructor.
            let _ = in_place::silently(|| in_place::poll_once(node.as_mut()));
        }
    }
}

thread_local! {
    /// Set while this thread gives a node its [`LastChance`].
    static LAST_CHANCE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the work being polled is getting its one last poll, its runtime
/// shutting down: what would wait on that runtime (a blocking task) should
/// be done right away instead, or it is lost.
pub(crate) fn last_chance() -> bool {
    LAST_CHANCE.try_with(std::cell::Cell::get).unwrap_or(false)
}

/// Sets [`last_chance`] while it lives.
fn last_chance_flag() -> SetFor<bool> {
    SetFor::new(&LAST_CHANCE, true)
}

/// Holds a thread-local cell at a value while it lives, then puts back
/// what it held (nothing, during the thread's teardown).
pub(crate) struct SetFor<T: Copy + 'static> {
    key: &'static std::thread::LocalKey<std::cell::Cell<T>>,
    old: Option<T>,
}

impl<T: Copy + 'static> SetFor<T> {
    pub(crate) fn new(key: &'static std::thread::LocalKey<std::cell::Cell<T>>, value: T) -> Self {
        SetFor {
            key,
            old: key.try_with(|cell| cell.replace(value)).ok(),
        }
    }
}

impl<T: Copy + 'static> Drop for SetFor<T> {
    fn drop(&mut self) {
        if let Some(old) = self.old {
            let _ = self.key.try_with(|cell| cell.set(old));
        }
    }
}

/// Runs a node as its own task: on the current runtime, else on the
/// driver's. Never panics, never blocks.
pub(crate) fn spawn(node: Node) {
    let task = LastChance(Some(node));
    let handle = Handle::try_current().ok().or_else(fallback);
    match handle {
        // Spawning on a runtime that is shutting down drops the task at
        // once (tokio#4231) or, on older versions, panics (tokio#3043):
        // either way `LastChance` and the tickets account for it.
        Some(handle) => {
            let _ = in_place::silently(move || drop(handle.spawn(task)));
        }
        None => drop(task),
    }
}

/// Queues a detached job on the cascade of the scope at `addr`, as one of
/// its own exits (see `cascade.rs`).
pub(crate) fn queue(addr: usize, job: Job) {
    cascade::add(addr, job.into_node(), false);
}

/// The driver's own runtime, for exits detached or finished where no
/// runtime is current (e.g. a scope run by `futures::executor::block_on`),
/// and for [`drain_timeout`]'s timer. `None` if it cannot be started.
pub(crate) fn fallback() -> Option<Handle> {
    static FALLBACK: OnceLock<Option<Handle>> = OnceLock::new();
    FALLBACK
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name("async-contextlib-driver")
                .build()
                .ok()?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("async-contextlib-driver".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .ok()?;
            Some(handle)
        })
        .clone()
}

thread_local! {
    /// How many pieces of driver-held work this thread is polling.
    static RUNNING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as polling driver-held work (a detached job, an exit
/// finishing in place) while it lives.
pub(crate) struct Running(bool);

impl Running {
    pub(crate) fn enter() -> Running {
        Running(RUNNING.try_with(|n| n.set(n.get() + 1)).is_ok())
    }

    /// Whether this thread is inside driver-held work now.
    fn here() -> bool {
        RUNNING.try_with(|n| n.get() > 0).unwrap_or(false)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0 {
            let _ = RUNNING.try_with(|n| n.set(n.get() - 1));
        }
    }
}

/// Waits until every exit and shielded future the driver holds — detached,
/// or finishing in place on another thread — has finished, including ones
/// handed over while it waits. Works on any executor.
///
/// Called from inside work the driver holds (an exit running detached or
/// finishing in place), it would wait for itself and for what is queued
/// behind it: it returns at once instead and reports that as an error.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// async_contextlib::drain().await;
/// assert_eq!(async_contextlib::stats().pending, 0);
/// # }
/// ```
pub async fn drain() {
    loop {
        if Running::here() {
            // It would wait for itself (and for what is queued behind it).
            diag::report_drain_in_exit();
            return;
        }
        let notified = ticket::DRAINED.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if ticket::live() == 0 {
            return;
        }
        notified.await;
    }
}

/// [`drain`] with a limit: returns the names of what is still held when
/// `limit` runs out, instead of hanging on an exit that never finishes.
/// Works on any executor, with or without a tokio runtime (its timer runs
/// on the driver's own thread).
///
/// # Errors
///
/// [`StillPending`] lists what had not finished in time: detached exits,
/// shielded futures, and exits still finishing in place.
pub async fn drain_timeout(limit: Duration) -> Result<(), StillPending> {
    let timer = Timer::new(limit);
    let drained = std::pin::pin!(drain());
    let _ = futures_util::future::select(drained, timer).await;
    let names = ticket::names();
    if names.is_empty() {
        Ok(())
    } else {
        Err(StillPending { names })
    }
}

/// A timer that needs no runtime of the caller's: a sleep on the driver's
/// own runtime (or, if it cannot start, a thread).
struct Timer {
    task: Option<tokio::task::JoinHandle<()>>,
    thread: Option<futures_util::future::BoxFuture<'static, ()>>,
}

impl Timer {
    fn new(limit: Duration) -> Timer {
        if let Some(handle) = fallback() {
            return Timer {
                task: Some(handle.spawn(async move { tokio::time::sleep(limit).await })),
                thread: None,
            };
        }
        let done = std::sync::Arc::new(tokio::sync::Notify::new());
        let notify = done.clone();
        let started = std::thread::Builder::new()
            .name("async-contextlib-timer".into())
            .spawn(move || {
                std::thread::sleep(limit);
                // A permit: the waiter wakes even if it polls later.
                notify.notify_one();
            });
        Timer {
            task: None,
            // No thread, no timer: do not wait at all rather than forever.
            thread: started
                .ok()
                .map(|_| -> futures_util::future::BoxFuture<'static, ()> {
                    Box::pin(async move { done.notified().await })
                }),
        }
    }
}

impl Future for Timer {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(task) = self.task.as_mut() {
            return Pin::new(task).poll(cx).map(|_| ());
        }
        match self.thread.as_mut() {
            Some(thread) => thread.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What was still held (by manager name) when [`drain_timeout`] gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StillPending {
    names: Vec<&'static str>,
}

impl StillPending {
    /// The names of the managers (or `async_contextlib::shield`) whose work
    /// had not finished.
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
