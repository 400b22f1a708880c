//! The trait: Python's `__aenter__` / `__aexit__`.

use std::future::Future;

use crate::Outcome;

/// An async context manager: Python's `__aenter__` / `__aexit__`.
///
/// `enter` produces the value the scope's body binds — an owned value, or a
/// borrow of something the manager owns ([`Value<'a>`](Self::Value) may
/// borrow `self`) — and `exit` receives the body's [`Outcome`] once that
/// value is gone. Either may fail with [`Self::Error`]; an infallible manager
/// uses [`std::convert::Infallible`], which puts no constraint on the body of
/// a `with_scope!`.
///
/// A manager is single-use, as in Python: `with_scope!` calls `enter` once
/// and, if it succeeded, `exit` exactly once — on success, error, panic and
/// cancellation.
///
/// Implement it with `async fn`:
///
/// ```
/// use std::convert::Infallible;
/// use async_contextlib::{AsyncContextManager, Outcome};
///
/// /// Lends a `&mut Vec` it owns; exit sees the body's pushes.
/// struct Buffer { items: Vec<u32>, flushed: usize }
///
/// impl AsyncContextManager for Buffer {
///     type Value<'a> = &'a mut Vec<u32>;
///     type Error = Infallible;
///
///     async fn enter(&mut self) -> Result<&mut Vec<u32>, Infallible> {
///         Ok(&mut self.items)
///     }
///
///     async fn exit(&mut self, outcome: Outcome) -> Result<(), Infallible> {
///         if outcome.is_success() {
///             self.flushed += self.items.len();
///         }
///         Ok(())
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let mut buffer = Buffer { items: vec![], flushed: 0 };
/// // Borrowed for the scope (`&mut M` is a manager too), seen again after.
/// async_contextlib::with_scope!(&mut buffer as items => { items.push(7) });
/// assert_eq!(buffer.flushed, 1);
/// # });
/// ```
///
/// Write impls generic over the type's lifetimes (`impl<'a> ... for
/// Pool<'a>`), not for one lifetime (`impl ... for W<&'static str>`): for the
/// latter rustc cannot prove a scope's future `Send`
/// (rust-lang/rust#110338).
///
/// # Cancellation
///
/// When the future holding a scope is dropped mid-body, `exit` still runs
/// once, with [`Outcome::Cancelled`]. If the manager is `'static + Send` and
/// says so by implementing [`OwnedManager`], the exit is handed to the exit
/// driver and runs on the runtime after the drop; otherwise it is finished in
/// place before the drop returns (multi-thread tokio runtime), or abandoned,
/// reported and counted where that is impossible.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an async context manager",
    label = "expected an async context manager here",
    note = "`with_scope!` enters values implementing `AsyncContextManager`: call an `#[async_context_manager]` fn, or implement the trait for your type"
)]
pub trait AsyncContextManager {
    /// What the body binds: an owned value, or a borrow of the manager.
    type Value<'a>
    where
        Self: 'a;

    /// The error `enter` and `exit` may fail with (`Infallible` if neither can).
    type Error;

    /// Python's `__aenter__`: acquire the resource and produce the body's value.
    ///
    /// An error here skips the body and the exit.
    fn enter(&mut self) -> impl Future<Output = Result<Self::Value<'_>, Self::Error>>;

    /// Python's `__aexit__`: release the resource, knowing how the body ended.
    ///
    /// Called at most once, and only after a successful `enter`, once the
    /// value it produced is dropped. An error here is returned by the scope
    /// if the body succeeded, else reported and counted.
    fn exit(&mut self, outcome: Outcome) -> impl Future<Output = Result<(), Self::Error>>;

    /// Bounds the body this manager guards (Python's `asyncio.timeout`).
    ///
    /// Called once, just before `enter`. Ordinary managers leave the default
    /// (`None`). A manager returning a [`Deadline`] has everything entered
    /// after it, and the body, cut at that instant: the inner managers exit
    /// with [`Outcome::Cancelled`], this manager exits with `Cancelled` too,
    /// and the scope fails with the deadline's error.
    fn deadline(&mut self) -> Option<Deadline<Self::Error>> {
        None
    }

