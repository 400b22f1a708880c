//! `TaskGroup` (issue #11): Python's `asyncio.TaskGroup` — the exit waits
//! for every task; a failing or panicking task aborts its siblings and
//! fails the scope; a failing, panicking or cancelled block aborts the
//! tasks and the exit waits for them to be gone.
//!
//! `stats()` is process-wide: every test here holds `serial()`, so the
//! counter deltas they assert are exact. Each runs on both runtime
//! flavours.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use async_contextlib::{
    BoxError, ExitStack, Stats, TaskError, TaskGroup, TaskGroupHandle, drain, stats, with_scope,
};
use futures::FutureExt;

#[path = "../../tests/driver_util/mod.rs"]
mod driver_util;
use driver_util::{on_both, stats_lock as serial};

const MS: Duration = Duration::from_millis(1);
/// Longer than any test may take: a task sleeping this long is one that
/// must be aborted.
const LONG: Duration = Duration::from_secs(30);

/// Counts drops: a task's destructor ran (it finished, or was aborted).
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[derive(Clone, Default)]
struct Counters {
    /// Tasks that ran to their end.
    done: Arc<AtomicUsize>,
    /// Tasks whose future was dropped (finished or aborted).
    dropped: Arc<AtomicUsize>,
    /// Tasks that started running.
    started: Arc<AtomicUsize>,
}

impl Counters {
    fn done(&self) -> usize {
        self.done.load(SeqCst)
    }
    fn dropped(&self) -> usize {
        self.dropped.load(SeqCst)
    }

    /// A task that sleeps `nap`, then counts itself done.
    fn sleeper(&self, nap: Duration) -> impl Future<Output = ()> + Send + 'static {
        let c = self.clone();
        async move {
            let _guard = Dropped(c.dropped.clone());
            c.started.fetch_add(1, SeqCst);
            tokio::time::sleep(nap).await;
            c.done.fetch_add(1, SeqCst);
        }
    }

    /// Waits until `n` tasks have started.
    async fn started(&self, n: usize) {
        while self.started.load(SeqCst) < n {
            tokio::time::sleep(MS).await;
        }
    }
}

/// Panics when dropped: in an aborted task, a failure seen after the
/// first one.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("destructor of an aborted task");
    }
}

/// A task's own error type.
#[derive(Debug, PartialEq, Eq)]
struct TaskFailed(&'static str);

impl std::fmt::Display for TaskFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task failed: {}", self.0)
    }
}

impl std::error::Error for TaskFailed {}

/// A task that fails with `TaskFailed(what)` after `nap`.
async fn failer(nap: Duration, what: &'static str) -> Result<(), TaskFailed> {
    tokio::time::sleep(nap).await;
    Err(TaskFailed(what))
}

