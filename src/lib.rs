//! Python's `async with`, `@asynccontextmanager` and `AsyncExitStack`, native
//! to Rust — with the exit run **exactly once on every path**: success,
//! error, panic and cancellation (the future dropped mid-body).
//!
//! ```
//! use async_contextlib::{async_context_manager, with_scope, yield_, Outcome};
//! # #[derive(Default)] struct Db; #[derive(Debug)] struct Tx { rows: Vec<String> }
//! # #[derive(Debug)] struct DbError;
//! # impl Db { async fn begin(&self) -> Result<Tx, DbError> { Ok(Tx { rows: vec![] }) } }
//! # impl Tx {
//! #     async fn insert(&mut self, r: &str) -> Result<(), DbError> { self.rows.push(r.into()); Ok(()) }
//! #     async fn commit(self) -> Result<(), DbError> { Ok(()) }
//! #     async fn rollback(self) -> Result<(), DbError> { Ok(()) }
//! # }
//!
//! /// `BEGIN` on enter; `COMMIT` if the block succeeded, else `ROLLBACK`.
//! #[async_context_manager]
//! async fn transaction(db: &Db) -> Result<&mut Tx, DbError> {
//!     let mut tx = db.begin().await?;        // enter; `?` here fails the enter
//!     match yield_!(&mut tx) {               // lend `&mut Tx` to the block
//!         Outcome::Success => tx.commit().await?,
//!         _ => tx.rollback().await?,         // failed, panicked or cancelled
//!     }
//! }
//!
//! # futures::executor::block_on(async {
//! let db = Db::default();
//! let rows = with_scope!(transaction(&db) as tx => {
//!     tx.insert("alice").await?;
//!     Ok::<_, DbError>(tx.rows.len())
//! })?;
//! assert_eq!(rows, 1);
//! # Ok::<(), DbError>(()) }).unwrap();
//! ```
//!
//! # What it gives you
//!
//! * [`#[async_context_manager]`](macro@async_context_manager): a single-`yield_!`
//!   `async fn` becomes a manager. The compiler rejects a second `yield_!`, a
//!   `yield_!` in a loop, closure or nested `async` block — mistakes Python
//!   finds at run time. The fn can lend `&mut` to one of its locals to the
//!   block and see it again afterwards.
//! * [`with_scope!`]: Python's `async with`, for any number of managers,
//!   entered left to right and exited right to left.
//! * [`AsyncContextManager`]: the trait, for hand-written managers (pools,
//!   locks, sessions); generated managers implement it too.
//! * Cancellation: when the future holding a scope is dropped (by
//!   `tokio::time::timeout`, `select!`, `JoinHandle::abort`, or a plain drop),
//!   every entered manager still exits, once, with [`Outcome::Cancelled`] —
//!   owned managers on the exit driver after the drop, borrowing ones before
//!   the drop returns. [`drain`] waits for them; [`stats`] counts them.
//! * [`ExitStack`] (Python's `AsyncExitStack`): managers and callbacks
//!   known only at run time; [`LocalExitStack`] for managers whose exit is
//!   not `Send`. [`#[scoped]`](macro@scoped) (Python's
//!   `AsyncContextDecorator`): an async fn's whole body in a scope.
//! * [`TaskGroup`] (Python 3.11's `asyncio.TaskGroup`, trio's nursery):
//!   tasks spawned in a scope, all finished — or all aborted when one
//!   fails, the block fails or the scope is cancelled — before it ends.
//! * [`timeout`] / [`deadline`] (Python's `asyncio.timeout`),
//!   [`move_on_after`] / [`move_on_at`] (trio's: cut without an error, `None`),
//!   [`cancelled_by`] (cut when a `CancellationToken` is cancelled),
//!   [`enter_timeout`], [`shield`], [`nullcontext`], [`closing`] (Python's
//!   `aclosing`), [`from_sync`] (blocking enter/exit off the async threads),
//!   and [`testing::Recorder`], a manager double for your own tests.
//! * Locks and semaphores (Python's `async with lock:` / `async with
//!   sem:`): [`locked`], [`read_locked`], [`write_locked`] and [`acquired`]
//!   over tokio's `Mutex`, `RwLock` and `Semaphore` ([`locked_owned`] and
//!   [`acquired_owned`] take an `Arc`).
//!
//! # Coming from Python
//!
//! | Python | Here | What differs |
//! |---|---|---|
//! | `@contextlib.asynccontextmanager` | [`#[async_context_manager]`](macro@async_context_manager) with one [`yield_!`] | a second `yield_!`, or one in a loop or closure, is a compile error, not "generator didn't stop"; `yield_!(&mut local)` lends a borrow; the yield evaluates to the [`Outcome`] instead of re-raising inside the generator |
//! | `async with m as x:` | [`with_scope!`]`(m as x => { .. })` | an expression: evaluates to the block; `as` takes any pattern (`as (a, b)`); `?`/`return` leave the block, not the fn |
//! | `async with a as x, b(x) as y:` | `with_scope!(a as x, b(x) as y => ..)` | the same order; each exit exactly once, also when the task is cancelled |
//! | `AbstractAsyncContextManager` (`__aenter__`/`__aexit__`) | [`AsyncContextManager`] (`enter`/`exit(Outcome)`) | exit gets an [`Outcome`] (`Success`, `Failed`, `Panicked`, `Cancelled`), not `(type, value, traceback)`; see below on swallowing |
//! | `contextlib.AsyncContextDecorator` | [`#[scoped(m() as x)]`](macro@scoped) | — |
//! | `contextlib.AsyncExitStack` (`enter_async_context`, `push_async_exit`, `push_async_callback`, `pop_all`, `aclose`) | [`ExitStack`] (`enter`, `push_exit`, `push_callback`, `pop_all`, `close`); [`LocalExitStack`] for `!Send` exits | a callback's exit cannot suppress; a stack dropped unclosed still exits everything, innermost first |
//! | `contextlib.aclosing(thing)` | [`closing`]`(thing)` with [`AsyncClose`] | — |
//! | `contextlib.nullcontext(v)` | [`nullcontext`]`(v)` | — |
//! | `contextlib.suppress(E)` | none: match on the scope's `Result` | an exit cannot swallow an error (below) |
//! | `asyncio.timeout(d)` / `timeout_at(t)` | [`timeout`]`(d)` / [`deadline`]`(t)` as the first manager | the scope fails with [`Elapsed`], converted into the block's error; inner managers exit with `Cancelled` |
//! | `asyncio.wait_for(aw, d)` | `tokio::time::timeout(d, fut)`; [`enter_timeout`] for a slow acquisition | dropping the future is the cancellation; every scope inside it still exits |
//! | `asyncio.shield(aw)` | [`shield`]`(fut)` (a `'static + Send` future) | dropped, it is finished by the exit driver; [`drain`] waits for it |
//! | `asyncio.TaskGroup` / trio's nursery | [`TaskGroup`]`::new() as tg` then `tg.spawn(..)` | tasks are `'static + Send` (tokio's `JoinSet`); the first failure aborts the rest and fails the scope with a [`TaskError`] (a panic resumes) — the later ones are reported and counted, where Python gathers an `ExceptionGroup`; a failing task does not cut the block (race `tg.aborted()` to stop early) |
//! | `async with lock:` / `async with sem:` (`asyncio.Lock`, `Semaphore`) | [`locked`]`(&mutex) as guard_target`, [`read_locked`], [`write_locked`], [`acquired`]`(&sem, n)` (`_owned` forms over an `Arc`) | the block gets `&mut T` (or `&T`), not the lock; released on every path, also into an [`ExitStack`] for a run-time set of locks |
//! | trio `move_on_after(d)` / `move_on_at(t)` (anyio's too) | [`move_on_after`]`(d)` / [`move_on_at`]`(t)` | the block evaluates to an `Option`; cut, the scope is `None`; the other managers of that `with_scope!` must be infallible (fallible ones go in a nested scope) |
//! | trio `CancelScope` / anyio's, cancelled from elsewhere | [`cancelled_by`]`(token)` over a `tokio_util` `CancellationToken` | the scope fails with [`TokenCancelled`] instead of moving on, so a shutdown reaches the caller |
//! | trio `CancelScope(shield=True)` over a block | [`shield`] for a `'static` future only | a borrowed block cannot go on once its caller's frame is gone; see [`shield`] |
//! | `task.cancel()` | `JoinHandle::abort()`, or dropping the future | no `CancelledError` to catch; the exits see [`Outcome::Cancelled`] |
//! | trio `fail_after` / anyio `fail_after` | [`timeout`] | — |
//! | a generator left suspended (`ag_running`) | [`diagnostics::scopes`], [`diagnostics::set_held_limit`] | opt-in; a snapshot and a warning, not a `ResourceWarning` at GC |
//! | `loop.slow_callback_duration` | [`diagnostics::set_blocking_limit`], [`set_slow_exit_limit`] | per enter/exit poll, naming the manager |
//! | a `Protocol` returning a context manager (dependency injection) | a trait method returning [`BoxManager`]`<T, E>` ([`box_manager!`]) | three or four allocations per scope (the box, the enter and exit futures; see its docs) |
//! | `unittest.mock.AsyncMock` as a manager | [`testing::Recorder`] (`manager()`, `lending(fake)`, `fail_exit()`, `panic_enter()`, ...) | records the [`Outcome`] each exit saw |
//!
//! # What the attribute generates
//!
//! ```text
//! #[async_context_manager]
//! async fn transaction(db: &Db) -> Result<&mut Tx, DbError> { BODY }
//! ```
//! becomes, in outline,
//! ```text
//! fn transaction(db: &Db)
//!     -> Generator<impl Future<Output = Result<(), DbError>>, LendMut<Tx>, Borrowing>
//! {
//!     let make = move |co| async move {
//!         let db = db;
//!         let () = { BODY with `yield_!(x)` as `co.lend_mut(x).await` };
//!         Ok(())
//!     };
//!     // The only `unsafe` in the expansion; the body is outside it.
//!     unsafe { Generator::new("crate::transaction", make) }
//! }
//! ```
//! [`Generator`](generated::Generator) keeps the fn's future in one heap
//! allocation; `enter` polls it until it reaches the yield, the block runs
//! while it stays suspended, and `exit` resumes it with the block's
//! [`Outcome`]. A signature that borrows nothing (no reference or
//! non-`'static` lifetime, generic parameters bounded by `'static`) yields
//! an [`OwnedManager`], whose exit can outlive a dropped scope.
//!
//! # Exits cannot swallow failures
//!
//! Python's `__aexit__` may return `True` to swallow the exception. Rust
//! has no value to put in place of a block that failed — the scope
//! evaluates to the block's `Result<T, E>`, and a swallowed error would need
//! a `T` that nobody produced — and Rust keeps error handling visible at the
//! call site, so an exit sees the [`Outcome`] but cannot turn it into
//! success: the caller matches on the error the scope returns. A panic
//! resumes after every exit ran; `catch_unwind` is the explicit way to stop
//! one. An exit may fail itself; if the block already
//! failed, the block's error is returned and the exit's error is reported
//! (an error-level `tracing` event naming the manager) and counted in
//! [`stats`]`().exit_failures` — never silently lost.
//!
//! # Compile errors, and what they mean
//!
//! Most mistakes are reported in the library's own words, on your tokens
//! (a second `yield_!`, a value that is not a manager, an `Ok(())` at the
//! end of a manager fn, an error type settled too late). A few still reach
//! you in rustc's words, because rustc does not let a library reword them:
//!
//! | rustc says | the mistake | write instead |
//! |---|---|---|
//! | "`Generator<impl Future<..>, ..>` is not a future", on `resource().await`, with a suggestion to add `async` before the attribute | a manager fn's value is a manager, entered by a scope; it is not awaited | `with_scope!(resource() as r => { .. })` (ignore the `async` suggestion: the fn is already `async`) |
//! | "cannot borrow value as immutable because it is also borrowed as mutable" on the binding, "mutable borrow later used here" on a use after the scope | a value lent to the block (`&mut T`) is kept after the block, past the manager's exit | copy or clone what you need out of the block, or return an owned value from it |
//! | our "`M` cannot be entered into an `ExitStack`: its exit is not known to be `Send`", three times (on the manager, the call and its `.await`) | a hand-written manager was not declared `SendManager` | `async_contextlib::send_manager!(M);`, or a `LocalExitStack` (the three are one mistake: rustc checks the bound once for each place the returned future is used, and one error would need that future boxed) |
//! | "type annotations needed for `Result<_, _>`", "cannot satisfy `_: From<E>`" | the scope's type is not known: its block never produces a value (it only panics, or is `todo!()`) | give the `let` a type, `let r: Result<(), E> = with_scope!(..)` |
//!
//! # Minimum Rust version
//!
//! 1.85 (the crates are edition 2024). Generated managers also work from
//! edition-2021 crates.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![doc(test(no_crate_inject, attr(deny(warnings))))]
#![warn(clippy::pedantic)]

