//! `cancelled_by(token)` (#11): a scope cut by a `CancellationToken`; inner
//! managers and nested scopes see `Cancelled`, the scope fails with
//! `TokenCancelled`; the graceful-shutdown pattern, on both runtime
//! flavours.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_contextlib::testing::Recorder;
use async_contextlib::{
    AsyncContextManager, Elapsed, Outcome, OwnedManager, TokenCancelled, cancelled_by, locked,
    move_on_after, send_manager, timeout, with_scope,
};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

#[path = "../../tests/driver_util/mod.rs"]
mod driver_util;

driver_util::both_flavours! {
    cut_when_cancelled,
    untouched_when_not_cancelled,
    cancelled_before_start,
    nested_scope_is_cut,
    outer_token_cuts_inner_token_scope,
    with_timeout_and_move_on,
    graceful_shutdown,
    lock_released_on_shutdown,
}

const LONG: Duration = Duration::from_secs(60);

async fn cut_when_cancelled() {
    let token = CancellationToken::new();
    let outer = Recorder::new("outer");
    let inner = Recorder::new("inner");
    let canceller = tokio::spawn({
        let token = token.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            token.cancel();
        }
    });
    let mut reached = false;
    let r: Result<(), TokenCancelled> = with_scope!(
        outer.manager() as _o, cancelled_by(token.clone()), inner.manager() as _i => {
            tokio::time::sleep(LONG).await;
            reached = true;
            Ok(())
        }
    );
    canceller.await.unwrap();
    assert_eq!(r, Err(TokenCancelled));
    assert!(!reached);
    assert!(matches!(inner.outcomes()[..], [Outcome::Cancelled]));
    // The scope failed: the manager entered before the token sees it.
    match &outer.outcomes()[..] {
        [Outcome::Failed(f)] => assert!(f.is::<TokenCancelled>(), "{f}"),
        other => panic!("{other:?}"),
    }
}

async fn untouched_when_not_cancelled() {
    let token = CancellationToken::new();
    let r: Result<u32, TokenCancelled> = with_scope!(cancelled_by(token.clone()) => {
        tokio::task::yield_now().await;
        Ok(4)
    });
    assert_eq!(r, Ok(4));
    // A body error is the body's.
    #[derive(Debug, PartialEq)]
    enum E {
        Cancelled,
        Body,
    }
    impl From<TokenCancelled> for E {
        fn from(_: TokenCancelled) -> E {
            E::Cancelled
        }
    }
    let r: Result<u32, E> = with_scope!(cancelled_by(token.clone()) => { Err(E::Body) });
    assert_eq!(r, Err(E::Body));
    token.cancel();
    // Cancelled after the scope: nothing happens.
    assert!(token.is_cancelled());
}