/// The application's error: a block's own, or the group's.
#[derive(Debug)]
enum AppError {
    Block(&'static str),
    Task(TaskError),
}

impl From<TaskError> for AppError {
    fn from(e: TaskError) -> AppError {
        AppError::Task(e)
    }
}

/// `stats()` after a test is balanced against `before`: every manager
/// entered has exited, nothing pending or lost, and `failures` exit
/// failures counted.
fn assert_balanced(before: Stats, failures: u64, flavour: &str) {
    let after = stats();
    assert_eq!(
        after.entered - before.entered,
        after.exited - before.exited,
        "{flavour}: {after:?}"
    );
    assert_eq!(after.active, before.active, "{flavour}");
    assert_eq!(after.pending, 0, "{flavour}");
    assert_eq!(after.lost, before.lost, "{flavour}");
    assert_eq!(after.abandoned, before.abandoned, "{flavour}");
    assert_eq!(
        after.exit_failures - before.exit_failures,
        failures,
        "{flavour}: exit failures"
    );
}

#[test]
fn exit_waits_for_every_task() {
    let _s = serial();
    on_both(|flavour| async move {
        let before = stats();
        let c = Counters::default();
        let r = with_scope!(TaskGroup::new() as tg => {
            tg.spawn(c.sleeper(30 * MS));
            tg.spawn(c.sleeper(10 * MS));
            tg.spawn(c.sleeper(MS));
            Ok::<_, TaskError>(tg.len())
        });
        assert_eq!(r.unwrap(), 3);
        assert_eq!(c.done(), 3, "{flavour}: the exit did not wait");
        assert_eq!(c.dropped(), 3, "{flavour}");
        assert_balanced(before, 0, flavour);
    });
}

#[test]
fn tasks_spawn_tasks_through_a_cloned_handle() {
    let _s = serial();
    on_both(|flavour| async move {
        let before = stats();
        let c = Counters::default();
        let r: Result<(), TaskError> = with_scope!(TaskGroup::new() as tg => {
            let (tg2, c2) = (tg.clone(), c.clone());
            tg.spawn(async move {
                tokio::time::sleep(10 * MS).await;
                // Spawned while the exit is already waiting.
                tg2.spawn(c2.sleeper(20 * MS));
                tg2.spawn(c2.sleeper(MS));
            });
            Ok(())
        });
        r.unwrap();
        assert_eq!(
            c.done(),
            2,
            "{flavour}: the exit did not wait for late tasks"
        );
        assert_balanced(before, 0, flavour);
    });
}

#[test]
fn a_failing_task_aborts_its_siblings_and_fails_the_scope_with_the_first_error() {
    let _s = serial();
    on_both(|flavour| async move {
        let before = stats();
        let c = Counters::default();
        let start = Instant::now();
        let r: Result<(), TaskError> = with_scope!(TaskGroup::new() as tg => {
            tg.spawn(c.sleeper(LONG));
            tg.spawn(c.sleeper(LONG));
            tg.spawn(failer(10 * MS, "first"));
            tg.spawn(failer(300 * MS, "second"));
            Ok(())
        });
        let err = r.unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5), "{flavour}");
        assert_eq!(err.to_string(), "task failed: first");
        assert_eq!(err.downcast_ref::<TaskFailed>(), Some(&TaskFailed("first")));
        assert_eq!(err.downcast::<TaskFailed>().unwrap(), TaskFailed("first"));
        assert_eq!(c.done(), 0, "{flavour}: a sibling was not aborted");
        assert_eq!(
            c.dropped(),
            2,
            "{flavour}: aborted siblings were not dropped"
        );
        // The error the exit returned, counted by the scope.
        assert_balanced(before, 1, flavour);
    });
}

#[test]
fn siblings_are_aborted_while_the_block_still_runs() {
    let _s = serial();
    on_both(|flavour| async move {
        let before = stats();
        let c = Counters::default();
        let r: Result<(), AppError> = with_scope!(TaskGroup::new() as tg => {
            tg.spawn(c.sleeper(LONG));
            tg.spawn(failer(MS, "early"));
            // The block is not cut; it sees the group aborting.
            while !tg.is_aborting() {
                tokio::time::sleep(MS).await;
            }
            while c.dropped() < 1 {
                tokio::time::sleep(MS).await;
            }
            // Spawned into an aborting group: dropped unrun (its captured
            // guard is dropped at once).
            let guard = Dropped(c.dropped.clone());
            let late = c.done.clone();
            tg.spawn(async move {
                let _guard = guard;
                late.fetch_add(1, SeqCst);
            });
            assert_eq!(c.dropped(), 2);
            assert_eq!(c.started.load(SeqCst), 1);
            Ok(())
        });
        assert!(
            matches!(&r, Err(AppError::Task(e)) if e.to_string() == "task failed: early"),
            "{flavour}: {r:?}"
        );
        assert_eq!(c.done(), 0, "{flavour}");
        assert_eq!(c.dropped(), 2, "{flavour}");
        assert_balanced(before, 1, flavour);
    });
}

#[test]
fn a_later_failure_is_reported_and_counted() {
    let _s = serial();
    on_both(|flavour| async move {
        let before = stats();
        let c = Counters::default();
        let r: Result<(), TaskError> = with_scope!(TaskGroup::new() as tg => {
            tg.spawn(async {
                let _p = PanicsOnDrop;
                tokio::time::sleep(LONG).await;
            });
            tg.spawn(c.sleeper(LONG));
            tg.spawn(failer(10 * MS, "first"));
            Ok(())
        });
        assert_eq!(
            r.unwrap_err().to_string(),
            "task failed: first",
            "{flavour}"
        );
        assert_eq!(c.dropped(), 1, "{flavour}");
        // The first error (returned, counted by the scope), and the panic
        // in the aborted task's destructor (reported, counted by the group).
        assert_balanced(before, 2, flavour);
    });
}

