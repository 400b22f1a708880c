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

use proc_macro::TokenStream;

mod args;
mod error;
mod expand;
#[cfg(test)]
mod fuzz;
mod parse;
mod scope;
mod valid;
mod yields;

/// Turns a single-`yield_!` `async fn` into an async context manager
/// (Python's `@asynccontextmanager`). See the crate documentation of
/// `async-contextlib` for the full contract.
#[proc_macro_attribute]
pub fn async_context_manager(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::async_context_manager(args.into(), item.into())
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
