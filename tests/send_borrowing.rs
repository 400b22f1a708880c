//! A scope over managers whose types borrow (hand-written `B<'a>`, or a
//! generated fn taking a reference) is `Send`, so it can run inside
//! `tokio::spawn` — regression for the runners once being generic `async
//! fn`s, which made such scopes `!Send` (rust-lang/rust#110338).

use async_contextlib::{AsyncContextManager, Outcome, async_context_manager, with_scope, yield_};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

struct B<'a>(&'a AtomicUsize);
impl<'a> AsyncContextManager for B<'a> {
    type Value<'v>
        = usize
    where
        Self: 'v;
    type Error = Infallible;
    async fn enter(&mut self) -> Result<usize, Infallible> {
        Ok(self.0.load(Ordering::SeqCst))
    }
    async fn exit(&mut self, _o: Outcome) -> Result<(), Infallible> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[async_context_manager]
async fn gen_borrow(c: &AtomicUsize) -> &mut usize {
    let mut n = c.load(Ordering::SeqCst);
    let _ = yield_!(&mut n);
    c.fetch_add(1, Ordering::SeqCst);
}

fn assert_send<T: Send>(_: &T) {}

#[tokio::test]
async fn borrowing_hand_written_in_spawn() {
    let f = async {
        let c = AtomicUsize::new(0);
        with_scope!(B(&c) as v => { v });
        c.load(Ordering::SeqCst)
    };
    assert_send(&f);
    assert_eq!(tokio::spawn(f).await.unwrap(), 1);
}

#[tokio::test]
async fn borrowing_generated_in_spawn() {
    let f = async {
        let c = AtomicUsize::new(0);
        with_scope!(gen_borrow(&c) as v => { *v += 1; });
        c.load(Ordering::SeqCst)
    };
    assert_send(&f);
    assert_eq!(tokio::spawn(f).await.unwrap(), 1);
}

#[async_context_manager]
async fn gen_static_str(name: &'static str) -> &'static str {
    let _ = yield_!(name);
}

#[tokio::test]
async fn generated_manager_yielding_static_str_in_spawn() {
    let f = async {
        let a = with_scope!(gen_static_str("a") as s => { s });
        let b = with_scope!(gen_static_str("b") as s => { s });
        format!("{a}{b}")
    };
    assert_send(&f);
    assert_eq!(tokio::spawn(f).await.unwrap(), "ab");
}
