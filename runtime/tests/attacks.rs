//! Attacks on the lending invariant from safe code, kept as regression
//! tests (found by adversarial review; run under Miri with the rest).
//!
//! The expansion's paths go through the facade, which a user can redirect
//! (`crate = "..."`, here, or a crate of their own named
//! `async_contextlib`). Each manager's paths are redirected on its own, so
//! an attacker can make one manager (`a`) hand its real yielder to a trait
//! method of theirs, and another (`d`) feed that yielder, through a
//! `Generator::new` of theirs, to its own expansion — whose (real, unsafe)
//! yield would then run on `a`'s slot from `d`'s frame. Two defences stop
//! it: the yielder's type carries its fn's brand (a type local to the fn),
//! so `d`'s body accepts no yielder of `a`'s; and, were one to get through,
//! the yield future's frame check (`runtime/tests/soundness.rs`).

#![forbid(unsafe_code)]

use std::any::Any;
use std::cell::RefCell;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use async_contextlib::{AsyncContextManager, Outcome, async_context_manager, yield_};

pub struct Mark<T>(pub T);

/// `a`'s facade: a real generator, but a yield path that misses the
/// inherent method and falls back to the user's `Steal` trait.
mod fa {
    pub mod generated {
        pub use async_contextlib::generated::Owned;
        pub type ByValue<T> = crate::Mark<T>;
        pub type Generator<F, Y, O, B> = async_contextlib::generated::Generator<
            F,
            async_contextlib::generated::LendMut<Y>,
            O,
            B,
        >;
    }
    pub mod __private {
        pub type Co<Y, B> =
            async_contextlib::__private::Co<async_contextlib::generated::LendMut<Y>, B>;
    }
}

/// `d`'s facade: a `Generator::new` of the user's, which hands `d`'s body
/// the stolen yielder; the real `Co` and its `unsafe` methods otherwise.
mod fd {
    pub mod generated {
        pub use async_contextlib::generated::{LendMut, Owned};
        pub struct Generator<F, Y, O, B>(pub Option<F>, super::super::PhantomData<(Y, O, B)>);
        impl<F, T: 'static, O, B: 'static> Generator<F, LendMut<T>, O, B> {
            pub fn new<G>(_name: &'static str, make: G) -> Self
            where
                G: FnOnce(async_contextlib::__private::Co<LendMut<T>, B>) -> F,
            {
                let stolen = super::super::STASH
                    .with(|s| s.borrow_mut().take())
                    .expect("a stolen yielder");
                // `d`'s body takes a yielder of `d`'s brand only.
                match stolen.downcast::<async_contextlib::__private::Co<LendMut<T>, B>>() {
                    Ok(co) => Generator(Some(make(*co)), super::super::PhantomData),
                    Err(_) => Generator(None, super::super::PhantomData),
                }
            }
        }
    }
    pub use async_contextlib::__private;
}

thread_local! {
    static STASH: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

trait Steal {
    fn yield_value<V>(self, v: V) -> std::future::Ready<Outcome>;
}
impl<C: 'static> Steal for C {
    fn yield_value<V>(self, _v: V) -> std::future::Ready<Outcome> {
        STASH.with(|s| *s.borrow_mut() = Some(Box::new(self)));
        std::future::ready(Outcome::Success)
    }
}

#[async_context_manager(crate = "crate::fd")]
async fn d() -> &mut Mark<u64> {
    let mut x = Box::new(Mark(0x1234_5678_u64));
    let _ = yield_!(&mut *x);
}

#[async_context_manager(crate = "crate::fa")]
async fn a() -> u64 {
    let _ = yield_!(0_u64); // `Steal::yield_value` gets `a`'s yielder
    let dg = d(); // the fake `Generator::new` tries to feed it to `d`'s body
    REFUSED.with(|r| r.set(dg.0.is_none()));
    poll_fn(|_| Poll::<()>::Pending).await;
}

thread_local! {
    static REFUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[test]
fn a_yielder_stolen_from_one_fn_is_refused_by_another() {
    let mut g = a();
    let mut cx = Context::from_waker(Waker::noop());
    let mut enter = pin!(g.enter());
    assert!(enter.as_mut().poll(&mut cx).is_pending(), "nothing lent");
    assert!(REFUSED.with(std::cell::Cell::get), "the brands differ");
}
