//! `move_on_after` / `move_on_at` (#11, trio's cancel scopes): the rest of
//! the scope is cut without an error and the scope evaluates to `None`;
//! inner managers see `Cancelled`, outer ones the cut absorbed; on both
//! runtime flavours.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_contextlib::testing::Recorder;
use async_contextlib::{
    BoxError, Elapsed, ExitStack, Outcome, move_on_after, move_on_at, timeout, with_scope,
};
use futures::FutureExt;

#[path = "../../tests/driver_util/mod.rs"]
mod driver_util;

driver_util::both_flavours! {
    cut_is_none,
    finished_is_some,
    inner_see_cancelled_outer_see_success,
    nested_scope_in_block_is_cut,
    at_instant,
    timeout_inside_move_on,
    move_on_inside_timeout,
    panic_still_panics,
    dropped_from_outside,
    in_exit_stack,
    shielded_work_goes_on,
}

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(5);

async fn cut_is_none() {
    let mut reached = false;
    let r: Option<u32> = with_scope!(move_on_after(SHORT) => {
        tokio::time::sleep(LONG).await;
        reached = true;
        Some(1)
    });
    assert_eq!(r, None);
    assert!(!reached);
}

async fn finished_is_some() {
    let r: Option<u32> = with_scope!(move_on_after(LONG) => {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Some(7)
    });
    assert_eq!(r, Some(7));
    // The block's own `None` is a value like any other.
    let r: Option<u32> = with_scope!(move_on_after(LONG) => { None });
    assert_eq!(r, None);
}

async fn inner_see_cancelled_outer_see_success() {
    let outer = Recorder::new("outer");
    let inner = Recorder::new("inner");
    let r: Option<usize> = with_scope!(
        outer.manager() as _o, move_on_after(SHORT), inner.manager() as i => {
            tokio::time::sleep(LONG).await;
            Some(i)
        }
    );
    assert_eq!(r, None);
    assert!(matches!(inner.outcomes()[..], [Outcome::Cancelled]));
    assert!(matches!(outer.outcomes()[..], [Outcome::Success]));
}

async fn nested_scope_in_block_is_cut() {
    let rec = Recorder::new("nested");
    let r: Option<()> = with_scope!(move_on_after(SHORT) => {
        with_scope!(rec.manager() as _a, rec.manager() as _b => {
            tokio::time::sleep(LONG).await;
        });
        Some(())
    });
    assert_eq!(r, None);
    // Innermost first, both cut.
    let events = rec.events();
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(matches!(
        rec.outcomes()[..],
        [Outcome::Cancelled, Outcome::Cancelled]
    ));
}

async fn at_instant() {
    let at = tokio::time::Instant::now() + SHORT;
    let r: Option<()> = with_scope!(move_on_at(at) => {
        tokio::time::sleep(LONG).await;
        Some(())
    });
    assert!(r.is_none());
    // A std `Instant` too; one already past cuts at once.
    let r: Option<()> = with_scope!(move_on_at(std::time::Instant::now()) => {
        tokio::time::sleep(LONG).await;
        Some(())
    });
    assert!(r.is_none());
}

async fn timeout_inside_move_on() {
    let r: Option<Result<(), Elapsed>> = with_scope!(move_on_after(LONG) => {
        Some(with_scope!(timeout(SHORT) => {
            tokio::time::sleep(LONG).await;
            Ok(())
        }))
    });
    assert!(matches!(r, Some(Err(_))));
}

async fn move_on_inside_timeout() {
    let rec = Recorder::new("t");
    let r: Result<Option<()>, Elapsed> = with_scope!(timeout(LONG), rec.manager() as _r => {
        Ok(with_scope!(move_on_after(SHORT) => {
            tokio::time::sleep(LONG).await;
            Some(())
        }))
    });
    assert_eq!(r, Ok(None));
    assert!(matches!(rec.outcomes()[..], [Outcome::Success]));
}

async fn panic_still_panics() {
    let rec = Recorder::new("p");
    let r = AssertUnwindSafe(async {
        let _: Option<()> = with_scope!(move_on_after(LONG), rec.manager() as _r => {
            panic!("boom")
        });
    })
    .catch_unwind()
    .await;
    assert!(r.is_err());
    assert!(matches!(rec.outcomes()[..], [Outcome::Panicked(_)]));
}

async fn dropped_from_outside() {
    let outer = Recorder::new("outer");
    let inner = Recorder::new("inner");
    let r = tokio::time::timeout(SHORT, async {
        let _: Option<()> = with_scope!(
            outer.manager() as _o, move_on_after(LONG), inner.manager() as _i => {
                tokio::time::sleep(LONG).await;
                Some(())
            }
        );
    })
    .await;
    assert!(r.is_err());
    async_contextlib::drain().await;
    assert!(matches!(inner.outcomes()[..], [Outcome::Cancelled]));
    assert!(matches!(outer.outcomes()[..], [Outcome::Cancelled]));
}

async fn in_exit_stack() {
    // An entry guards no block: a bound there would bound nothing (a
    // timeout that never fires), so the stack refuses every bounding
    // manager, loudly, and what it had entered exits with `Panicked`.
    refused(
        move_on_after(Duration::from_millis(1)),
        "async_contextlib::move_on_after",
    )
    .await;
    refused(timeout(LONG), "async_contextlib::timeout").await;
    let token = tokio_util::sync::CancellationToken::new();
    refused(
        async_contextlib::cancelled_by(token),
        "async_contextlib::cancelled_by",
    )
    .await;
}

async fn refused<M>(manager: M, name: &str)
where
    M: async_contextlib::SendManager,
    M::Error: Into<BoxError>,
{
    let before = Recorder::new("before");
    let r = AssertUnwindSafe(async {
        let _: Result<u32, BoxError> = with_scope!(ExitStack::new() as stack => {
            stack.enter(before.manager()).await?;
            stack.enter(manager).await.map_err(|e| e.into())?;
            tokio::time::sleep(SHORT).await;
            Ok(3)
        });
    })
    .catch_unwind()
    .await;
    let payload = r.expect_err("the stack refuses a bounding manager");
    let message = payload.downcast_ref::<String>().expect("a formatted panic");
    assert!(
        message.contains(name) && message.contains("an ExitStack entry guards no block"),
        "{message}"
    );
    assert!(matches!(before.outcomes()[..], [Outcome::Panicked(_)]));
}

async fn shielded_work_goes_on() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let r: Option<()> = with_scope!(move_on_after(SHORT) => {
        async_contextlib::shield(async move {
            // Far past the cut (SHORT), so that the cut comes first even
            // where polls are slow (Miri): the scope waits for the shielded
            // work either way.
            tokio::time::sleep(SHORT * 100).await;
            d.store(true, Ordering::SeqCst);
        })
        .await;
        Some(())
    });
    assert_eq!(r, None);
    async_contextlib::drain().await;
    assert!(
        done.load(Ordering::SeqCst),
        "the shielded future finished after the cut"
    );
}