    /// The name used in reports and `tracing` events.
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    /// Like [`deadline`](Self::deadline), with a cancellation token for a
    /// timer: everything entered after this manager, and the body, is cut
    /// when the token is cancelled, and the scope fails with the error.
    /// Called once, just before `enter`. Used by
    /// [`cancelled_by`](crate::cancelled_by).
    #[doc(hidden)]
    fn __cut_by(&mut self) -> Option<(tokio_util::sync::CancellationToken, Self::Error)> {
        None
    }

    /// Whether calling `exit` again after its future was dropped resumes the
    /// first exit instead of starting a second one. Only generated managers,
    /// whose exit state lives in their own allocation, say yes.
    #[doc(hidden)]
    const __RESUMABLE_EXIT: bool = false;

    /// Whether dropping the manager itself finishes what it has entered
    /// when its scope is cancelled (an `ExitStack` does, entry by entry),
    /// so that the scope's guard only drops it.
    #[doc(hidden)]
    const __DROP_CANCELS: bool = false;

    /// Whether a cut by this manager's [`deadline`](Self::deadline) is
    /// absorbed (trio's `move_on_after`): the scope evaluates to what the
    /// deadline's error raises into (`None` for
    /// [`MovedOn`](crate::MovedOn)), and the managers entered before it see
    /// success.
    #[doc(hidden)]
    const __MOVES_ON: bool = false;

    /// Whether this manager's exit, dropped in flight by the exit driver's
    /// job for it (its runtime shutting down), goes on elsewhere and counts
    /// its own end, so that the job does not count it lost: `from_sync`'s
    /// blocking exit, which no shutdown can cut. Its exit future must be
    /// all that is left of the job's work when dropped.
    #[doc(hidden)]
    const __EXIT_COUNTS_ITSELF: bool = false;
}

/// A manager whose exit may outlive the scope: `'static`, owning everything
/// it uses.
///
/// When a scope is cancelled, the exits of owned managers whose exit future
/// is `Send` are handed to the exit driver and finish on the runtime after
/// the drop — on a current-thread runtime too. Managers generated by
/// `#[async_context_manager]` implement it when their signature borrows
/// nothing. A hand-written manager opts in with one line:
///
/// ```
/// # use std::convert::Infallible;
/// # use async_contextlib::{AsyncContextManager, Outcome, OwnedManager};
/// struct Lease { id: u64 }
/// # impl AsyncContextManager for Lease {
/// #     type Value<'a> = u64;
/// #     type Error = Infallible;
/// #     async fn enter(&mut self) -> Result<u64, Infallible> { Ok(self.id) }
/// #     async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> { Ok(()) }
/// # }
/// impl OwnedManager for Lease {}
/// # let _ = Lease { id: 1 };
/// ```
///
/// A manager that is not `OwnedManager` (or whose exit future is not `Send`)
/// is finished in place when cancelled: before the drop returns on a
/// multi-thread tokio runtime, or abandoned, reported and counted where that
/// is impossible.
pub trait OwnedManager: AsyncContextManager + 'static {}

/// A manager whose exit is a `Send` future: what an [`ExitStack`] takes, so
/// that a task holding the stack can be spawned (stable Rust cannot state
/// "this manager's exit future is `Send`" for a generic manager; this trait
/// states it once, per type).
///
/// Generated managers implement it (when their future is `Send`), as do
/// the library's own. For a hand-written manager whose exit is `Send`, it
/// is one line, [`send_manager!`](crate::send_manager), or by hand:
///
/// ```
/// # use std::convert::Infallible;
/// # use async_contextlib::{AsyncContextManager, Outcome, SendManager};
/// struct Lease { id: u64 }
/// # impl AsyncContextManager for Lease {
/// #     type Value<'a> = u64;
/// #     type Error = Infallible;
/// #     async fn enter(&mut self) -> Result<u64, Infallible> { Ok(self.id) }
/// #     async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> { Ok(()) }
/// # }
/// impl SendManager for Lease {
///     async fn exit_owned(mut self, outcome: Outcome) -> Result<(), Infallible> {
///         self.exit(outcome).await
///     }
/// }
/// # let _ = Lease { id: 1 };
/// ```
///
/// Prefer the macro: the exit it writes drops the finished exit future
/// under a catch, so that an error the exit returned just before its
/// future panicked in `Drop` is reported rather than lost with the unwind,
/// which the `async` block above cannot do.
///
/// A manager whose exit is not `Send` goes in a
/// [`LocalExitStack`](crate::LocalExitStack) instead.
///
/// [`ExitStack`]: crate::ExitStack
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be entered into an `ExitStack`: its exit is not known to be `Send`",
    label = "needs `SendManager`",
    note = "implement `SendManager` for it (one line: `async_contextlib::send_manager!({Self});`), or use a `LocalExitStack` for managers whose exit is not `Send`"
)]
pub trait SendManager: AsyncContextManager + Send + Sized {
    /// The manager's exit, as a `Send` future that owns the manager.
    fn exit_owned(self, outcome: Outcome) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// An entered manager of a cancelled `ExitStack`, moved into an entry
    /// that the exit driver runs after the drop: `Ok` only for an owned
    /// manager (`'static`), whose impl proves it (`send_manager!` for an
    /// [`OwnedManager`], generated managers that borrow nothing, the
    /// library's own). The default gives the manager back, to be finished
    /// in place.
    #[doc(hidden)]
    fn __detach(
        self,
        name: &'static str,
        into_box: fn(Self::Error) -> crate::BoxError,
    ) -> Result<crate::__private::DetachedEntry, Self> {
        let _ = (name, into_box);
        Err(self)
    }
}

