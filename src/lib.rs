//! async-contextlib
#![warn(missing_docs)]

pub use async_contextlib_macros::async_context_manager;
pub use async_contextlib_runtime::*;

/// Python's `async with`.
#[macro_export]
macro_rules! with_scope {
    ($($tokens:tt)*) => {
        $crate::__private::with_scope_inner!(($crate) $($tokens)*)
    };
}

/// The yield point of an `#[async_context_manager]` fn.
#[macro_export]
macro_rules! yield_ {
    // Written by `#[async_context_manager]` in place of the user's input.
    (@__acm_yield $co:ident . $method:ident ($($value:tt)*)) => {
        $co.$method($($value)*).await
    };
    ($($tokens:tt)*) => {
        ::core::compile_error!("`yield_!` may only be used inside an #[async_context_manager] fn")
    };
}

#[doc(hidden)]
pub mod __private {
    pub use async_contextlib_macros::with_scope_inner;
    pub use async_contextlib_runtime::__private::*;
}
