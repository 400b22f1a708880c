//! Locks and semaphores as managers: Python's `async with lock:` and
//! `async with sem:` over tokio's `Mutex`, `RwLock` and `Semaphore`.
//!
//! Each manager takes the lock in `enter` and keeps the guard inside
//! itself; `exit` drops it. A manager that never reaches its exit (its
//! scope cancelled, its exit abandoned) still drops the guard with itself,
//! so the lock is released on every path.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use tokio::sync::{
    Mutex, MutexGuard, OwnedMutexGuard, OwnedSemaphorePermit, RwLock, RwLockReadGuard,
    RwLockWriteGuard, Semaphore, SemaphorePermit,
};

use crate::{AsyncContextManager, Outcome, OwnedManager, SendManager};

/// The manager impls of a lock manager that borrows its lock (`field`):
/// `enter` takes it with `acquire` and keeps the guard, lending `&T` or
/// (`[mut]`) `&mut T`; `exit`, or dropping the manager, releases it.
macro_rules! borrowed_lock_manager {
    ($ty:ident, $field:ident, $acquire:ident, [$($mut:tt)?], $name:literal) => {
        impl<'m, T: ?Sized> AsyncContextManager for $ty<'m, T> {
            type Value<'a>
                = &'a $($mut)? T
            where
                Self: 'a;
            type Error = Infallible;

            async fn enter(&mut self) -> Result<&$($mut)? T, Infallible> {
                let lock = self.$field;
                Ok(&$($mut)? **self.guard.insert(lock.$acquire().await))
            }

            async fn exit(&mut self, _outcome: Outcome) -> Result<(), Infallible> {
                self.guard = None;
                Ok(())
            }

            fn name(&self) -> &'static str {
                $name
            }
        }

        impl<T: ?Sized> SendManager for $ty<'_, T>
        where
            Self: Send,
        {
            async fn exit_owned(self, _outcome: Outcome) -> Result<(), Infallible> {
                drop(self);
                Ok(())
            }
        }
    };
}

/// Locks `mutex` for the scope and lends the block `&mut T` (Python's
/// `async with lock:`). Released when the scope ends, on every path.
///
/// ```
/// use async_contextlib::{locked, with_scope};
/// use tokio::sync::Mutex;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let counter = Mutex::new(0_u32);
/// with_scope!(locked(&counter) as n => { *n += 1 });
/// assert_eq!(*counter.try_lock().unwrap(), 1);
/// # }
/// ```
#[must_use]
pub fn locked<T: ?Sized>(mutex: &Mutex<T>) -> Locked<'_, T> {
    Locked { mutex, guard: None }
}

/// The manager returned by [`locked`].
#[derive(Debug)]
pub struct Locked<'m, T: ?Sized> {
    mutex: &'m Mutex<T>,
    guard: Option<MutexGuard<'m, T>>,
}

borrowed_lock_manager!(Locked, mutex, lock, [mut], "async_contextlib::locked");

/// Locks a shared `Arc<Mutex<T>>` for the scope and lends the block
/// `&mut T`, like [`locked`]; the manager owns the `Arc`, so it is an
/// [`OwnedManager`]: on cancellation its exit is detached rather than
/// finished in place.
///
/// ```
/// use std::sync::Arc;
/// use async_contextlib::{locked_owned, with_scope};
/// use tokio::sync::Mutex;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let shared = Arc::new(Mutex::new(Vec::new()));
/// let task = tokio::spawn({
///     let shared = shared.clone();
///     async move { with_scope!(locked_owned(shared) as v => { v.push(1) }) }
/// });
/// task.await.unwrap();
/// assert_eq!(*shared.try_lock().unwrap(), [1]);
/// # }
/// ```
#[must_use]
pub fn locked_owned<T: ?Sized>(mutex: Arc<Mutex<T>>) -> LockedOwned<T> {
    LockedOwned {
        mutex: Some(mutex),
        guard: None,
    }
}