#[test]
fn a_panicking_task_aborts_its_siblings_and_the_panic_resumes() {
    let _s = serial();
    on_both(|flavour| async move {
        let before = stats();
        let c = Counters::default();
        let scope = async {
            with_scope!(TaskGroup::new() as tg => {
                tg.spawn(c.sleeper(LONG));
                tg.spawn(async {
                    tokio::time::sleep(10 * MS).await;
                    panic!("task boom");
                    #[allow(unreachable_code)]
                    ()
                });
                Ok::<_, TaskError>(())
            })
        };
        let payload = AssertUnwindSafe(scope).catch_unwind().await.unwrap_err();
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"task boom"),
            "{flavour}"
        );
        assert_eq!(c.done(), 0, "{flavour}");
        assert_eq!(c.dropped(), 1, "{flavour}");
        // A panicking exit counts as a failure of the manager.
        assert_balanced(before, 1, flavour);
    });
}

#[test]
fn a_failing_block_aborts_the_tasks_and_waits_for_them() {
    let _s = serial();
    on_both(|flavour| async move {
        let before = stats();
        let c = Counters::default();
        let start = Instant::now();
        let r: Result<(), AppError> = with_scope!(TaskGroup::new() as tg => {
            for _ in 0..4 {
                tg.spawn(c.sleeper(LONG));
            }
            c.started(4).await;
            Err(AppError::Block("block failed"))
        });
        assert!(
            matches!(r, Err(AppError::Block("block failed"))),
            "{flavour}"
        );
        assert!(start.elapsed() < Duration::from_secs(5), "{flavour}");
        assert_eq!(c.done(), 0, "{flavour}");
        assert_eq!(
            c.dropped(),
            4,
            "{flavour}: the exit did not wait for aborted tasks"
        );
        assert_balanced(before, 0, flavour);
    });
}

#[test]
fn a_block_error_wins_over_a_task_error_which_is_counted() {
    let _s = serial();
    on_both(|flavour| async move {
        let before = stats();
        let r: Result<(), AppError> = with_scope!(TaskGroup::new() as tg => {
            tg.spawn(failer(MS, "task"));
            while !tg.is_aborting() {
                tokio::time::sleep(MS).await;
            }
            Err(AppError::Block("block"))
        });
        assert!(matches!(r, Err(AppError::Block("block"))), "{flavour}");
        // The task's error, returned by the exit: reported and counted.
        assert_balanced(before, 1, flavour);
    });
}

#[test]
fn a_panicking_block_aborts_the_tasks() {
    let _s = serial();
    on_both(|flavour| async move {
        let before = stats();
        let c = Counters::default();
        let scope = async {
            with_scope!(TaskGroup::new() as tg => {
                tg.spawn(c.sleeper(LONG));
                tg.spawn(c.sleeper(LONG));
                c.started(2).await;
                if c.done() == 0 {
                    panic!("block boom");
                }
                Ok::<_, TaskError>(())
            })
        };
        let payload = AssertUnwindSafe(scope).catch_unwind().await.unwrap_err();
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"block boom"),
            "{flavour}"
        );
        assert_eq!(c.done(), 0, "{flavour}");
        assert_eq!(c.dropped(), 2, "{flavour}");
        assert_balanced(before, 0, flavour);
    });
}

/// The scope a cancellation test cuts: four long tasks, a block that
/// never ends.
async fn run_forever(c: Counters) {
    let _: Result<(), TaskError> = with_scope!(TaskGroup::new() as tg => {
        for _ in 0..4 {
            tg.spawn(c.sleeper(LONG));
        }
        std::future::pending::<()>().await;
        Ok(())
    });
    unreachable!("the block never ends");
}

