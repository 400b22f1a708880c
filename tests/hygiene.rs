//! Hygiene: expansions name only `::core` and the facade, so a local
//! `mod core {}` / `mod std {}` and shadowing names do not break them, and
//! they trigger no lints in user code.

#![deny(
    unused_qualifications,
    unused_mut,
    unused_variables,
    unused_imports,
    unused_braces
)]
#![deny(clippy::all)]
// The expansion's one `unsafe` block (around `Generator::new`) does not
// trip a user's `forbid(unsafe_code)`.
#![forbid(unsafe_code)]
#![allow(dead_code)]

mod core {}
mod std {}

// Shadow names generated code might use unqualified.
struct Option;
struct Some;
struct Result;
struct Ok;
struct Pin;
struct Box;
struct Future;
struct Infallible;
struct Scope;
struct Guard;
struct Generator;

use async_contextlib::{Outcome, async_context_manager, nullcontext, with_scope, yield_};

#[async_context_manager]
async fn plain(value: u32) -> u32 {
    let outcome = yield_!(value);
    let _ = outcome.is_success();
}

#[async_context_manager]
async fn lending(mut start: u32) -> &mut u32 {
    start += 1;
    let _ = yield_!(&mut start);
}

#[derive(Debug)]
struct E;

impl ::core::fmt::Display for E {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.write_str("E")
    }
}

#[async_context_manager]
async fn fallible(fail: bool) -> ::core::result::Result<u32, E> {
    if fail {
        return ::core::result::Result::Err(E);
    }
    match yield_!(1) {
        Outcome::Success => {}
        _ => return ::core::result::Result::Err(E),
    }
}

struct Thing {
    n: u32,
}

impl Thing {
    #[async_context_manager]
    async fn method(&mut self) -> &mut u32 {
        let _ = yield_!(&mut self.n);
    }
}

#[test]
fn expansions_are_hygienic() {
    let out = ::futures::executor::block_on(async {
        let a = with_scope!(plain(1) as a, lending(a) as b, nullcontext(2) as mut c => {
            c += 1;
            *b += c;
            *b
        });
        let r: ::core::result::Result<u32, E> = with_scope!(fallible(false) as f => {
            ::core::result::Result::Ok(f)
        });
        let mut thing = Thing { n: 4 };
        with_scope!(thing.method() as n => { *n += 1; });
        a + r.unwrap() + thing.n
    });
    assert_eq!(out, 5 + 1 + 5);
}

/// A user's `macro_rules!` that writes a `with_scope!` of its own managers
/// around the caller's: the expansion's names resolve whichever context
/// each manager's tokens come from, and a scope nested in another's block
/// re-imports them without clashing.
macro_rules! with_plain {
    ($m:expr, $name:ident => $block:block) => {
        with_scope!(plain(10) as base, $m as $name => { base + $block })
    };
}

#[test]
fn scopes_written_by_a_users_macro_are_hygienic() {
    let out = ::futures::executor::block_on(async {
        with_plain!(plain(2), two => {
            let inner = with_plain!(lending(two), n => { *n });
            two + inner
        })
    });
    assert_eq!(out, 10 + 2 + (10 + 3));
}