async fn cancelled_before_start() {
    let token = CancellationToken::new();
    token.cancel();
    let steps = AtomicUsize::new(0);
    let r: Result<(), TokenCancelled> = with_scope!(cancelled_by(token) => {
        steps.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        steps.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    assert_eq!(r, Err(TokenCancelled));
    // Cut at the block's first await point.
    assert_eq!(steps.load(Ordering::SeqCst), 1);
}

async fn nested_scope_is_cut() {
    let token = CancellationToken::new();
    let rec = Recorder::new("nested");
    let t = token.clone();
    let r: Result<(), TokenCancelled> = with_scope!(cancelled_by(token.clone()) => {
        with_scope!(rec.manager() as _a, rec.manager() as _b => {
            t.cancel();
            tokio::time::sleep(LONG).await;
        });
        Ok(())
    });
    assert_eq!(r, Err(TokenCancelled));
    assert_eq!(rec.events().len(), 4);
    assert!(matches!(
        rec.outcomes()[..],
        [Outcome::Cancelled, Outcome::Cancelled]
    ));
}

async fn outer_token_cuts_inner_token_scope() {
    let outer = CancellationToken::new();
    let inner = CancellationToken::new();
    let rec = Recorder::new("r");
    let o = outer.clone();
    let r: Result<(), TokenCancelled> = with_scope!(
        cancelled_by(outer.clone()), rec.manager() as _a, cancelled_by(inner.clone()), rec.manager() as _b => {
            o.cancel();
            tokio::time::sleep(LONG).await;
            Ok(())
        }
    );
    assert_eq!(r, Err(TokenCancelled));
    assert!(!inner.is_cancelled());
    // The outer token cut both managers.
    assert!(matches!(
        rec.outcomes()[..],
        [Outcome::Cancelled, Outcome::Cancelled]
    ));
    // The inner token alone cuts only what is inside it.
    let inner = CancellationToken::new();
    let i = inner.clone();
    let r: Result<(), TokenCancelled> = with_scope!(
        cancelled_by(CancellationToken::new()), rec.manager() as _a, cancelled_by(inner) => {
            i.cancel();
            tokio::time::sleep(LONG).await;
            Ok(())
        }
    );
    assert_eq!(r, Err(TokenCancelled));
    match &rec.outcomes()[2..] {
        [Outcome::Failed(f)] => assert!(f.is::<TokenCancelled>()),
        other => panic!("{other:?}"),
    }
}

async fn with_timeout_and_move_on() {
    // The timer fires first: Elapsed.
    #[derive(Debug, PartialEq)]
    enum E {
        Elapsed,
        Cancelled,
    }
    impl From<Elapsed> for E {
        fn from(_: Elapsed) -> E {
            E::Elapsed
        }
    }
    impl From<TokenCancelled> for E {
        fn from(_: TokenCancelled) -> E {
            E::Cancelled
        }
    }
    let token = CancellationToken::new();
    let r: Result<(), E> = with_scope!(cancelled_by(token.clone()), timeout(Duration::from_millis(5)) => {
        tokio::time::sleep(LONG).await;
        Ok(())
    });
    assert_eq!(r, Err(E::Elapsed));
    // The token fires first.
    let t = token.clone();
    let r: Result<(), E> = with_scope!(timeout(LONG), cancelled_by(token.clone()) => {
        t.cancel();
        tokio::time::sleep(LONG).await;
        Ok(())
    });
    assert_eq!(r, Err(E::Cancelled));
    // A token inside a move_on scope.
    let r: Option<Result<(), TokenCancelled>> = with_scope!(move_on_after(LONG) => {
        Some(with_scope!(cancelled_by(token.clone()) => {
            tokio::time::sleep(LONG).await;
            Ok(())
        }))
    });
    assert_eq!(r, Some(Err(TokenCancelled)));
}

/// Counts its exits, and waits a little in them (an async cleanup).
struct Conn {
    exits: Arc<AtomicUsize>,
}

impl AsyncContextManager for Conn {
    type Value<'a> = ();
    type Error = std::convert::Infallible;

    async fn enter(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn exit(&mut self, outcome: Outcome) -> Result<(), Self::Error> {
        assert!(matches!(outcome, Outcome::Cancelled), "{outcome:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.exits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl OwnedManager for Conn {}
send_manager!(Conn);

async fn graceful_shutdown() {
    let shutdown = CancellationToken::new();
    let exits = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(tokio::sync::Barrier::new(9));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (shutdown, exits, started) = (shutdown.clone(), exits.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            let r: Result<(), TokenCancelled> = with_scope!(
                cancelled_by(shutdown), Conn { exits: exits.clone() }, Conn { exits } => {
                    started.wait().await;
                    loop {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            );
            r
        }));
    }
    started.wait().await;
    shutdown.cancel();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Err(TokenCancelled));
    }
    // Every exit ran before its task returned: no drain needed.
    assert_eq!(exits.load(Ordering::SeqCst), 16);
}

async fn lock_released_on_shutdown() {
    let shutdown = CancellationToken::new();
    let m = Mutex::new(0);
    let s = shutdown.clone();
    let r: Result<(), TokenCancelled> = with_scope!(cancelled_by(shutdown.clone()), locked(&m) as n => {
        *n += 1;
        s.cancel();
        std::future::pending::<()>().await;
        Ok(())
    });
    assert_eq!(r, Err(TokenCancelled));
    assert_eq!(*m.try_lock().unwrap(), 1);
}
