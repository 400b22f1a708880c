//! `timeout` / `deadline`: Python's `asyncio.timeout`, as managers that bound
//! the body they guard; `move_on_after` / `move_on_at`: trio's cancel scopes,
//! the same cut absorbed into a `None`.

use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::{AsyncContextManager, Deadline, Outcome, OwnedManager};

/// Bounds the rest of the scope to `limit` from the moment it is entered
/// (Python's `asyncio.timeout`, trio's `fail_after`).
///
/// Managers entered after it and the block are cut when `limit` elapses:
/// they exit with [`Outcome::Cancelled`] and the scope fails with
/// [`Elapsed`], converted into the block's error type. A block that
/// finishes first, with `Ok` or `Err`, is untouched. Needs a tokio runtime
/// with the time driver enabled. A manager of `with_scope!`: an
/// [`ExitStack`](crate::ExitStack) refuses it (an entry guards no block).
///
/// ```
/// use std::time::Duration;
/// use async_contextlib::{timeout, with_scope, Elapsed};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let r: Result<u32, Elapsed> = with_scope!(timeout(Duration::from_millis(10)) => {
///     tokio::time::sleep(Duration::from_secs(5)).await;
///     Ok(1)
/// });
/// assert!(r.is_err());
/// # }
/// ```
#[must_use]
pub fn timeout(limit: Duration) -> Timeout {
    Timeout {
        bound: Bound::After(limit),
    }
}

/// Bounds the rest of the scope to the instant `at` (tokio's or std's
/// `Instant`); see [`timeout`].
#[must_use]
pub fn deadline(at: impl Into<Instant>) -> Timeout {
    Timeout {
        bound: Bound::At(at.into()),
    }
}

/// The manager returned by [`timeout`] and [`deadline`].
#[derive(Debug)]
pub struct Timeout {
    bound: Bound,
}

#[derive(Clone, Copy, Debug)]
enum Bound {
    After(Duration),
    At(Instant),
}

impl AsyncContextManager for Timeout {
    type Value<'a> = ();
    type Error = Elapsed;

    async fn enter(&mut self) -> Result<(), Elapsed> {
        Ok(())
    }

    async fn exit(&mut self, _outcome: Outcome) -> Result<(), Elapsed> {
        Ok(())
    }

    fn deadline(&mut self) -> Option<Deadline<Elapsed>> {
        let (at, limit) = match self.bound {
            // An instant too far away to represent is no deadline at all.
            Bound::After(limit) => (Instant::now().checked_add(limit)?, Some(limit)),
            Bound::At(at) => (at, None),
        };
        Some(Deadline {
            at,
            error: Elapsed {
                limit,
                deadline: at,
            },
        })
    }

    fn name(&self) -> &'static str {
        "async_contextlib::timeout"
    }
}

impl OwnedManager for Timeout {}

impl crate::SendManager for Timeout {
    async fn exit_owned(mut self, outcome: Outcome) -> Result<(), Elapsed> {
        self.exit(outcome).await
    }
}

/// The error of a scope cut by [`timeout`] or [`deadline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed {
    limit: Option<Duration>,
    deadline: Instant,
}

impl Elapsed {
    /// The instant the body was cut at.
    #[must_use]
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The limit given to [`timeout`] (`None` for [`deadline`]).
    #[must_use]
    pub fn limit(&self) -> Option<Duration> {
        self.limit
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.limit {
            Some(limit) => write!(f, "scope timed out after {limit:?}"),
            None => f.write_str("scope deadline elapsed"),
        }
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(elapsed: Elapsed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, elapsed)
    }
}

impl From<Infallible> for Elapsed {
    fn from(never: Infallible) -> Elapsed {
        match never {}
    }
}

