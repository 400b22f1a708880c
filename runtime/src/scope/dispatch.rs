//! Call-site dispatch for `with_scope!` (autoref specialization).
//!
//! These pick behaviour from the concrete types at the macro's call site,
//! where a trait bound that does not hold makes method lookup fall through to
//! the next, less specific impl (`NOTES.md` §3). Each receiver is written with
//! one more `&` than the most specific impl's self type needs.

use std::convert::Infallible;
use std::fmt::{Debug, Display};
use std::future::Future;
use std::marker::PhantomData;

use super::guard::{Detachable, InPlace};
use crate::{AsyncContextManager, Failure, Outcome, OwnedManager};

/// Checks that a `with_scope!` manager is one, before anything else uses
/// it. Call as `Check(manager).__acm_manager()`: a manager passes through
/// ([`CheckManager`], by value); anything else reaches the inherent method,
/// whose bound fails with the trait's own message, once, on the user's
/// expression, and which hands the rest of the expansion a stand-in
/// manager (`NotAManager`), so that no follow-on error repeats it.
#[derive(Debug)]
pub struct Check<M>(pub M);

/// A manager: itself.
pub trait CheckManager {
    /// The manager.
    type Manager;
    /// The manager.
    fn __acm_manager(self) -> Self::Manager;
}
impl<M: AsyncContextManager> CheckManager for Check<M> {
    type Manager = M;
    #[inline(always)]
    #[allow(clippy::inline_always, reason = "an identity")]
    fn __acm_manager(self) -> M {
        self.0
    }
}

impl<M> Check<M> {
    /// Not a manager: the error, and a stand-in.
    #[allow(clippy::unused_self, reason = "never called: its bound fails")]
    pub fn __acm_manager(&self) -> NotAManager
    where
        M: AsyncContextManager,
    {
        NotAManager(())
    }
}

/// What a scope enters in place of a value that is not a manager, after
/// the compile error that says so. Only `Check`'s inherent fallback makes
/// one; method lookup reaches it only for non-managers, where its bound
/// fails. (Called by path on a manager, it gives this inert manager, which
/// enters and exits doing nothing.)
#[derive(Debug)]
pub struct NotAManager(());

impl AsyncContextManager for NotAManager {
    type Value<'a> = NotAManager;
    type Error = Infallible;

    async fn enter(&mut self) -> Result<NotAManager, Infallible> {
        Ok(NotAManager(()))
    }

    async fn exit(&mut self, _outcome: Outcome) -> Result<(), Infallible> {
        Ok(())
    }
}

/// Describes a manager's error: `Display`, else `Debug`, else its type name.
/// Call as `(&&&Describe(&error)).__acm_failure()`.
#[derive(Debug)]
pub struct Describe<'a, E: ?Sized>(pub &'a E);

impl<E: ?Sized> Clone for Describe<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E: ?Sized> Copy for Describe<'_, E> {}

/// `E: Display`.
pub trait DescribeDisplay {
    /// The failure record.
    fn __acm_failure(&self) -> Failure;
}
impl<E: Display + ?Sized> DescribeDisplay for &&Describe<'_, E> {
    fn __acm_failure(&self) -> Failure {
        Failure::new(self.0)
    }
}

/// `E: Debug`.
pub trait DescribeDebug {
    /// The failure record.
    fn __acm_failure(&self) -> Failure;
}
impl<E: Debug + ?Sized> DescribeDebug for &Describe<'_, E> {
    fn __acm_failure(&self) -> Failure {
        Failure::from_debug(self.0)
    }
}

/// Any `E`.
pub trait DescribeOpaque {
    /// The failure record.
    fn __acm_failure(&self) -> Failure;
}
impl<E: ?Sized> DescribeOpaque for Describe<'_, E> {
    fn __acm_failure(&self) -> Failure {
        Failure::opaque(self.0)
    }
}

/// Reads a block's value as an [`Outcome`]: `Err` is a failure, anything
/// else (including non-`Result` values) a success.
/// Call as `(&&&&Classify(&value)).__acm_outcome()`.
#[derive(Debug)]
pub struct Classify<'a, T>(pub &'a T);

impl<T> Clone for Classify<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Classify<'_, T> {}

/// `Result<T, E: Display>`.
///
/// This tier is tried first, so it is the one method lookup picks while the
/// error type is still unknown at the block (settled only by a `?` or a
/// type after the scope). If that type then has no `Display`, the error is
/// reported here, on the user's block, with what to write instead: the impl
/// is hidden from the message (`do_not_recommend`), which would otherwise
/// say only "`E` doesn't implement `Display`" and point into this file.
#[diagnostic::on_unimplemented(
    message = "the error type of this `with_scope!` block is settled only after the block, and `{E}` has no `Display`",
    label = "the scope must know its block's error type here, at the block",
    note = "`with_scope!` describes a failing block to its managers' exits by the error's `Display`, else its `Debug`; it chooses while checking the block, before a `?` or a type after the scope settles the error type",
    note = "state the error type where the block ends, `Ok::<_, {E}>(..)`, or on the scope's `let`, `let r: Result<_, {E}> = with_scope!(..);`"
)]
pub trait ClassifyDisplay<E> {
    /// The outcome.
    fn __acm_outcome(&self) -> Outcome;
}
#[diagnostic::do_not_recommend]
impl<T, E: Display> ClassifyDisplay<E> for &&&Classify<'_, Result<T, E>> {
    #[inline]
    fn __acm_outcome(&self) -> Outcome {
        match self.0 {
            Ok(_) => Outcome::Success,
            Err(e) => Outcome::Failed(Failure::new(e)),
        }
    }
}

