//! What an exit sees: how the body of its scope ended.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// A caught panic's payload, to resume once every exit has run.
pub(crate) type Payload = Box<dyn Any + Send + 'static>;

/// How the body of a scope ended, as its managers' exits see it.
///
/// `Outcome` is owned, `'static`, `Send + Sync` and cheap to clone; on the
/// happy path it is the unit variant [`Outcome::Success`] and costs nothing.
///
/// Python's `__aexit__` may *swallow* the exception it is given by returning
/// `True`. Rust has no value to put in place of a body that failed, so an
/// exit cannot turn a failure into success: the caller matches on the error
/// the scope returns. An exit may still *fail* itself, which the scope
/// reports (see [`with_scope!`](../async_contextlib/macro.with_scope.html)).
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The body finished and its value was not an `Err`.
    Success,
    /// The body, an inner manager's enter or an inner exit returned `Err`.
    Failed(Failure),
    /// The body (or an inner enter/exit) panicked. The panic resumes after
    /// every exit has run.
    Panicked(Panic),
    /// The scope's future was dropped, or a deadline cut the body.
    Cancelled,
}

impl Outcome {
    /// `true` only for [`Outcome::Success`].
    #[inline]
    #[must_use]
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// The failure, if the body returned `Err`.
    #[must_use]
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Failed(failure) => Some(failure),
            _ => None,
        }
    }

    /// A short lowercase label for logs: `success`, `failed`, `panicked`, `cancelled`.
    #[must_use]
    pub fn label(&self) -> &'static str {
        self.kind().label()
    }

    /// Which outcome this is, in one byte (kept where the outcome itself
    /// moved on, for a label later).
    pub(crate) fn kind(&self) -> Kind {
        Kind(match self {
            Outcome::Success => 0,
            Outcome::Failed(_) => 1,
            Outcome::Panicked(_) => 2,
            Outcome::Cancelled => 3,
        })
    }
}

/// An [`Outcome`]'s variant, without its payload.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kind(u8);

impl Kind {
    /// The outcome's [`label`](Outcome::label).
    pub(crate) fn label(self) -> &'static str {
        ["success", "failed", "panicked", "cancelled"][usize::from(self.0)]
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success => f.write_str("success"),
            Outcome::Failed(failure) => write!(f, "failed: {failure}"),
            Outcome::Panicked(panic) => write!(f, "panicked: {}", panic.message()),
            Outcome::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// The error a body returned, as an owned record: its type and its text.
///
/// The error itself goes back to the caller of the scope; the exits see this
/// record. [`Failure::is`] tests the concrete type and `Display` prints the
/// error's own `Display` (or `Debug`, or the type name, whichever the type
/// has).
#[derive(Clone)]
pub struct Failure {
    inner: Arc<FailureInner>,
}

struct FailureInner {
    type_id: std::any::TypeId,
    type_name: &'static str,
    message: String,
}

impl Failure {
    /// Records an error through its `Display`.
    pub fn new<E: fmt::Display + ?Sized>(error: &E) -> Failure {
        Failure::with_message::<E>(error.to_string())
    }

    /// Records an error through its `Debug`, for error types without `Display`.
    #[doc(hidden)]
    pub fn from_debug<E: fmt::Debug + ?Sized>(error: &E) -> Failure {
        Failure::with_message::<E>(format!("{error:?}"))
    }

    /// Records an error that has neither `Display` nor `Debug`: its type name.
    #[doc(hidden)]
    pub fn opaque<E: ?Sized>(_error: &E) -> Failure {
        Failure::with_message::<E>(format!("an error of type `{}`", std::any::type_name::<E>()))
    }

    fn with_message<E: ?Sized>(message: String) -> Failure {
        Failure {
            inner: Arc::new(FailureInner {
                type_id: typeid::of::<E>(),
                type_name: std::any::type_name::<E>(),
                message,
            }),
        }
    }

    /// Whether the recorded error is of type `E` (lifetimes are not compared).
    #[must_use]
    pub fn is<E: ?Sized>(&self) -> bool {
        self.inner.type_id == typeid::of::<E>()
    }

    /// The error type's name, as `std::any::type_name` spells it.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        self.inner.type_name
    }

    /// The error's text.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.inner.message
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("type", &self.inner.type_name)
            .field("message", &self.inner.message)
            .finish()
    }
}

/// A panic seen by an exit: its payload's text. The payload itself resumes
/// unwinding once every exit has run.
#[derive(Clone)]
pub struct Panic {
    // `Arc<String>`, not `Arc<str>`: a thin pointer keeps `Outcome` at 16 bytes.
    message: Arc<String>,
}

impl Panic {
    /// Reads the text of a panic payload (`&str` or `String`; anything else
    /// reads as `"Box<dyn Any>"`, as the standard panic hook prints it).
    #[must_use]
    pub fn from_payload(payload: &(dyn Any + Send)) -> Panic {
        let message: &str = if let Some(s) = payload.downcast_ref::<&'static str>() {
            s
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s
        } else {
            "Box<dyn Any>"
        };
        Panic {
            message: Arc::new(message.to_owned()),
        }
    }

    /// A panic with the given text (for tests of hand-written managers).
    #[must_use]
    pub fn new(message: &str) -> Panic {
        Panic {
            message: Arc::new(message.to_owned()),
        }
    }

    /// The panic's text.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Panic")
            .field(&self.message.as_str())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_is_send_sync_static_clone() {
        fn assert<T: Send + Sync + Clone + fmt::Debug + 'static>() {}
        assert::<Outcome>();
        assert!(std::mem::size_of::<Outcome>() <= 16);
    }

    #[test]
    fn failure_knows_its_type() {
        let err = std::io::Error::other("disk full");
        let failure = Failure::new(&err);
        assert!(failure.is::<std::io::Error>());
        assert!(!failure.is::<std::fmt::Error>());
        assert_eq!(failure.to_string(), "disk full");
    }

    #[test]
    fn panic_reads_str_and_string_payloads() {
        let a: Box<dyn Any + Send> = Box::new("boom");
        let b: Box<dyn Any + Send> = Box::new(String::from("bang"));
        let c: Box<dyn Any + Send> = Box::new(7_u8);
        assert_eq!(Panic::from_payload(&*a).message(), "boom");
        assert_eq!(Panic::from_payload(&*b).message(), "bang");
        assert_eq!(Panic::from_payload(&*c).message(), "Box<dyn Any>");
    }
}
