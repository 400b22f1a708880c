//! `cancelled_by`: a scope cut by a `tokio_util` `CancellationToken` —
//! graceful shutdown as a manager.

use std::convert::Infallible;
use std::fmt;

use tokio_util::sync::CancellationToken;

use crate::{AsyncContextManager, Outcome, OwnedManager};

/// Cuts the rest of the scope when `token` is cancelled (the shutdown
/// signal of a service; trio's `CancelScope.cancel()` from outside).
///
/// Like [`timeout`](crate::timeout), with the token for a timer: managers
/// entered after it and the block are cut at their next await point once
/// the token is cancelled — they exit with [`Outcome::Cancelled`], nested
/// scopes innermost first — and the scope fails with [`TokenCancelled`],
/// converted into the block's error type. A block that finishes first is
/// untouched. A token cancelled before the scope starts cuts the block at
/// its first await point. (An error rather than `None`, unlike
/// [`move_on_after`](crate::move_on_after): a shutdown usually has to
/// reach the caller.) The scope must be polled for the cut to happen. An
/// [`ExitStack`](crate::ExitStack) refuses it (an entry guards no block):
/// enter it in the `with_scope!` around the stack.
///
/// ```
/// use async_contextlib::{cancelled_by, with_scope, TokenCancelled};
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let shutdown = CancellationToken::new();
/// let worker = tokio::spawn({
///     let shutdown = shutdown.clone();
///     async move {
///         let r: Result<(), TokenCancelled> = with_scope!(cancelled_by(shutdown) => {
///             loop {
///                 tokio::task::yield_now().await; // serve requests ...
///             }
///         });
///         r
///     }
/// });
/// shutdown.cancel();
/// assert_eq!(worker.await.unwrap(), Err(TokenCancelled));
/// # }
/// ```
#[must_use]
pub fn cancelled_by(token: CancellationToken) -> CancelledBy {
    CancelledBy { token: Some(token) }
}

/// The manager returned by [`cancelled_by`].
#[derive(Debug)]
pub struct CancelledBy {
    // Handed to the scope just before enter.
    token: Option<CancellationToken>,
}

impl AsyncContextManager for CancelledBy {
    type Value<'a> = ();
    type Error = TokenCancelled;

    async fn enter(&mut self) -> Result<(), TokenCancelled> {
        Ok(())
    }

    async fn exit(&mut self, _outcome: Outcome) -> Result<(), TokenCancelled> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "async_contextlib::cancelled_by"
    }

    fn __cut_by(&mut self) -> Option<(CancellationToken, TokenCancelled)> {
        Some((self.token.take()?, TokenCancelled))
    }
}

impl OwnedManager for CancelledBy {}

impl crate::SendManager for CancelledBy {
    async fn exit_owned(mut self, outcome: Outcome) -> Result<(), TokenCancelled> {
        self.exit(outcome).await
    }
}

/// The error of a scope cut by [`cancelled_by`]: its token was cancelled.
///
/// ```
/// let e = async_contextlib::TokenCancelled;
/// assert_eq!(e.to_string(), "scope cancelled by its cancellation token");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenCancelled;

impl fmt::Display for TokenCancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("scope cancelled by its cancellation token")
    }
}

impl std::error::Error for TokenCancelled {}

impl From<TokenCancelled> for std::io::Error {
    fn from(cancelled: TokenCancelled) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::Interrupted, cancelled)
    }
}

impl From<Infallible> for TokenCancelled {
    fn from(never: Infallible) -> TokenCancelled {
        match never {}
    }
}