/// Bounds a manager's *enter* — a slow acquisition (a pool under load, a
/// lock) — to `limit`: past it, the enter is dropped (it never finished, so
/// no exit runs) and fails with [`EnterError::TimedOut`]. The rest of the
/// scope is not bounded; combine with [`timeout`] for that. A wrapped
/// manager that bounds the scope itself (a deadline, a cancellation token)
/// still does, and its cut fails the scope with [`EnterError::Manager`]
/// of its error (for [`move_on_after`], too: an error, not `None`).
///
/// ```
/// use std::time::Duration;
/// use async_contextlib::{enter_timeout, nullcontext, with_scope, EnterError};
/// use std::convert::Infallible;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let n: Result<u32, EnterError<Infallible>> =
///     with_scope!(enter_timeout(nullcontext(7), Duration::from_secs(1)) as n => { Ok(n) });
/// assert_eq!(n.unwrap(), 7);
/// # }
/// ```
pub fn enter_timeout<M: AsyncContextManager>(manager: M, limit: Duration) -> EnterTimeout<M> {
    EnterTimeout { manager, limit }
}

/// The manager returned by [`enter_timeout`].
#[derive(Debug)]
pub struct EnterTimeout<M> {
    manager: M,
    limit: Duration,
}

/// The error of a manager wrapped by [`enter_timeout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnterError<E> {
    /// The enter did not finish within the limit.
    TimedOut(Elapsed),
    /// The manager itself failed (in its enter or its exit).
    Manager(E),
}

impl<E: fmt::Display> fmt::Display for EnterError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnterError::TimedOut(elapsed) => match elapsed.limit {
                Some(limit) => write!(f, "enter timed out after {limit:?}"),
                None => f.write_str("enter timed out"),
            },
            EnterError::Manager(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for EnterError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EnterError::TimedOut(elapsed) => Some(elapsed),
            EnterError::Manager(e) => Some(e),
        }
    }
}

impl<M: AsyncContextManager> AsyncContextManager for EnterTimeout<M> {
    type Value<'a>
        = M::Value<'a>
    where
        Self: 'a;
    type Error = EnterError<M::Error>;

    fn enter(&mut self) -> impl std::future::Future<Output = Result<Self::Value<'_>, Self::Error>> {
        let limit = self.limit;
        MapEnter {
            inner: tokio::time::timeout(limit, self.manager.enter()),
            limit,
        }
    }

    fn exit(
        &mut self,
        outcome: Outcome,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> {
        MapErr {
            inner: self.manager.exit(outcome),
        }
    }

    fn deadline(&mut self) -> Option<Deadline<Self::Error>> {
        self.manager.deadline().map(|d| Deadline {
            at: d.at,
            error: EnterError::Manager(d.error),
        })
    }

    fn name(&self) -> &'static str {
        self.manager.name()
    }

    fn __cut_by(&mut self) -> Option<(tokio_util::sync::CancellationToken, Self::Error)> {
        self.manager
            .__cut_by()
            .map(|(token, error)| (token, EnterError::Manager(error)))
    }

    const __RESUMABLE_EXIT: bool = M::__RESUMABLE_EXIT;
    // It owns the manager: dropping it drops the manager.
    const __DROP_CANCELS: bool = M::__DROP_CANCELS;
    // Its exit is the manager's, its error mapped.
    const __EXIT_COUNTS_ITSELF: bool = M::__EXIT_COUNTS_ITSELF;
}

impl<M: OwnedManager> OwnedManager for EnterTimeout<M> {}

impl<M: crate::SendManager> crate::SendManager for EnterTimeout<M> {
    fn exit_owned(
        self,
        outcome: Outcome,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send {
        MapErr {
            inner: self.manager.exit_owned(outcome),
        }
    }
}

// Hand-written futures rather than `async` blocks: see `step.rs` on why a
// generic `async` block holding a manager's future makes scopes `!Send`.
pin_project_lite::pin_project! {
    struct MapEnter<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        limit: Duration,
    }
}

impl<F: std::future::Future<Output = Result<V, E>>, V, E> std::future::Future for MapEnter<F> {
    type Output = Result<V, EnterError<E>>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let limit = *this.limit;
        this.inner.poll(cx).map(|r| match r {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(EnterError::Manager(e)),
            Err(_) => Err(EnterError::TimedOut(Elapsed {
                limit: Some(limit),
                deadline: Instant::now(),
            })),
        })
    }
}

pin_project_lite::pin_project! {
    struct MapErr<F> {
        #[pin]
        inner: F,
    }
}

impl<F: std::future::Future<Output = Result<(), E>>, E> std::future::Future for MapErr<F> {
    type Output = Result<(), EnterError<E>>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.project()
            .inner
            .poll(cx)
            .map(|r| r.map_err(EnterError::Manager))
    }
}