/// The manager returned by [`locked_owned`].
#[derive(Debug)]
pub struct LockedOwned<T: ?Sized> {
    // Moved into the guard on enter.
    mutex: Option<Arc<Mutex<T>>>,
    guard: Option<OwnedMutexGuard<T>>,
}

impl<T: ?Sized> AsyncContextManager for LockedOwned<T> {
    type Value<'a>
        = &'a mut T
    where
        Self: 'a;
    type Error = Infallible;

    async fn enter(&mut self) -> Result<&mut T, Infallible> {
        let mutex = self
            .mutex
            .take()
            .expect("async-contextlib: locked_owned entered twice");
        Ok(&mut **self.guard.insert(mutex.lock_owned().await))
    }

    async fn exit(&mut self, _outcome: Outcome) -> Result<(), Infallible> {
        self.guard = None;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "async_contextlib::locked_owned"
    }
}

impl<T: ?Sized + 'static> OwnedManager for LockedOwned<T> {}

impl<T: ?Sized + 'static> SendManager for LockedOwned<T>
where
    Self: Send,
{
    async fn exit_owned(self, _outcome: Outcome) -> Result<(), Infallible> {
        drop(self);
        Ok(())
    }
    crate::managers::stack::detach_static!();
}

/// Takes a shared (read) lock on `rw` for the scope and lends the block
/// `&T`; other readers may hold it at the same time. Python has no
/// reader–writer lock in `asyncio`; this is the usual `async with
/// rw.reader:` of third-party ones.
///
/// ```
/// use async_contextlib::{read_locked, with_scope};
/// use tokio::sync::RwLock;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let config = RwLock::new(String::from("v1"));
/// let len = with_scope!(read_locked(&config) as a, read_locked(&config) as b => {
///     a.len() + b.len()
/// });
/// assert_eq!(len, 4);
/// # }
/// ```
#[must_use]
pub fn read_locked<T: ?Sized>(rw: &RwLock<T>) -> ReadLocked<'_, T> {
    ReadLocked { rw, guard: None }
}

/// The manager returned by [`read_locked`].
#[derive(Debug)]
pub struct ReadLocked<'m, T: ?Sized> {
    rw: &'m RwLock<T>,
    guard: Option<RwLockReadGuard<'m, T>>,
}

borrowed_lock_manager!(ReadLocked, rw, read, [], "async_contextlib::read_locked");

/// Takes the exclusive (write) lock on `rw` for the scope and lends the
/// block `&mut T` (`async with rw.writer:`).
///
/// ```
/// use async_contextlib::{write_locked, with_scope};
/// use tokio::sync::RwLock;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let config = RwLock::new(String::from("v1"));
/// with_scope!(write_locked(&config) as c => { c.replace_range(.., "v2") });
/// assert_eq!(*config.try_read().unwrap(), "v2");
/// # }
/// ```
#[must_use]
pub fn write_locked<T: ?Sized>(rw: &RwLock<T>) -> WriteLocked<'_, T> {
    WriteLocked { rw, guard: None }
}

/// The manager returned by [`write_locked`].
#[derive(Debug)]
pub struct WriteLocked<'m, T: ?Sized> {
    rw: &'m RwLock<T>,
    guard: Option<RwLockWriteGuard<'m, T>>,
}

borrowed_lock_manager!(WriteLocked, rw, write, [mut], "async_contextlib::write_locked");

/// Acquires `permits` permits of `semaphore` for the scope (Python's
/// `async with sem:`, which takes one) and lends the block the number
/// acquired. Enter fails with [`SemaphoreClosed`] if the semaphore is
/// closed (before or while waiting); the block then does not run.
///
/// ```
/// use async_contextlib::{acquired, with_scope, SemaphoreClosed};
/// use tokio::sync::Semaphore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let sem = Semaphore::new(3);
/// let r: Result<u32, SemaphoreClosed> = with_scope!(acquired(&sem, 2) as n => {
///     assert_eq!(sem.available_permits(), 1);
///     Ok(n)
/// });
/// assert_eq!(r, Ok(2));
/// assert_eq!(sem.available_permits(), 3);
/// # }
/// ```
#[must_use]
pub fn acquired(semaphore: &Semaphore, permits: u32) -> Acquired<'_> {
    Acquired {
        semaphore,
        permits,
        permit: None,
    }
}

