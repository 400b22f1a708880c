//! `format_err!` / `bail!`: build `syn::Error`s spanned on user tokens.

/// `format_err!(tokens_or_span, "message {}", args)`.
macro_rules! format_err {
    ($span:expr, $msg:literal $(,)?) => {
        ::syn::Error::new_spanned(&$span, $msg)
    };
    ($span:expr, $fmt:literal, $($arg:tt)+) => {
        ::syn::Error::new_spanned(&$span, ::std::format!($fmt, $($arg)+))
    };
}

/// Returns early with `format_err!`.
macro_rules! bail {
    ($($tt:tt)+) => {
        return ::std::result::Result::Err(crate::error::format_err!($($tt)+))
    };
}

pub(crate) use {bail, format_err};