#[test]
fn a_scope_cut_by_tokio_timeout_aborts_the_tasks_and_drain_waits() {
    let _s = serial();
    on_both(|flavour| async move {
        let before = stats();
        let c = Counters::default();
        let start = Instant::now();
        let cut = tokio::time::timeout(20 * MS, run_forever(c.clone())).await;
        assert!(cut.is_err(), "{flavour}");
        drain().await;
        assert!(start.elapsed() < Duration::from_secs(5), "{flavour}");
        assert_eq!(c.started.load(SeqCst), 4, "{flavour}");
        assert_eq!(c.done(), 0, "{flavour}");
        assert_eq!(
            c.dropped(),
            4,
            "{flavour}: drain returned before the tasks were gone"
        );
        assert_balanced(before, 0, flavour);
    });
}

#[test]
fn a_scope_cut_by_join_handle_abort_aborts_the_tasks_and_drain_waits() {
    let _s = serial();
    on_both(|flavour| async move {
        let before = stats();
        let c = Counters::default();
        let task = tokio::spawn(run_forever(c.clone()));
        c.started(4).await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled(), "{flavour}");
        drain().await;
        assert_eq!(c.done(), 0, "{flavour}");
        assert_eq!(
            c.dropped(),
            4,
            "{flavour}: drain returned before the tasks were gone"
        );
        assert_balanced(before, 0, flavour);
    });
}

#[test]
fn a_scope_cut_by_an_enclosing_timeout_manager() {
    let _s = serial();
    on_both(|flavour| async move {
        let before = stats();
        let c = Counters::default();
        let r: Result<(), BoxError> = with_scope!(
            async_contextlib::timeout(20 * MS),
            TaskGroup::new() as tg => {
                tg.spawn(c.sleeper(LONG));
                tg.spawn(c.sleeper(LONG));
                std::future::pending::<()>().await;
                Ok(())
            }
        );
        assert!(
            r.unwrap_err().is::<async_contextlib::Elapsed>(),
            "{flavour}"
        );
        assert_eq!(c.done(), 0, "{flavour}");
        assert_eq!(c.dropped(), 2, "{flavour}: the exit did not wait");
        assert_balanced(before, 0, flavour);
    });
}

#[test]
fn inside_an_exit_stack() {
    let _s = serial();
    on_both(|flavour| async move {
        let before = stats();
        let c = Counters::default();
        let r: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
            let a: &TaskGroupHandle = stack.enter(TaskGroup::new()).await?;
            let b = stack.enter(TaskGroup::new()).await?;
            a.spawn(c.sleeper(20 * MS));
            b.spawn(c.sleeper(MS));
            Ok(())
        });
        r.unwrap();
        assert_eq!(c.done(), 2, "{flavour}: the stack's unwinding did not wait");
        assert_balanced(before, 0, flavour);

        // A failing task: the stack returns its error, boxed.
        let before = stats();
        let c = Counters::default();
        let r: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
            let tg = stack.enter(TaskGroup::new()).await?;
            tg.spawn(c.sleeper(LONG));
            tg.spawn(failer(5 * MS, "in a stack"));
            Ok(())
        });
        let err = r.unwrap_err().downcast::<TaskError>().unwrap();
        assert_eq!(
            err.downcast_ref::<TaskFailed>(),
            Some(&TaskFailed("in a stack"))
        );
        assert_eq!(c.dropped(), 1, "{flavour}");
        assert_balanced(before, 1, flavour);
    });
}

#[test]
fn a_cancelled_exit_stack_aborts_the_tasks_and_drain_waits() {
    let _s = serial();
    on_both(|flavour| async move {
        let before = stats();
        let c = Counters::default();
        let c2 = c.clone();
        let start = Instant::now();
        let cut = tokio::time::timeout(20 * MS, async move {
            let _: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
                let tg = stack.enter(TaskGroup::new()).await?;
                tg.spawn(c2.sleeper(LONG));
                tg.spawn(c2.sleeper(LONG));
                std::future::pending::<()>().await;
                Ok(())
            });
        })
        .await;
        assert!(cut.is_err(), "{flavour}");
        // Not held up to the in-place limit (1 s) on a current-thread runtime.
        assert!(start.elapsed() < Duration::from_millis(900), "{flavour}");
        drain().await;
        assert_eq!(c.done(), 0, "{flavour}");
        assert_eq!(
            c.dropped(),
            2,
            "{flavour}: drain returned before the tasks were gone"
        );
        assert_balanced(before, 0, flavour);
    });
}

