//! `timeout` / `deadline`: Python's `asyncio.timeout`, as managers that bound
//! the body they guard.

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
/// with the time driver enabled.
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
