//! Implementation detail of [async-contextlib](https://docs.rs/async-contextlib):
//! the `#[async_context_manager]` attribute and the `with_scope!` parser.
//! Depend on `async-contextlib` and use them from there.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![doc(test(no_crate_inject, attr(deny(warnings))))]
#![warn(clippy::pedantic)]

use proc_macro::TokenStream;

mod args;
mod error;
mod expand;
#[cfg(test)]
mod fuzz;
mod parse;
mod scope;
mod scoped;
mod valid;
mod yields;

/// Turns a single-`yield_!` `async fn` into an async context manager
/// (Python's `@asynccontextmanager`).
///
/// Code before `yield_!(value)` is the enter, code after it the exit;
/// `yield_!` evaluates to the scope's `Outcome`. Calling the fn runs
/// nothing: it returns a manager for `with_scope!`.
///
/// The return type says what the block receives and whether the manager
/// can fail:
///
/// | return type | the block binds | error |
/// |---|---|---|
/// | `T` | the yielded `T` | `Infallible` |
/// | `&mut T` / `&T` | a borrow of a local of the fn, for the block's length | `Infallible` |
/// | `Result<X, E>`, `X` one of the above | as above | `E`; `?` works before and after the yield |
///
/// The fn's body ends without a tail value (the macro supplies `Ok(())`).
/// It keeps its name, visibility, attributes, docs, generics and where
/// clauses, and works as a method (`&self`, `&mut self`, `self`,
/// `self: Arc<Self>`) in inherent impls. Its signature decides what happens
/// on cancellation: if it borrows nothing (no reference or non-`'static`
/// lifetime; every type parameter and `impl Trait` argument bounded by
/// `'static`), the manager is an `OwnedManager` and its exit runs on the
/// exit driver after the scope is dropped; otherwise the exit is finished
/// in place, before the drop returns. A method taking `self` by value
/// (`self`, `self: Arc<Self>`) is owned too, with `where Self: 'static`
/// added for it; `#[async_context_manager(borrowing)]` opts out (a type
/// with lifetimes). Two things are invisible to the attribute, and an
/// argument holding one fails to compile at that argument rather than at
/// the scopes using the manager: a lifetime hidden in a path (`conn: Conn`
/// for a `struct Conn<'a>`; write `Conn<'_>`, and the manager borrows) and
/// a type parameter of the surrounding `impl` (`x: T` in `impl<T> ..`;
/// bound it `T: 'static` for an owned manager, or write `(borrowing)`).
/// References inside a fn pointer or an `Fn(..)` bound (`fn(&str)`,
/// `Box<dyn Fn(&str) + Send>`) are the callee's own: they borrow nothing.
///
/// ```
/// use async_contextlib::{async_context_manager, with_scope, yield_};
///
/// #[async_context_manager]
/// async fn counted(log: &mut Vec<&'static str>) -> &mut u32 {
///     let mut n = 0;
///     let outcome = yield_!(&mut n);
///     log.push(if outcome.is_success() { "ok" } else { "not ok" });
///     assert_eq!(n, 2);
/// }
///
/// # futures::executor::block_on(async {
/// let mut log = Vec::new();
/// with_scope!(counted(&mut log) as n => { *n += 2; });
/// assert_eq!(log, ["ok"]);
/// # });
/// ```
///
/// A fn that returns before its `yield_!` (other than with an error)
/// panics at enter with a message naming it, like Python's "generator
/// didn't yield". Mistakes Python finds at run time are compile errors
/// here: no `yield_!`, a second `yield_!`, a `yield_!` in a loop, closure,
/// nested `async` block or nested fn, and a non-`async` fn. So is a
/// `yield_!` inside another macro's input (`pin!`, `vec![]`, `select!`,
/// `with_scope!`, your own `macro_rules!`): the attribute cannot see what
/// that macro does with it, and the lent borrow is sound only if the yield
/// is awaited in place, in the fn's own body. Bind the outcome first
/// (`let outcome = yield_!(x);`) and use it in the macro; hold a resource
/// across the yield as a local (the code after `yield_!` runs on every
/// path, as an exit does).
///
/// `#[async_context_manager(crate = "path")]` names the facade for crates
/// that re-export `async-contextlib` (a plain path).
#[proc_macro_attribute]
pub fn async_context_manager(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::async_context_manager(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Runs an async fn's whole body inside a scope over the listed managers
/// (Python's `AsyncContextDecorator`): the body behaves exactly as the
/// block of a `with_scope!` over them — same order, outcomes, error
/// conversion, panics and cancellation.
///
/// ```
/// use async_contextlib::{nullcontext, scoped};
///
/// struct Service { base: u32 }
///
/// impl Service {
///     #[scoped(nullcontext(self.base) as base, nullcontext(amount * 2) as double)]
///     async fn total(&self, amount: u32) -> Result<u32, std::io::Error> {
///         let checked = base.checked_add(double).ok_or(std::io::ErrorKind::InvalidInput)?;
///         Ok(checked)
///     }
/// }
///
/// # futures::executor::block_on(async {
/// assert_eq!(Service { base: 1 }.total(20).await.unwrap(), 41);
/// # });
/// ```
///
/// The manager list is `with_scope!`'s: `manager [as pattern], ...`; the
/// fn's arguments (and `self`) may be used in it. `?` and `return` in the
/// body work as in the fn: the body's block has the fn's return type. If
/// any manager is fallible, that type is a `Result` whose error converts
/// from the managers' errors. `#[scoped(crate = "path", ...)]` names the
/// facade for crates that re-export it.
#[proc_macro_attribute]
pub fn scoped(args: TokenStream, item: TokenStream) -> TokenStream {
    scoped::scoped(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// The parser behind `with_scope!`; called as
/// `with_scope_inner!(($crate) managers => { block })`.
#[doc(hidden)]
#[proc_macro]
pub fn with_scope_inner(input: TokenStream) -> TokenStream {
    scope::with_scope(input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