#[test]
fn task_errors_convert_with_question_mark() {
    let _s = serial();
    on_both(|_| async {
        async fn io() -> std::io::Result<()> {
            with_scope!(TaskGroup::new() as tg => {
                tg.spawn(async { Err::<(), _>(std::io::Error::other("disk full")) });
                Ok::<_, std::io::Error>(())
            })
        }
        async fn boxed() -> Result<(), BoxError> {
            let r: Result<(), TaskError> = with_scope!(TaskGroup::new() as tg => {
                tg.spawn(async { Err::<(), _>("a string error") });
                Ok(())
            });
            r?;
            Ok(())
        }
        let e = io().await.unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(boxed().await.unwrap_err().to_string(), "a string error");
    });
}

#[test]
fn spawning_after_the_scope_ended_panics() {
    let _s = serial();
    on_both(|flavour| async move {
        let kept: Result<TaskGroupHandle, TaskError> =
            with_scope!(TaskGroup::new() as tg => { Ok(tg.clone()) });
        let kept = kept.unwrap();
        assert!(kept.is_empty());
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| kept.spawn(async {})));
        let payload = r.unwrap_err();
        let message = payload.downcast_ref::<&str>().copied().unwrap_or_default();
        assert!(
            message.contains("after the group's scope ended"),
            "{flavour}: {message}"
        );
    });
}

#[test]
fn finished_tasks_are_collected_by_spawn() {
    let _s = serial();
    on_both(|flavour| async move {
        let r: Result<(), TaskError> = with_scope!(TaskGroup::new() as tg => {
            for _ in 0..100 {
                tg.spawn(async {});
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(5 * MS).await;
            tg.spawn(async {});
            assert!(tg.len() < 10, "{flavour}: {}", tg.len());
            Ok(())
        });
        r.unwrap();
    });
}

#[test]
fn a_block_racing_aborted_stops_early_when_a_task_fails() {
    let _s = serial();
    on_both(|flavour| async move {
        let before = stats();
        let c = Counters::default();
        let start = Instant::now();
        let r: Result<&str, TaskError> = with_scope!(TaskGroup::new() as tg => {
            tg.spawn(c.sleeper(LONG));
            tg.spawn(failer(10 * MS, "stop"));
            let waiting = tg.aborted();
            tokio::select! {
                () = waiting => Ok("stopped early"),
                () = tokio::time::sleep(LONG) => Ok("ran to the end"),
            }
        });
        assert_eq!(r.unwrap_err().to_string(), "task failed: stop", "{flavour}");
        assert!(start.elapsed() < Duration::from_secs(5), "{flavour}");
        assert_eq!(c.dropped(), 1, "{flavour}");
        // Already aborting: resolves at once.
        let r: Result<(), AppError> = with_scope!(TaskGroup::new() as tg => {
            tg.spawn(failer(MS, "x"));
            tg.aborted().await;
            tg.aborted().await;
            Ok(())
        });
        assert!(matches!(r, Err(AppError::Task(_))), "{flavour}");
        assert_balanced(before, 2, flavour);
    });
}

#[test]
fn a_later_failure_is_a_warning_naming_the_group() {
    let _s = serial();
    let (subscriber, capture) = driver_util::capturing_subscriber();
    // A current-thread runtime: every task runs on this thread, under the
    // subscriber.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let r: Result<(), TaskError> = with_scope!(TaskGroup::new() as tg => {
                tg.spawn(async {
                    let _p = PanicsOnDrop;
                    tokio::time::sleep(LONG).await;
                });
                tg.spawn(failer(5 * MS, "first"));
                Ok(())
            });
            r
        })
    });
    assert_eq!(r.unwrap_err().to_string(), "task failed: first");
    let events = capture.all();
    let later: Vec<_> = events
        .iter()
        .filter(|e| e.text.contains("manager=async_contextlib::TaskGroup"))
        // A slow-exit warning may come too on a loaded machine.
        .filter(|e| e.text.contains("earlier failure"))
        .collect();
    assert_eq!(later.len(), 1, "{events:?}");
    assert_eq!(later[0].level, tracing::Level::WARN);
    let text = &later[0].text;
    assert!(
        text.contains("error=panicked: destructor of an aborted task"),
        "{text}"
    );
}