pub use async_contextlib_macros::{async_context_manager, scoped};
pub use async_contextlib_runtime::*;

/// Python's `async with`: enters managers, runs a block, exits them.
///
/// ```text
/// with_scope!(MANAGER [as PATTERN], ... => { BLOCK })
/// ```
///
/// `PATTERN` is any irrefutable pattern, as after `let`: `name`, `mut name`,
/// `_`, `(conn, tx)`, `Pair { a, mut b }`; without `as` the value is held,
/// unnamed, until the block ends. Managers are entered left to right — a
/// later one may use an earlier binding — and exited right to left, each
/// exactly once. The macro is used inside async code: it awaits, and
/// evaluates to the block's value.
///
/// * **Errors.** If any manager is fallible, the block evaluates to
///   `Result<T, E>` with `E: From<M::Error>`; an enter or exit error comes
///   back as `Err(E::from(..))`. Infallible managers (`Error = Infallible`)
///   put no constraint on the block's type. `?` and `return` in the block
///   leave the block, not the enclosing fn.
/// * **Enter failure.** The managers entered before it exit with
///   [`Outcome::Failed`]; the block does not run.
/// * **Block error and exit error.** The block's error is returned; the
///   exit's is reported as an error-level `tracing` event and counted.
/// * **Panics** in the block run every exit with [`Outcome::Panicked`],
///   then the panic resumes.
/// * **Cancellation.** If the future running the scope is dropped, every
///   entered manager exits once with [`Outcome::Cancelled`], innermost
///   first (see [`AsyncContextManager`] and [`OwnedManager`]). A panic from
///   outside the block and the managers' own code — a later manager's
///   expression, a sibling future of the same task — drops the scope as it
///   unwinds: the entered managers exit once with [`Outcome::Panicked`],
///   the borrowing ones before the unwind goes on, the owned ones on the
///   exit driver, as on cancellation.
/// * **Types.** The block is an `async` block: as with `?` in any async
///   block, its error type must be known inside it. The type the context
///   expects reaches it first, so `let r: Result<_, AppError> =
///   with_scope!(..)` (or the enclosing fn's return type, for a scope in
///   tail position) is enough; `AppError` needs only `Debug`. Write
///   `Ok::<_, AppError>(..)` in the block when the context states nothing.
/// * **Ownership.** The block owns the bindings it names (they are moved
///   into it), so a scope lending `&mut T` is `Send` when `T: Send`, even
///   for `!Sync` types. Bindings the block does not name stay outside it,
///   where later managers may borrow them.
///
/// ```
/// use async_contextlib::{nullcontext, with_scope};
/// # futures::executor::block_on(async {
/// let total = with_scope!(nullcontext(2) as a, nullcontext(a * 10) as b => { a + b });
/// assert_eq!(total, 22);
/// # });
/// ```
///
/// A manager whose error the block cannot absorb is a compile error naming
/// the missing `From` conversion:
///
/// ```compile_fail
/// use async_contextlib::{async_context_manager, with_scope, yield_};
/// #[derive(Debug)] struct DbError;
/// #[async_context_manager]
/// async fn fallible() -> Result<u32, DbError> { yield_!(1); }
/// # async fn f() {
/// let r: Result<u32, std::fmt::Error> = with_scope!(fallible() as n => { Ok(n) });
/// # }
/// ```
#[macro_export]
macro_rules! with_scope {
    ($($tokens:tt)*) => {
        $crate::__private::with_scope_inner!(($crate) $($tokens)*)
    };
}

/// The yield point of an [`#[async_context_manager]`](macro@async_context_manager)
/// fn: `yield_!(value)` hands `value` to the scope's block and evaluates
/// to the block's [`Outcome`] once it is done.
///
/// Anywhere else it is a compile error:
///
/// ```compile_fail
/// async fn not_a_manager() {
///     let _ = async_contextlib::yield_!(1);
/// }
/// ```
#[macro_export]
macro_rules! yield_ {
    // Written by `#[async_context_manager]`, which rewrites every `yield_!`
    // itself, so that the user's `yield_` import still counts as used.
    (@__acm_unused) => {};
    ($($tokens:tt)*) => {
        ::core::compile_error!("`yield_!` may only be used inside an #[async_context_manager] fn")
    };
}

// Not public API.
#[doc(hidden)]
pub mod __private {
    pub use async_contextlib_macros::with_scope_inner;
    pub use async_contextlib_runtime::__private::*;
}

/// The README's worked example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
