//! `BoxManager`: a manager whose type can be written in one line, returned
//! from a trait method, stored in a struct or chosen at run time.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::{AsyncContextManager, Deadline, Failure, Outcome, OwnedManager, SendManager};

/// A boxed `Send` future borrowing for `'a`: what a [`BoxManager`]'s enter
/// and exit return once erased.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A type-erased manager that lends `&mut T` and fails with `E`, owning
/// what it manages ([`BoxManagerRef`] borrows). Made with
/// [`box_manager!`](crate::box_manager).
///
/// It is the short, nameable type of "a manager that lends `&mut Session`
/// and fails with `io::Error`": `BoxManager<Session, io::Error>`, in a
/// trait method's return type, a struct field or a `match` that picks a
/// manager at run time (dependency injection, the seeds' "protocol +
/// service" pattern). The unboxed spelling, `impl for<'x>
/// AsyncContextManager<Value<'x> = &'x mut Session, ..>`, is long and, for
/// a manager that borrows, rejected by today's compiler (a higher-ranked
/// bound over a lifetime-bounded associated type implies `'static`);
/// `BoxManager` states the lend once, in its own impl, and has no such
/// bound.
///
/// # Cost
///
/// Allocations per scope, counted in `tests/alloc.rs`: the boxed manager,
/// its enter future and its exit future (each boxed as `dyn Future +
/// Send`) for a [`BoxManagerRef`]; one more for a `BoxManager`, whose exit
/// the scope boxes, as for every owned manager, so that a cut exit can be
/// handed to the exit driver. Plus one dynamic call per enter, exit,
/// deadline and name. A manager used directly allocates nothing; box only
/// where the type must be named or chosen at run time.
///
/// # Guarantees
///
/// The same as the manager inside: it is entered and exited exactly once
/// per scope, its deadline, cancellation token and name are forwarded, and a `BoxManager` is an
/// [`OwnedManager`] whose exit, when the scope is dropped mid-body, runs on
/// the exit driver.
///
/// ```
/// use std::io;
/// use async_contextlib::{box_manager, with_scope, BoxManagerRef};
/// # use async_contextlib::{AsyncContextManager, Outcome};
///
/// struct Session { queries: u32 }
///
/// /// What a service is given: any manager lending a session.
/// trait Database {
///     fn session(&mut self) -> BoxManagerRef<'_, Session, io::Error>;
/// }
///
/// struct Fake(Session);
///
/// # struct Lend<'a>(&'a mut Session);
/// # impl AsyncContextManager for Lend<'_> {
/// #     type Value<'a> = &'a mut Session where Self: 'a;
/// #     type Error = io::Error;
/// #     async fn enter(&mut self) -> io::Result<&mut Session> { Ok(self.0) }
/// #     async fn exit(&mut self, _: Outcome) -> io::Result<()> { Ok(()) }
/// # }
/// impl Database for Fake {
///     fn session(&mut self) -> BoxManagerRef<'_, Session, io::Error> {
///         box_manager!(Lend(&mut self.0)) // a borrowing manager
///     }
/// }
///
/// async fn count(db: &mut dyn Database) -> io::Result<u32> {
///     with_scope!(db.session() as s => {
///         s.queries += 1;
///         Ok(s.queries)
///     })
/// }
///
/// # futures::executor::block_on(async {
/// let mut db = Fake(Session { queries: 0 });
/// assert_eq!(count(&mut db).await.unwrap(), 1);
/// assert_eq!(count(&mut db).await.unwrap(), 2);
/// # });
/// ```
pub struct BoxManager<T: ?Sized + 'static, E: 'static> {
    inner: Box<dyn Erased<T, E>>,
}