/// Implements [`SendManager`] for a hand-written manager type whose exit
/// future is `Send` (a compile error says so if it is not):
/// `send_manager!(Lease);`. For a generic type, write the impl by hand (see
/// [`SendManager`]).
#[macro_export]
macro_rules! send_manager {
    ($($ty:ty),+ $(,)?) => {
        $(
            impl $crate::SendManager for $ty {
                fn exit_owned(
                    mut self,
                    outcome: $crate::Outcome,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<(), <Self as $crate::AsyncContextManager>::Error>,
                > + ::core::marker::Send {
                    async move {
                        $crate::__private::exit_reported(&mut self, outcome, |error| {
                            #[allow(unused_imports)]
                            use $crate::__private::{
                                DescribeDebug as _, DescribeDisplay as _, DescribeOpaque as _,
                            };
                            (&&&$crate::__private::Describe(error)).__acm_failure()
                        })
                        .await
                    }
                }

                fn __detach(
                    self,
                    name: &'static str,
                    into_box: fn(<Self as $crate::AsyncContextManager>::Error) -> $crate::BoxError,
                ) -> ::core::result::Result<$crate::__private::DetachedEntry, Self> {
                    #[allow(unused_imports)]
                    use $crate::__private::{DetachBorrowing as _, DetachOwned as _};
                    (&&$crate::__private::OwnedProbe::<Self>::new()).__acm_detach(self, name, into_box)
                }
            }
        )+
    };
}

/// When a manager's body must end, and the error the scope then fails with.
/// See [`AsyncContextManager::deadline`].
#[derive(Debug)]
pub struct Deadline<E> {
    /// The instant the body is cut.
    pub at: tokio::time::Instant,
    /// What the scope fails with when the body is cut.
    pub error: E,
}

/// A manager borrowed for one scope: `with_scope!(&mut pool => ...)` enters
/// and exits `pool` and leaves it with the caller afterwards.
impl<M: AsyncContextManager + ?Sized> AsyncContextManager for &mut M {
    type Value<'a>
        = M::Value<'a>
    where
        Self: 'a;
    type Error = M::Error;

    fn enter(&mut self) -> impl Future<Output = Result<Self::Value<'_>, Self::Error>> {
        (**self).enter()
    }

    fn exit(&mut self, outcome: Outcome) -> impl Future<Output = Result<(), Self::Error>> {
        (**self).exit(outcome)
    }

    fn deadline(&mut self) -> Option<Deadline<Self::Error>> {
        (**self).deadline()
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn __cut_by(&mut self) -> Option<(tokio_util::sync::CancellationToken, Self::Error)> {
        (**self).__cut_by()
    }

    const __RESUMABLE_EXIT: bool = M::__RESUMABLE_EXIT;
    const __MOVES_ON: bool = M::__MOVES_ON;
    // Not `__DROP_CANCELS`: dropping the borrow drops nothing, so a
    // borrowed stack is unwound by its exit, in place.
}