/// `Result<T, E: Debug>`.
pub trait ClassifyDebug {
    /// The outcome.
    fn __acm_outcome(&self) -> Outcome;
}
impl<T, E: Debug> ClassifyDebug for &&Classify<'_, Result<T, E>> {
    #[inline]
    fn __acm_outcome(&self) -> Outcome {
        match self.0 {
            Ok(_) => Outcome::Success,
            Err(e) => Outcome::Failed(Failure::from_debug(e)),
        }
    }
}

/// `Result<T, E>`.
pub trait ClassifyOpaque {
    /// The outcome.
    fn __acm_outcome(&self) -> Outcome;
}
impl<T, E> ClassifyOpaque for &Classify<'_, Result<T, E>> {
    #[inline]
    fn __acm_outcome(&self) -> Outcome {
        match self.0 {
            Ok(_) => Outcome::Success,
            Err(e) => Outcome::Failed(Failure::opaque(e)),
        }
    }
}

/// Anything that is not a `Result`.
pub trait ClassifyOther {
    /// The outcome.
    fn __acm_outcome(&self) -> Outcome;
}
impl<T> ClassifyOther for Classify<'_, T> {
    #[inline]
    fn __acm_outcome(&self) -> Outcome {
        Outcome::Success
    }
}

/// Turns a manager's error into the scope's value: any type for
/// `Infallible` (the error cannot exist), else `Err(F::from(e))`.
/// Call as `Raise::new(error).__acm_raise(|e| From::from(e))`: the
/// conversion is written at the call site, so that a block whose error type
/// cannot be inferred (one that only panics) is reported there, on the
/// user's manager, rather than at a bound in this module. The tiers that
/// convert nothing take it as an identity, which it then is.
#[derive(Debug)]
pub struct Raise<E>(Option<E>);

impl<E> Raise<E> {
    /// Wraps the error.
    #[inline]
    pub fn new(error: E) -> Self {
        Raise(Some(error))
    }
}

/// `Infallible`: no constraint on the block's type.
pub trait RaiseNever {
    /// Unreachable: there is no `Infallible` value.
    fn __acm_raise<R>(self, convert: impl FnOnce(Infallible) -> Infallible) -> R;
}
impl RaiseNever for Raise<Infallible> {
    #[inline]
    fn __acm_raise<R>(self, _: impl FnOnce(Infallible) -> Infallible) -> R {
        match self.0 {
            Some(never) => match never {},
            None => unreachable!(),
        }
    }
}

/// [`MovedOn`](crate::MovedOn): a `move_on_after` cut; the block is an
/// `Option` and the scope evaluates to `None`.
pub trait RaiseNone {
    /// `None`.
    fn __acm_raise<T>(self, convert: impl FnOnce(crate::MovedOn) -> crate::MovedOn) -> Option<T>;
}
impl RaiseNone for Raise<crate::MovedOn> {
    #[inline]
    fn __acm_raise<T>(self, _: impl FnOnce(crate::MovedOn) -> crate::MovedOn) -> Option<T> {
        None
    }
}

/// Any other error: the block must be a `Result` whose error absorbs it.
pub trait RaiseFrom<E> {
    /// `Err(convert(error))`.
    fn __acm_raise<T, F>(self, convert: impl FnOnce(E) -> F) -> Result<T, F>;
}
impl<E> RaiseFrom<E> for &mut Raise<E> {
    #[inline]
    fn __acm_raise<T, F>(self, convert: impl FnOnce(E) -> F) -> Result<T, F> {
        Err(convert(
            self.0.take().expect("async-contextlib: error raised twice"),
        ))
    }
}

/// Chooses how a cancelled guard finishes its manager's exit.
/// Call as `(&&Probe::new(&manager, exit_task)).__acm_detach()`.
pub struct Probe<M, G>(G, PhantomData<fn(M)>);

impl<M, G> Debug for Probe<M, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

impl<M: AsyncContextManager, G> Probe<M, G> {
    /// `exit_task` is `crate::scope::exit_task`, instantiated for `M`.
    #[inline]
    pub fn new<F>(_manager: &M, exit_task: G) -> Self
    where
        G: Fn(M, Outcome) -> F,
    {
        Probe(exit_task, PhantomData)
    }
}

/// An owned manager whose exit future is `Send`: detach it.
pub trait PickDetach<G> {
    /// The strategy.
    fn __acm_detach(&self) -> Detachable<G>;
}
impl<M, G, F> PickDetach<G> for &Probe<M, G>
where
    M: OwnedManager,
    G: Fn(M, Outcome) -> F + Copy,
    F: Future<Output = Result<(), M::Error>> + Send + 'static,
{
    #[inline]
    fn __acm_detach(&self) -> Detachable<G> {
        Detachable(self.0)
    }
}

/// Anything else: finish in place.
pub trait PickInPlace {
    /// The strategy.
    fn __acm_detach(&self) -> InPlace;
}
impl<M, G> PickInPlace for Probe<M, G> {
    #[inline]
    fn __acm_detach(&self) -> InPlace {
        InPlace
    }
}
