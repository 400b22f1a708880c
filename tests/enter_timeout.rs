//! `enter_timeout`: a slow enter is cut and fails the scope with
//! `EnterError::TimedOut`; the half-entered manager runs no exit; a fast
//! enter and the manager's own errors pass through.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use async_contextlib::{AsyncContextManager, EnterError, Outcome, enter_timeout, with_scope};

#[derive(Debug, PartialEq, Eq)]
struct PoolError;

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pool closed")
    }
}

/// A pool whose acquire takes `delay`, and may fail.
struct Pool {
    delay: Duration,
    fail: bool,
    exits: Arc<AtomicUsize>,
}

impl AsyncContextManager for Pool {
    type Value<'a> = u32;
    type Error = PoolError;

    async fn enter(&mut self) -> Result<u32, PoolError> {
        tokio::time::sleep(self.delay).await;
        if self.fail { Err(PoolError) } else { Ok(42) }
    }

    async fn exit(&mut self, _: Outcome) -> Result<(), PoolError> {
        self.exits.fetch_add(1, SeqCst);
        Ok(())
    }
}

fn pool(delay_ms: u64, fail: bool, exits: &Arc<AtomicUsize>) -> Pool {
    Pool {
        delay: Duration::from_millis(delay_ms),
        fail,
        exits: exits.clone(),
    }
}

#[tokio::test(start_paused = true)]
async fn slow_enter_is_cut_and_runs_no_exit() {
    let exits = Arc::new(AtomicUsize::new(0));
    let ran = AtomicUsize::new(0);
    let r: Result<u32, EnterError<PoolError>> = with_scope!(
        enter_timeout(pool(5_000, false, &exits), Duration::from_millis(50)) as n => {
            ran.fetch_add(1, SeqCst);
            Ok(n)
        }
    );
    match r {
        Err(EnterError::TimedOut(elapsed)) => {
            assert_eq!(elapsed.limit(), Some(Duration::from_millis(50)))
        }
        other => panic!("expected a timed-out enter, got {other:?}"),
    }
    assert_eq!(ran.load(SeqCst), 0, "the block ran");
    assert_eq!(exits.load(SeqCst), 0, "a half-entered manager exited");
}

#[tokio::test(start_paused = true)]
async fn fast_enter_and_manager_errors_pass_through() {
    let exits = Arc::new(AtomicUsize::new(0));
    let ok: Result<u32, EnterError<PoolError>> = with_scope!(enter_timeout(pool(10, false, &exits), Duration::from_millis(50)) as n => { Ok(n + 1) });
    assert_eq!(ok, Ok(43));
    assert_eq!(exits.load(SeqCst), 1);
    let failed: Result<u32, EnterError<PoolError>> = with_scope!(enter_timeout(pool(10, true, &exits), Duration::from_millis(50)) as n => { Ok(n) });
    assert_eq!(failed, Err(EnterError::Manager(PoolError)));
    assert_eq!(exits.load(SeqCst), 1, "a failed enter ran an exit");
    assert_eq!(failed.unwrap_err().to_string(), "pool closed");
}

#[tokio::test(start_paused = true)]
async fn only_the_enter_is_bounded() {
    let exits = Arc::new(AtomicUsize::new(0));
    let r: Result<u32, EnterError<PoolError>> = with_scope!(enter_timeout(pool(0, false, &exits), Duration::from_millis(50)) as n => {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(n)
    });
    assert_eq!(r, Ok(42));
    assert_eq!(exits.load(SeqCst), 1);
}
