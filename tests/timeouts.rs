//! Issue 4: `timeout` / `deadline` scopes (SPEC §6) on paused-clock runtimes.

mod driver_util;

use std::time::Duration;

use async_contextlib::{Elapsed, deadline, drain, timeout, with_scope};
use driver_util::{ExitWork, Owned, Probe, gen_owned};

#[derive(Debug, PartialEq)]
enum AppError {
    Elapsed(Elapsed),
    Other(&'static str),
}

// (`Display` is required today: a `Debug`-only body error does not compile,
// see the issue-4 report.)
impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl From<Elapsed> for AppError {
    fn from(e: Elapsed) -> Self {
        AppError::Elapsed(e)
    }
}

fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn body_past_its_deadline_is_cut_and_inner_managers_see_cancelled() {
    paused().block_on(async {
        let probe = Probe::new();
        let start = tokio::time::Instant::now();
        let r: Result<u32, AppError> = with_scope!(Owned::new("outer", &probe), timeout(10 * MS),
                                                    Owned::new("inner", &probe),
                                                    gen_owned("gen", probe.clone(), ExitWork::Nothing) => {
            tokio::time::sleep(HOUR).await;
            Ok(1)
        });
        let Err(AppError::Elapsed(e)) = r else { panic!("{r:?}") };
        assert_eq!(e.limit(), Some(10 * MS));
        assert_eq!(e.deadline(), start + 10 * MS);
        assert_eq!(tokio::time::Instant::now(), start + 10 * MS);
        assert_eq!(probe.log(), ["gen:cancelled", "inner:cancelled", "outer:failed"]);
        assert_eq!(probe.exited(), 3);
    });
}

#[test]
fn body_finishing_first_is_untouched() {
    paused().block_on(async {
        let probe = Probe::new();
        let r: Result<u32, AppError> = with_scope!(timeout(10 * MS), Owned::new("m", &probe) => {
            tokio::time::sleep(5 * MS).await;
            Ok(5)
        });
        assert_eq!(r, Ok(5));
        let r: Result<u32, AppError> = with_scope!(timeout(10 * MS), Owned::new("m", &probe) => {
            tokio::time::sleep(5 * MS).await;
            Err(AppError::Other("body"))
        });
        assert_eq!(r, Err(AppError::Other("body")));
        assert_eq!(probe.log(), ["m:success", "m:failed"]);
        // Long after, nothing fires late.
        tokio::time::sleep(HOUR).await;
        assert_eq!(probe.exited(), 2);
    });
}

#[test]
fn nested_timeouts_in_one_scope_only_the_one_that_fired_reports() {
    paused().block_on(async {
        let probe = Probe::new();
        // The inner one fires.
        let r: Result<(), Elapsed> = with_scope!(timeout(100 * MS), Owned::new("a", &probe), timeout(10 * MS),
                                                 Owned::new("b", &probe) => {
            tokio::time::sleep(HOUR).await;
            Ok(())
        });
        assert_eq!(r.unwrap_err().limit(), Some(10 * MS));
        assert_eq!(probe.log(), ["b:cancelled", "a:failed"]);
        // The outer one fires (the inner limit is later).
        let probe = Probe::new();
        let r: Result<(), Elapsed> = with_scope!(timeout(10 * MS), Owned::new("a", &probe), timeout(100 * MS),
                                                 Owned::new("b", &probe) => {
            tokio::time::sleep(HOUR).await;
            Ok(())
        });
        assert_eq!(r.unwrap_err().limit(), Some(10 * MS));
        assert_eq!(probe.log(), ["b:cancelled", "a:cancelled"]);
        let probe = Probe::new();
        let r: Result<(), Elapsed> = with_scope!(timeout(20 * MS), Owned::new("a", &probe), timeout(100 * MS),
                                                 Owned::new("b", &probe) => {
            tokio::time::sleep(HOUR).await;
            Ok(())
        });
        assert_eq!(r.unwrap_err().limit(), Some(20 * MS));
        assert_eq!(probe.log(), ["b:cancelled", "a:cancelled"]);
    });
}

#[test]
fn nested_timeouts_in_nested_scopes() {
    paused().block_on(async {
        // Inner fires: the inner scope returns its Elapsed to the outer body.
        let probe = Probe::new();
        let r: Result<(), AppError> = with_scope!(timeout(100 * MS), Owned::new("outer", &probe) => {
            let inner: Result<(), AppError> = with_scope!(timeout(10 * MS), Owned::new("inner", &probe) => {
                tokio::time::sleep(HOUR).await;
                Ok(())
            });
            let Err(AppError::Elapsed(e)) = inner else { panic!("{inner:?}") };
            assert_eq!(e.limit(), Some(10 * MS));
            Ok(())
        });
        assert_eq!(r, Ok(()), "the outer timeout did not fire");
        assert_eq!(probe.log(), ["inner:cancelled", "outer:success"]);

        // Outer fires: the inner scope is dropped, its exits run before the outer ones.
        let probe = Probe::new();
        let r: Result<(), AppError> = with_scope!(timeout(10 * MS), Owned::new("outer", &probe) => {
            with_scope!(timeout(100 * MS), gen_owned("inner", probe.clone(), ExitWork::Sleep(MS)),
                        Owned::new("innermost", &probe) => {
                tokio::time::sleep(HOUR).await;
                Ok::<(), AppError>(())
            })
        });
        let Err(AppError::Elapsed(e)) = r else { panic!("{r:?}") };
        assert_eq!(e.limit(), Some(10 * MS));
        assert_eq!(probe.log(), ["innermost:cancelled", "inner:cancelled", "outer:cancelled"]);
        assert_eq!(probe.exited(), 3, "inner exits finished before the scope returned");
    });
}

#[test]
fn deadline_with_tokio_and_std_instants() {
    paused().block_on(async {
        let at = tokio::time::Instant::now() + 10 * MS;
        let r: Result<(), Elapsed> = with_scope!(deadline(at) => {
            tokio::time::sleep(HOUR).await;
            Ok(())
        });
        let e = r.unwrap_err();
        assert_eq!(e.limit(), None);
        assert_eq!(e.deadline(), at);
        let r: Result<u8, Elapsed> = with_scope!(deadline(at + HOUR) => { Ok(3) });
        assert_eq!(r, Ok(3));
    });
    // std's Instant follows the real clock: a real runtime, with a body far
    // longer than the deadline (no race to lose).
    driver_util::current_thread().block_on(async {
        let at = std::time::Instant::now() + 5 * MS;
        let r: Result<(), Elapsed> = with_scope!(deadline(at) => {
            tokio::time::sleep(HOUR).await;
            Ok(())
        });
        let e = r.unwrap_err();
        assert_eq!(e.deadline(), tokio::time::Instant::from_std(at));
    });
}

/// A deadline that cuts an enter: the half-entered manager's exit does not run.
#[test]
fn deadline_cuts_a_slow_enter() {
    paused().block_on(async {
        let probe = Probe::new();
        let gate = std::sync::Arc::new(tokio::sync::Notify::new());
        let mut slow = Owned::new("slow", &probe);
        slow.enter_gate = Some(gate);
        let r: Result<(), Elapsed> =
            with_scope!(Owned::new("outer", &probe), timeout(10 * MS), slow => { Ok(()) });
        assert_eq!(r.unwrap_err().limit(), Some(10 * MS));
        assert_eq!(probe.log(), ["outer:failed"]);
        assert_eq!(probe.entered(), 1);
    });
}

/// The scope is cancelled while a timeout that fired runs the cut body's
/// exits inline: those exits are handed to the driver, not cut or lost.
#[test]
fn cancelled_while_running_the_cut_bodys_exits() {
    paused().block_on(async {
        let probe = Probe::new();
        let p = probe.clone();
        let r = tokio::time::timeout(20 * MS, async move {
            let r: Result<(), Elapsed> = with_scope!(Owned::new("outer", &p), timeout(10 * MS) => {
                with_scope!(gen_owned("slow", p.clone(), ExitWork::Sleep(50 * MS)), Owned::new("fast", &p) => {
                    tokio::time::sleep(HOUR).await;
                    Ok::<(), Elapsed>(())
                })
            });
            r
        })
        .await;
        assert!(r.is_err(), "cancelled at 20 ms, mid-exit of `slow`");
        drain().await;
        assert_eq!(probe.log(), ["fast:cancelled", "slow:cancelled", "outer:cancelled"]);
        assert_eq!(probe.exit_started(), 3);
        assert_eq!(probe.exited(), 3, "an exit was cut short or lost");
    });
}