/// A [`BoxManager`] that borrows for `'m`: made by the same
/// [`box_manager!`](crate::box_manager) from a manager that borrows
/// (`Lend(&mut self.session)`), for a return type such as
/// `BoxManagerRef<'_, Session, io::Error>`.
///
/// Not an [`OwnedManager`]: dropped mid-body, its exit is finished in place
/// (multi-thread runtime) or abandoned and counted, as for any borrowing
/// manager. A separate type, not a lifetime of `BoxManager`, because which
/// of the two a scope does is chosen from the manager's type, and a choice
/// by lifetime would demand `'static` of every borrowing manager.
pub struct BoxManagerRef<'m, T: ?Sized, E> {
    inner: Box<dyn Erased<T, E> + 'm>,
}

/// Boxes a manager lending `&mut T` into a [`BoxManager`] (a manager that
/// owns what it manages) or a [`BoxManagerRef`] (one that borrows): the
/// type the context expects picks which.
///
/// A macro, not a function, because the manager's enter and exit futures
/// are boxed as `Send` where its concrete type is known: a generic function
/// cannot state that a manager's enter future is `Send`. A manager whose
/// enter or exit future is not `Send` is a compile error here.
#[macro_export]
macro_rules! box_manager {
    ($manager:expr $(,)?) => {
        $crate::__private::FromParts::from_parts(
            $manager,
            |m| ::std::boxed::Box::pin($crate::AsyncContextManager::enter(m)),
            |m, outcome| ::std::boxed::Box::pin($crate::AsyncContextManager::exit(m, outcome)),
        )
    };
}

/// Builds a boxed manager from a manager and the two calls that box its
/// futures; used by [`box_manager!`](crate::box_manager).
#[doc(hidden)]
pub trait FromParts<'m>: Sized {
    /// What the boxed manager lends `&mut` to.
    type Lent: ?Sized + 'm;
    /// Its error.
    type Error: 'm;

    /// Boxes `manager`; `enter` and `exit` box its own futures.
    fn from_parts<M, En, Ex>(manager: M, enter: En, exit: Ex) -> Self
    where
        M: AsyncContextManager<Error = Self::Error> + Send + 'm,
        En: for<'a> Fn(&'a mut M) -> BoxFuture<'a, Result<&'a mut Self::Lent, Self::Error>>
            + Send
            + 'm,
        Ex: for<'a> Fn(&'a mut M, Outcome) -> BoxFuture<'a, Result<(), Self::Error>> + Send + 'm;
}

fn erase<'m, M, En, Ex, T, E>(manager: M, enter: En, exit: Ex) -> Box<dyn Erased<T, E> + 'm>
where
    T: ?Sized + 'm,
    E: 'm,
    M: AsyncContextManager<Error = E> + Send + 'm,
    En: for<'a> Fn(&'a mut M) -> BoxFuture<'a, Result<&'a mut T, E>> + Send + 'm,
    Ex: for<'a> Fn(&'a mut M, Outcome) -> BoxFuture<'a, Result<(), E>> + Send + 'm,
{
    Box::new(Parts {
        manager,
        enter,
        exit,
    })
}

impl<T: ?Sized + 'static, E: 'static> FromParts<'static> for BoxManager<T, E> {
    type Lent = T;
    type Error = E;

    fn from_parts<M, En, Ex>(manager: M, enter: En, exit: Ex) -> Self
    where
        M: AsyncContextManager<Error = E> + Send + 'static,
        En: for<'a> Fn(&'a mut M) -> BoxFuture<'a, Result<&'a mut T, E>> + Send + 'static,
        Ex: for<'a> Fn(&'a mut M, Outcome) -> BoxFuture<'a, Result<(), E>> + Send + 'static,
    {
        BoxManager {
            inner: erase(manager, enter, exit),
        }
    }
}