/// The manager returned by [`acquired`].
#[derive(Debug)]
pub struct Acquired<'s> {
    semaphore: &'s Semaphore,
    permits: u32,
    permit: Option<SemaphorePermit<'s>>,
}

impl<'s> AsyncContextManager for Acquired<'s> {
    type Value<'a>
        = u32
    where
        Self: 'a;
    type Error = SemaphoreClosed;

    async fn enter(&mut self) -> Result<u32, SemaphoreClosed> {
        let semaphore: &'s Semaphore = self.semaphore;
        let permit = semaphore
            .acquire_many(self.permits)
            .await
            .map_err(|_| SemaphoreClosed)?;
        self.permit = Some(permit);
        Ok(self.permits)
    }

    async fn exit(&mut self, _outcome: Outcome) -> Result<(), SemaphoreClosed> {
        self.permit = None;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "async_contextlib::acquired"
    }
}

impl SendManager for Acquired<'_> {
    async fn exit_owned(self, _outcome: Outcome) -> Result<(), SemaphoreClosed> {
        drop(self);
        Ok(())
    }
}

/// Acquires `permits` permits of a shared `Arc<Semaphore>` for the scope,
/// like [`acquired`]; the manager owns the `Arc`, so it is an
/// [`OwnedManager`].
///
/// ```
/// use std::sync::Arc;
/// use async_contextlib::{acquired_owned, with_scope, SemaphoreClosed};
/// use tokio::sync::Semaphore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let sem = Arc::new(Semaphore::new(1));
/// sem.close();
/// let r: Result<(), SemaphoreClosed> =
///     with_scope!(acquired_owned(sem.clone(), 1) => { unreachable!() });
/// assert_eq!(r, Err(SemaphoreClosed));
/// # }
/// ```
#[must_use]
pub fn acquired_owned(semaphore: Arc<Semaphore>, permits: u32) -> AcquiredOwned {
    AcquiredOwned {
        semaphore: Some(semaphore),
        permits,
        permit: None,
    }
}

/// The manager returned by [`acquired_owned`].
#[derive(Debug)]
pub struct AcquiredOwned {
    // Moved into the permit on enter.
    semaphore: Option<Arc<Semaphore>>,
    permits: u32,
    permit: Option<OwnedSemaphorePermit>,
}

impl AsyncContextManager for AcquiredOwned {
    type Value<'a> = u32;
    type Error = SemaphoreClosed;

    async fn enter(&mut self) -> Result<u32, SemaphoreClosed> {
        let semaphore = self
            .semaphore
            .take()
            .expect("async-contextlib: acquired_owned entered twice");
        let permit = semaphore
            .acquire_many_owned(self.permits)
            .await
            .map_err(|_| SemaphoreClosed)?;
        self.permit = Some(permit);
        Ok(self.permits)
    }

    async fn exit(&mut self, _outcome: Outcome) -> Result<(), SemaphoreClosed> {
        self.permit = None;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "async_contextlib::acquired_owned"
    }
}

impl OwnedManager for AcquiredOwned {}

impl SendManager for AcquiredOwned {
    async fn exit_owned(self, _outcome: Outcome) -> Result<(), SemaphoreClosed> {
        drop(self);
        Ok(())
    }
    crate::managers::stack::detach_static!();
}

/// The enter error of [`acquired`] and [`acquired_owned`]: the semaphore
/// was closed before the permits could be acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SemaphoreClosed;

impl fmt::Display for SemaphoreClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("semaphore closed: no permits can be acquired")
    }
}

impl std::error::Error for SemaphoreClosed {}

impl From<Infallible> for SemaphoreClosed {
    fn from(never: Infallible) -> SemaphoreClosed {
        match never {}
    }
}
