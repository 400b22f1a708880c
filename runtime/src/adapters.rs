//! Small managers from Python's `contextlib`.

use std::convert::Infallible;

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
