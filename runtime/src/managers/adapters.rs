//! Small managers from Python's `contextlib`.

use std::convert::Infallible;
use std::future::Future;

use crate::{AsyncContextManager, Outcome, OwnedManager};

/// A manager that hands `value` to the body and does nothing else
/// (Python's `contextlib.nullcontext`): for code that takes "some manager"
/// when there is nothing to manage.
///
/// ```
/// use async_contextlib::{nullcontext, with_scope};
/// # futures::executor::block_on(async {
/// let n = with_scope!(nullcontext(41) as n => { n + 1 });
/// assert_eq!(n, 42);
/// # });
/// ```
#[must_use]
pub fn nullcontext<T>(value: T) -> NullContext<T> {
    NullContext { value: Some(value) }
}

/// The manager returned by [`nullcontext`].
#[derive(Debug)]
pub struct NullContext<T> {
    value: Option<T>,
}

impl<T> AsyncContextManager for NullContext<T> {
    type Value<'a>
        = T
    where
        T: 'a;
    type Error = Infallible;

    async fn enter(&mut self) -> Result<T, Infallible> {
        Ok(self
            .value
            .take()
            .expect("async-contextlib: nullcontext entered twice; a manager is single-use"))
    }

    async fn exit(&mut self, _outcome: Outcome) -> Result<(), Infallible> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "async_contextlib::nullcontext"
    }
}

impl<T: 'static> OwnedManager for NullContext<T> {}

impl<T: Send> crate::SendManager for NullContext<T> {
    async fn exit_owned(mut self, outcome: Outcome) -> Result<(), Infallible> {
        self.exit(outcome).await
    }

    /// Entered, it holds nothing (the value went to the body) and its exit
    /// does nothing, whatever `T` borrows: an empty one of `()` stands in.
    fn __detach(
        self,
        name: &'static str,
        into_box: fn(Infallible) -> crate::BoxError,
    ) -> Result<crate::__private::DetachedEntry, Self> {
        if self.value.is_some() {
            return Err(self);
        }
        let empty = NullContext::<()> { value: None };
        Ok(crate::__private::detach_entry(empty, name, into_box))
    }
}

/// A value with an async close: what [`closing`] manages.
pub trait AsyncClose {
    /// What closing may fail with.
    type Error;
    /// Releases the value's resources.
    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>>;
}

/// Closes `value` when the scope ends, however it ends (Python's
/// `contextlib.aclosing`): the block borrows it as `&mut T`.
///
/// ```
/// use std::convert::Infallible;
/// use async_contextlib::{AsyncClose, closing, with_scope};
///
/// struct Conn { open: bool }
/// impl AsyncClose for Conn {
///     type Error = Infallible;
///     async fn close(&mut self) -> Result<(), Infallible> {
///         self.open = false;
///         Ok(())
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let was_open = with_scope!(closing(Conn { open: true }) as c => { c.open });
/// assert!(was_open);
/// # });
/// ```
#[must_use]
pub fn closing<T: AsyncClose>(value: T) -> Closing<T> {
    Closing { value }
}

/// The manager returned by [`closing`].
#[derive(Debug)]
pub struct Closing<T> {
    value: T,
}

impl<T> Closing<T> {
    /// The value, once the scope is over.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T: AsyncClose> AsyncContextManager for Closing<T> {
    type Value<'a>
        = &'a mut T
    where
        T: 'a;
    type Error = T::Error;

    async fn enter(&mut self) -> Result<&mut T, T::Error> {
        Ok(&mut self.value)
    }

    fn exit(&mut self, _outcome: Outcome) -> impl Future<Output = Result<(), T::Error>> {
        self.value.close()
    }

    fn name(&self) -> &'static str {
        "async_contextlib::closing"
    }
}

impl<T: AsyncClose + 'static> OwnedManager for Closing<T> {}