/// Cuts the rest of the scope after `limit` *without an error* (trio's
/// `move_on_after`; Python's `asyncio.timeout` whose `TimeoutError` is
/// caught right there).
///
/// The block evaluates to an `Option`: the scope is the block's value if
/// it finishes first, and `None` if it was cut. Managers entered after it
/// and the block exit with [`Outcome::Cancelled`]; managers entered before
/// it see the cut absorbed (the outcome of a block that ran to its end).
/// Its error, [`MovedOn`], never reaches the block's type: the other
/// managers of the same `with_scope!` must be infallible (nest a scope
/// inside for fallible ones). Needs a tokio runtime with the time driver.
///
/// ```
/// use std::time::Duration;
/// use async_contextlib::{move_on_after, with_scope};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let r: Option<u32> = with_scope!(move_on_after(Duration::from_millis(10)) => {
///     tokio::time::sleep(Duration::from_secs(5)).await;
///     Some(1)
/// });
/// assert_eq!(r, None);
/// let r: Option<u32> = with_scope!(move_on_after(Duration::from_secs(5)) => { Some(2) });
/// assert_eq!(r, Some(2));
/// # }
/// ```
///
/// A block that does not evaluate to an `Option` does not compile:
///
/// ```compile_fail
/// # use std::time::Duration;
/// # use async_contextlib::{move_on_after, with_scope};
/// # async fn f() {
/// let r: u32 = with_scope!(move_on_after(Duration::from_millis(10)) => { 1 });
/// # }
/// ```
#[must_use]
pub fn move_on_after(limit: Duration) -> MoveOn {
    MoveOn {
        bound: Bound::After(limit),
    }
}

/// Cuts the rest of the scope at the instant `at` (tokio's or std's
/// `Instant`) without an error (trio's `move_on_at`); see [`move_on_after`].
///
/// ```
/// use std::time::Duration;
/// use async_contextlib::{move_on_at, with_scope};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let at = tokio::time::Instant::now() + Duration::from_millis(5);
/// let r: Option<()> = with_scope!(move_on_at(at) => {
///     std::future::pending::<()>().await;
///     Some(())
/// });
/// assert!(r.is_none());
/// # }
/// ```
#[must_use]
pub fn move_on_at(at: impl Into<Instant>) -> MoveOn {
    MoveOn {
        bound: Bound::At(at.into()),
    }
}

/// The manager returned by [`move_on_after`] and [`move_on_at`].
///
/// It cuts only as a manager of `with_scope!`; an
/// [`ExitStack`](crate::ExitStack) refuses it, as it refuses [`timeout`]
/// (an entry guards no block).
#[derive(Debug)]
pub struct MoveOn {
    bound: Bound,
}

impl AsyncContextManager for MoveOn {
    type Value<'a> = ();
    type Error = MovedOn;

    async fn enter(&mut self) -> Result<(), MovedOn> {
        Ok(())
    }

    async fn exit(&mut self, _outcome: Outcome) -> Result<(), MovedOn> {
        Ok(())
    }

    fn deadline(&mut self) -> Option<Deadline<MovedOn>> {
        let at = match self.bound {
            Bound::After(limit) => Instant::now().checked_add(limit)?,
            Bound::At(at) => at,
        };
        Some(Deadline {
            at,
            error: MovedOn { deadline: at },
        })
    }

    fn name(&self) -> &'static str {
        "async_contextlib::move_on_after"
    }

    const __MOVES_ON: bool = true;
}

impl OwnedManager for MoveOn {}

impl crate::SendManager for MoveOn {
    async fn exit_owned(mut self, outcome: Outcome) -> Result<(), MovedOn> {
        self.exit(outcome).await
    }
}

/// The cut of a [`move_on_after`] / [`move_on_at`] scope. `with_scope!`
/// turns it into the scope's `None`; it is an error type only so that it
/// can be described (`Display`) to the managers and diagnostics that see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovedOn {
    deadline: Instant,
}

impl MovedOn {
    /// The instant the body was cut at.
    #[must_use]
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl fmt::Display for MovedOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("scope moved on at its deadline")
    }
}

impl std::error::Error for MovedOn {}