impl<'m, T: ?Sized + 'm, E: 'm> FromParts<'m> for BoxManagerRef<'m, T, E> {
    type Lent = T;
    type Error = E;

    fn from_parts<M, En, Ex>(manager: M, enter: En, exit: Ex) -> Self
    where
        M: AsyncContextManager<Error = E> + Send + 'm,
        En: for<'a> Fn(&'a mut M) -> BoxFuture<'a, Result<&'a mut T, E>> + Send + 'm,
        Ex: for<'a> Fn(&'a mut M, Outcome) -> BoxFuture<'a, Result<(), E>> + Send + 'm,
    {
        BoxManagerRef {
            inner: erase(manager, enter, exit),
        }
    }
}

/// The erased calls. `Send` so that a `BoxManager` (and a scope over it)
/// can cross threads.
trait Erased<T: ?Sized, E>: Send {
    fn enter(&mut self) -> BoxFuture<'_, Result<&mut T, E>>;
    fn exit(&mut self, outcome: Outcome) -> BoxFuture<'_, Result<(), E>>;
    fn deadline(&mut self) -> Option<Deadline<E>>;
    fn cut_by(&mut self) -> Option<(tokio_util::sync::CancellationToken, E)>;
    fn name(&self) -> &'static str;
}

struct Parts<M, En, Ex> {
    manager: M,
    enter: En,
    exit: Ex,
}

impl<M, En, Ex, T: ?Sized, E> Erased<T, E> for Parts<M, En, Ex>
where
    M: AsyncContextManager<Error = E> + Send,
    En: for<'a> Fn(&'a mut M) -> BoxFuture<'a, Result<&'a mut T, E>> + Send,
    Ex: for<'a> Fn(&'a mut M, Outcome) -> BoxFuture<'a, Result<(), E>> + Send,
{
    fn enter(&mut self) -> BoxFuture<'_, Result<&mut T, E>> {
        (self.enter)(&mut self.manager)
    }

    fn exit(&mut self, outcome: Outcome) -> BoxFuture<'_, Result<(), E>> {
        (self.exit)(&mut self.manager, outcome)
    }

    fn deadline(&mut self) -> Option<Deadline<E>> {
        self.manager.deadline()
    }

    fn cut_by(&mut self) -> Option<(tokio_util::sync::CancellationToken, E)> {
        self.manager.__cut_by()
    }

    fn name(&self) -> &'static str {
        self.manager.name()
    }
}

/// Both boxed types forward every call to the erased manager.
macro_rules! forward {
    ($ty:ty, [$($params:tt)*] $(, $owned:ident)?) => {
        impl<$($params)*> AsyncContextManager for $ty {
            type Value<'a>
                = &'a mut T
            where
                Self: 'a;
            type Error = E;

            fn enter(&mut self) -> impl Future<Output = Result<&mut T, E>> {
                self.inner.enter()
            }

            fn exit(&mut self, outcome: Outcome) -> impl Future<Output = Result<(), E>> {
                self.inner.exit(outcome)
            }

            fn deadline(&mut self) -> Option<Deadline<E>> {
                self.inner.deadline()
            }

            fn __cut_by(&mut self) -> Option<(tokio_util::sync::CancellationToken, E)> {
                self.inner.cut_by()
            }

            fn name(&self) -> &'static str {
                self.inner.name()
            }
        }

        impl<$($params)*> SendManager for $ty {
            async fn exit_owned(mut self, outcome: Outcome) -> Result<(), E> {
                // The erased error has no `Display` here: named by its type
                // if it is reported.
                crate::managers::stack::exit_reported(&mut self, outcome, Failure::opaque).await
            }
            $(
                // `$owned`: the type is `'static`.
                crate::managers::stack::detach_static!($owned);
            )?
        }

        impl<$($params)*> fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("manager", &self.inner.name())
                    .finish_non_exhaustive()
            }
        }
    };
}

forward!(BoxManager<T, E>, [T: ?Sized + 'static, E: 'static], owned);
forward!(BoxManagerRef<'_, T, E>, [T: ?Sized, E]);

impl<T: ?Sized + 'static, E: 'static> OwnedManager for BoxManager<T, E> {}
