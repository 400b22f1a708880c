//! The state machine behind `#[async_context_manager]`, and the pool its
//! frames come from.
//!
//! The attribute turns the fn's body into a future `F` that is handed a
//! [`Co`] (the yielder). [`Generator`] owns `F` in one heap allocation next
//! to a *slot*, and drives it:
//!
//! * `enter` polls `F` until the yield future has published the yielded
//!   value (or a pointer to the lent local) in the slot and returned
//!   `Pending`;
//! * the body runs while `F` stays suspended at that yield;
//! * `exit` puts the [`Outcome`] into the slot and polls `F` to its end; the
//!   yield future reads the outcome and `yield_!` evaluates to it.
//!
//! # The lending invariant
//!
//! A `&mut T` (or `&T`) handed to the body points to a local of `F` that
//! stays alive, unmoved and untouched by `F` for as long as the body holds
//! it. It rests on four facts, each enforced in one place:
//!
//! 1. **The yield future is awaited in place, to completion, in `F`'s own
//!    frame.** The attribute accepts `yield_!` only in the fn's
//!    straight-line code (not in a loop, closure, `async` block, nested
//!    item or another macro's input — `macros/src/yields.rs`,
//!    `macros/src/valid.rs`) and emits the `.await` itself. So the yield
//!    future, which holds the local's borrow, is dropped only with `F`.
//! 2. **Nothing else can build a generator or a yield future.**
//!    [`Generator::new`] and the [`Co`] methods are `unsafe`, with the
//!    contract above; `Generator::new` is the only source of a `Co`. The
//!    attribute binds it to a hygienic name that user code cannot write,
//!    never hands it to a macro, and its `unsafe` blocks hold nothing but a
//!    call of these functions on hygienic locals — no user tokens, no
//!    macro, no type: a path the user redirected (`crate = "..."`, or a
//!    crate of their own named `async_contextlib`) can then only lead to
//!    code of their own, which needs `unsafe` of its own to touch a `Co`.
//! 3. **`F` is neither polled, moved nor dropped while the body holds the
//!    lend.** `enter` returns `Value<'a>` where `'a` is the borrow of the
//!    generator; `exit` and `Drop` need the generator back. `F` lives in
//!    its own allocation, reached only through raw pointers (never a `Box`
//!    that moves: NOTES §2), so moving the `Generator` moves no frame.
//! 4. **Defence in depth, if 1 or 2 were ever broken.** A yield future
//!    touches the slot only if it lies inside its generator's allocation
//!    (where one awaited in place in `F` is), so one built from a yielder
//!    that reached other code and polled anywhere else panics instead. A
//!    yield future dropped after publishing *revokes* what it published
//!    before its borrow ends; a lending generator polls `F` once more
//!    before lending and requires the yield future to *confirm* that `F`
//!    is suspended at it. `enter` lends only a confirmed pointer, and
//!    panics with a clear message when the yield future was dropped or
//!    leaked mid-publish.
//!
//! The `Send` impls follow what crosses threads with the generator: the
//! future, and the yielded value or the lent local (`T: Send` for `&mut T`,
//! `T: Sync` for `&T`).

pub(crate) mod pool;

use std::alloc::Layout;
use std::cell::UnsafeCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::{NonNull, addr_of, addr_of_mut};
use std::task::{Context, Poll};

use crate::{AsyncContextManager, Outcome, OwnedManager, SendManager};

mod sealed {
    pub trait Sealed {}
    impl<T> Sealed for super::ByValue<T> {}
    impl<T: ?Sized> Sealed for super::LendMut<T> {}
    impl<T: ?Sized> Sealed for super::LendRef<T> {}
}

/// How the yielded value reaches the body: [`ByValue`], [`LendMut`] or
/// [`LendRef`] (sealed).
pub trait YieldMode: sealed::Sealed {
    /// What the slot holds between the yield and `enter` returning.
    type Raw;
    /// What the body binds.
    type Value<'a>
    where
        Self: 'a;
    /// Whether the body gets a pointer into the generator's frame (which
    /// `enter` confirms before lending, see the module docs).
    #[doc(hidden)]
    const LENDS: bool;

    /// Turns the slot's content into the body's value.
    ///
    /// # Safety
    ///
    /// For lending modes, `raw` must point to a live local of a generator
    /// that stays suspended, unmoved and undropped for `'a`.
    unsafe fn value<'a>(raw: Self::Raw) -> Self::Value<'a>
    where
        Self: 'a;
}

/// `-> T`: the body binds the yielded value.
#[derive(Debug)]
pub struct ByValue<T>(PhantomData<T>);

/// `-> &mut T`: the body binds `&mut` to a local of the generator.
/// Invariant in `T`, as `&mut T` is.
#[derive(Debug)]
pub struct LendMut<T: ?Sized>(PhantomData<fn(&mut T) -> &mut T>);

/// `-> &T`: the body binds `&` to a local of the generator.
#[derive(Debug)]
pub struct LendRef<T: ?Sized>(PhantomData<fn(&T) -> &T>);

impl<T> YieldMode for ByValue<T> {
    type Raw = T;
    type Value<'a>
        = T
    where
        Self: 'a;
    const LENDS: bool = false;

    unsafe fn value<'a>(raw: T) -> T
    where
        Self: 'a,
    {
        raw
    }
}

impl<T: ?Sized> YieldMode for LendMut<T> {
    type Raw = NonNull<T>;
    type Value<'a>
        = &'a mut T
    where
        Self: 'a;
    const LENDS: bool = true;

    unsafe fn value<'a>(raw: NonNull<T>) -> &'a mut T
    where
        Self: 'a,
    {
        // SAFETY: the caller guarantees `raw` comes from a `&mut T` to a
        // local of a generator suspended at its yield for all of `'a`; the
        // yield future holds that `&mut` across the suspension, so nothing
        // else reaches the local meanwhile.
        unsafe { &mut *raw.as_ptr() }
    }
}

impl<T: ?Sized> YieldMode for LendRef<T> {
    type Raw = NonNull<T>;
    type Value<'a>
        = &'a T
    where
        Self: 'a;
    const LENDS: bool = true;

    unsafe fn value<'a>(raw: NonNull<T>) -> &'a T
    where
        Self: 'a,
    {
        // SAFETY: as for `LendMut`; the yield future holds a `&T` across
        // the suspension, so the local is not mutated meanwhile.
        unsafe { &*raw.as_ptr() }
    }
}

/// What passes between the yield future and the generator.
enum Slot<R> {
    Empty,
    /// The yield future published this and returned `Pending`.
    Published(R),
    /// Polled again while published: the fn is suspended at its yield.
    Confirmed(R),
    /// `enter` handed the value to the body.
    Lent,
    /// The exit's outcome, for the yield future to return.
    Resume(Outcome),
    /// The yield future was dropped before it returned: what it published
    /// (if anything) is withdrawn.
    Revoked,
}

/// What the generated future returns: `()` for infallible managers,
/// `Result<(), E>` for fallible ones.
pub trait GenOutput {
    /// The manager's error.
    type Error;
    /// As a `Result`.
    fn into_result(self) -> Result<(), Self::Error>;
}

impl GenOutput for () {
    type Error = std::convert::Infallible;
    #[inline]
    fn into_result(self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl<E> GenOutput for Result<(), E> {
    type Error = E;
    #[inline]
    fn into_result(self) -> Result<(), E> {
        self
    }
}

/// Marks a generated manager whose signature borrows nothing: it
/// implements [`OwnedManager`].
#[derive(Debug)]
pub enum Owned {}

/// Marks a generated manager whose signature borrows: its exit is finished
/// in place on cancellation.
#[derive(Debug)]
pub enum Borrowing {}

/// The generator's allocation. `fut` is declared first so that it drops
/// first: a yield future dropped with it still writes to a live slot.
struct Inner<F, R> {
    fut: F,
    slot: UnsafeCell<Slot<R>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Fresh,
    Suspended,
    Exiting,
    Finished,
}

type Owns<F, Y, O, B> = (Box<Inner<F, <Y as YieldMode>::Raw>>, Y, O, fn() -> B);

/// A manager generated by `#[async_context_manager]`.
///
/// Only the attribute builds one; call the generated fn to get a manager,
/// and enter it with `with_scope!` or an `ExitStack`.
///
/// ```compile_fail,E0133
/// use async_contextlib::generated::{ByValue, Generator};
/// // Safe code cannot build a generator from its own closure.
/// let g = Generator::<_, ByValue<u32>>::new("mine", |co| async move { let _ = co; });
/// ```
///
/// `B` brands the generator with a type local to its fn, so that its
/// yielder cannot be handed to another fn's expansion (see
/// [`Generator::new`]); generated fns return it as an opaque `impl Sized`.
pub struct Generator<F, Y: YieldMode, O = Borrowing, B = ()> {
    inner: NonNull<Inner<F, Y::Raw>>,
    phase: Phase,
    name: &'static str,
    /// We own an `Inner` (for drop check) and are generic over `O` and `B`.
    _own: PhantomData<Owns<F, Y, O, B>>,
}

// SAFETY: a `Generator` is the sole owner of its allocation, reached only
// through `&mut self` or by value, like a `Box<Inner>`. It is `Send` when
// what it owns is: the future, and whatever the slot may hold (the yielded
// value for `ByValue`; for the lending modes a pointer into the future's
// own frame, whose pointee moves to the other thread with the future and
// is then used there by the body: `T: Send` for `&mut T`, `T: Sync` for
// `&T`).
unsafe impl<F: Send, T: Send, O, B> Send for Generator<F, ByValue<T>, O, B> {}
// SAFETY: as above.
unsafe impl<F: Send, T: ?Sized + Send, O, B> Send for Generator<F, LendMut<T>, O, B> {}
// SAFETY: as above.
unsafe impl<F: Send, T: ?Sized + Sync, O, B> Send for Generator<F, LendRef<T>, O, B> {}

impl<F, Y: YieldMode, O, B> Generator<F, Y, O, B> {
    /// Allocates the generator and builds the fn's future with its
    /// yielder. Nothing of the fn runs until `enter`.
    ///
    /// # Safety
    ///
    /// Only code generated by `#[async_context_manager]` calls this, with
    /// `B` a type local to the fn (so that no other fn's expansion accepts
    /// this generator's yielder). The
    /// future `make` builds must use its [`Co`] once, through the one
    /// `yield_!` of the fn, whose future it awaits in place, in the fn's
    /// own straight-line code: never stored, moved elsewhere, polled by
    /// anything else, dropped before it returns (other than with the whole
    /// future) or leaked. See the module docs.
    #[doc(hidden)]
    pub unsafe fn new<G>(name: &'static str, make: G) -> Self
    where
        G: FnOnce(Co<Y, B>) -> F,
    {
        // Gives the allocation back if `make` panics (the slot needs no drop).
        struct Dealloc(NonNull<u8>, Layout);
        impl Drop for Dealloc {
            fn drop(&mut self) {
                // SAFETY: `self.0` came from `pool::alloc(self.1)`, and
                // nothing in it needs dropping yet.
                unsafe { pool::free(self.0, self.1) };
            }
        }
        let layout = Layout::new::<Inner<F, Y::Raw>>();
        // From here on the allocation is reached only through `raw`.
        let raw: *mut Inner<F, Y::Raw> = pool::alloc(layout).as_ptr().cast();
        // SAFETY: `raw` came from an allocation, so it is not null.
        let dealloc = Dealloc(unsafe { NonNull::new_unchecked(raw.cast()) }, layout);
        // SAFETY: `raw` is a valid, aligned, exclusively owned allocation for
        // an `Inner`; we initialise its two fields in place before any read.
        unsafe {
            addr_of_mut!((*raw).slot).write(UnsafeCell::new(Slot::Empty));
        }
        let co = Co {
            frame: Frame {
                // SAFETY: `raw` is valid; taking a field's address reads nothing.
                slot: unsafe { addr_of!((*raw).slot) }.cast(),
                start: raw as usize,
                end: raw as usize + layout.size(),
            },
            _mode: PhantomData,
        };
        let fut = make(co);
        // SAFETY: as above; `fut` is moved into place and never moves again.
        unsafe {
            addr_of_mut!((*raw).fut).write(fut);
        }
        std::mem::forget(dealloc);
        Generator {
            // SAFETY: `raw` came from an allocation: not null.
            inner: unsafe { NonNull::new_unchecked(raw) },
            phase: Phase::Fresh,
            name,
            _own: PhantomData,
        }
    }

    /// The slot, for a look between two polls of the future.
    fn slot(&mut self) -> &mut Slot<Y::Raw> {
        // SAFETY: the allocation is live and initialised (see `new`). The
        // slot is only accessed by the yield futures while the generator
        // polls its future (through `&mut self`) and here, between polls;
        // no reference to it is alive now.
        unsafe { &mut *(*self.inner.as_ptr()).slot.get() }
    }

    /// Polls the fn's future once.
    #[inline]
    fn poll_fut(&mut self, cx: &mut Context<'_>) -> Poll<F::Output>
    where
        F: Future,
    {
        let raw = self.inner.as_ptr();
        // SAFETY: the allocation is live and initialised (see `new`) and we
        // hold `&mut self`, so nothing else polls or drops it; `fut` is never
        // moved out of the allocation, which makes pinning it sound.
        // `F` is an `async` block (`!Unpin`), so this `&mut` does not assert
        // uniqueness over the pointers into its frame that the body may hold
        // between polls — and none is used while we poll.
        let fut = unsafe { Pin::new_unchecked(&mut *addr_of_mut!((*raw).fut)) };
        fut.poll(cx)
    }

    /// One step of `enter`: polls the future, and lends what its yield
    /// published once it is known to be suspended at that yield.
    fn poll_enter(&mut self, cx: &mut Context<'_>) -> Poll<Result<Y::Raw, F::Output>>
    where
        F: Future,
    {
        let mut poll = self.poll_fut(cx);
        if Y::LENDS && poll.is_pending() && matches!(self.slot(), Slot::Published(_)) {
            // Defence in depth: poll once more; a yield future awaited in
            // place sees itself still published and confirms. One dropped
            // since has revoked; one leaked cannot answer.
            poll = self.poll_fut(cx);
        }
        let slot = self.slot();
        match (poll, &*slot) {
            (Poll::Pending, Slot::Confirmed(_)) => {}
            (Poll::Pending, Slot::Published(_)) if !Y::LENDS => {}
            (Poll::Pending, Slot::Empty | Slot::Revoked) => return Poll::Pending,
            (Poll::Ready(output), Slot::Empty | Slot::Revoked) => return Poll::Ready(Err(output)),
            (_, Slot::Published(_) | Slot::Confirmed(_)) => {
                *slot = Slot::Revoked;
                misplaced_yield(self.name)
            }
            (_, Slot::Lent | Slot::Resume(_)) => {
                unreachable!("async-contextlib: generator slot out of step at enter")
            }
        }
        match std::mem::replace(slot, Slot::Lent) {
            Slot::Published(raw) | Slot::Confirmed(raw) => Poll::Ready(Ok(raw)),
            _ => unreachable!("checked above"),
        }
    }
}

#[cold]
#[inline(never)]
fn misplaced_yield(name: &str) -> ! {
    panic!(
        "async-contextlib: the `yield_!` future of `{name}` was not awaited in place (dropped, \
         leaked or polled outside the fn's own frame); refusing to lend from it"
    )
}

impl<F, Y: YieldMode, O, B> Drop for Generator<F, Y, O, B> {
    fn drop(&mut self) {
        let raw = self.inner.as_ptr();
        // SAFETY: `inner` is fully initialised (see `new`) and dropped once,
        // here. Any `&`/`&mut` lent to a body is dead: the body needed a
        // borrow of `self` for it.
        unsafe { std::ptr::drop_in_place(raw) };
        // SAFETY: the allocation came from `pool::alloc` with this layout
        // and its content has just been dropped.
        unsafe { pool::free(self.inner.cast(), Layout::new::<Inner<F, Y::Raw>>()) };
    }
}

impl<F, Y: YieldMode, O, B> std::fmt::Debug for Generator<F, Y, O, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("name", &self.name)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl<F, Y, O, B> AsyncContextManager for Generator<F, Y, O, B>
where
    F: Future,
    F::Output: GenOutput,
    Y: YieldMode,
{
    type Value<'a>
        = Y::Value<'a>
    where
        Self: 'a;
    type Error = <F::Output as GenOutput>::Error;

    fn enter(&mut self) -> impl Future<Output = Result<Y::Value<'_>, Self::Error>> {
        Enter {
            generator: Some(self),
        }
    }

    fn exit(&mut self, outcome: Outcome) -> impl Future<Output = Result<(), Self::Error>> {
        Exit {
            generator: self,
            outcome: Some(outcome),
        }
    }

    fn name(&self) -> &'static str {
        self.name
    }

    const __RESUMABLE_EXIT: bool = true;
}

// A stack's `enter` carries no `'static` bound (see `managers/stack.rs`):
// an owned generator proves it here, in `__detach`, so that a cancelled
// stack of them is handed to the exit driver.
impl<F, Y, B> SendManager for Generator<F, Y, Owned, B>
where
    F: Future + Send + 'static,
    F::Output: GenOutput,
    Y: YieldMode + 'static,
    B: 'static,
    Self: Send,
{
    async fn exit_owned(mut self, outcome: Outcome) -> Result<(), Self::Error> {
        self.exit(outcome).await
    }

    crate::managers::stack::detach_static!();
}

impl<F, Y, B> SendManager for Generator<F, Y, Borrowing, B>
where
    F: Future + Send,
    F::Output: GenOutput,
    Y: YieldMode,
    Self: Send,
{
    async fn exit_owned(mut self, outcome: Outcome) -> Result<(), Self::Error> {
        self.exit(outcome).await
    }
}

impl<F, Y, B> OwnedManager for Generator<F, Y, Owned, B>
where
    F: Future + 'static,
    B: 'static,
    F::Output: GenOutput,
    Y: YieldMode + 'static,
{
}

struct Enter<'a, F, Y: YieldMode, O, B> {
    generator: Option<&'a mut Generator<F, Y, O, B>>,
}

impl<'a, F, Y, O, B> Future for Enter<'a, F, Y, O, B>
where
    F: Future,
    F::Output: GenOutput,
    Y: YieldMode,
{
    type Output = Result<Y::Value<'a>, <F::Output as GenOutput>::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let generator = self
            .generator
            .as_mut()
            .expect("async-contextlib: enter polled after it finished");
        assert!(
            generator.phase == Phase::Fresh,
            "async-contextlib: `{}` was entered twice; a manager is single-use",
            generator.name
        );
        match std::task::ready!(generator.poll_enter(cx)) {
            Err(output) => {
                generator.phase = Phase::Finished;
                match output.into_result() {
                    Err(error) => Poll::Ready(Err(error)),
                    Ok(()) => panic!(
                        "#[async_context_manager] fn `{}` returned without reaching `yield_!` \
                         (Python: \"generator didn't yield\")",
                        generator.name
                    ),
                }
            }
            Ok(raw) => {
                generator.phase = Phase::Suspended;
                // The `'a` borrow of the generator now belongs to the value.
                self.generator = None;
                // SAFETY: the generator's future is suspended at its only
                // yield, which confirmed it (lending modes), and `'a` is the
                // borrow of the generator itself: it cannot be polled, moved
                // (it lives in its own allocation) or dropped until `'a`
                // ends.
                Poll::Ready(Ok(unsafe { Y::value::<'a>(raw) }))
            }
        }
    }
}

struct Exit<'a, F, Y: YieldMode, O, B> {
    generator: &'a mut Generator<F, Y, O, B>,
    outcome: Option<Outcome>,
}

impl<F, Y, O, B> Future for Exit<'_, F, Y, O, B>
where
    F: Future,
    F::Output: GenOutput,
    Y: YieldMode,
{
    type Output = Result<(), <F::Output as GenOutput>::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let generator = &mut *this.generator;
        match generator.phase {
            Phase::Suspended => {
                let outcome = this.outcome.take().unwrap_or(Outcome::Cancelled);
                *generator.slot() = Slot::Resume(outcome);
                generator.phase = Phase::Exiting;
            }
            // A previous exit future was dropped part-way: resume it (the
            // outcome it delivered stands).
            Phase::Exiting => {}
            Phase::Finished => return Poll::Ready(Ok(())),
            Phase::Fresh => panic!(
                "async-contextlib: `{}` exited before it was entered",
                generator.name
            ),
        }
        match generator.poll_fut(cx) {
            Poll::Ready(output) => {
                generator.phase = Phase::Finished;
                Poll::Ready(output.into_result())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Where a generator's slot is, and the bounds of the allocation holding
/// it and the generator's future.
struct Frame<R> {
    slot: *const UnsafeCell<Slot<R>>,
    start: usize,
    end: usize,
}

impl<R> Clone for Frame<R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R> Copy for Frame<R> {}

impl<R> Frame<R> {
    /// Whether the value at `this` lies inside the generator's allocation —
    /// as a yield future awaited in place in the generator's own future
    /// does (defence in depth: one built from a yielder that reached other
    /// code, and polled anywhere else, cannot touch the slot).
    fn holds<T>(&self, this: &T) -> bool {
        let at = std::ptr::from_ref(this) as usize;
        self.start <= at && at + size_of::<T>() <= self.end
    }
}

/// The yielder handed to the generated future; `yield_!(x)` becomes a call
/// on it. Taken by value, so a second yield does not compile.
pub struct Co<Y: YieldMode, B = ()> {
    frame: Frame<Y::Raw>,
    _mode: PhantomData<(Y, fn() -> B)>,
}

// A `Co` exists only inside the future `Generator::new` (unsafe) builds,
// bound to a hygienic name user code cannot write; its methods are `unsafe`
// too, so that one reaching user code anyway (through a path the user
// redirected, see `macros/src/expand.rs`) is useless without `unsafe`.
//
// SAFETY: `Co` is a pointer into the generator's own allocation; all it can
// do is make the yield future, which moves the yielded value (or the lent
// local's pointer) into the slot — so it may cross threads, inside the
// generator's future, exactly when that value may. It has no `&self`
// methods, and is deliberately not `Sync`.
unsafe impl<T: Send, B> Send for Co<ByValue<T>, B> {}
// SAFETY: as above; the lent `&mut T` reaches the body on whichever thread
// the generator is entered.
unsafe impl<T: ?Sized + Send, B> Send for Co<LendMut<T>, B> {}
// SAFETY: as above, for a shared borrow.
unsafe impl<T: ?Sized + Sync, B> Send for Co<LendRef<T>, B> {}

impl<Y: YieldMode, B> std::fmt::Debug for Co<Y, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Co")
    }
}

impl<T, B> Co<ByValue<T>, B> {
    /// `yield_!(value)` for `-> T`.
    ///
    /// # Safety
    ///
    /// Only the attribute's expansion calls this, at its one `yield_!`;
    /// the future is awaited at once, in place (see [`Generator::new`]).
    #[doc(hidden)]
    pub unsafe fn yield_value(self, value: T) -> YieldValue<T> {
        YieldValue {
            frame: self.frame,
            value: Some(value),
            state: State::Start,
        }
    }
}

impl<T: ?Sized, B> Co<LendMut<T>, B> {
    /// `yield_!(&mut local)` for `-> &mut T`.
    ///
    /// # Safety
    ///
    /// Only the attribute's expansion calls this, at its one `yield_!`;
    /// the future is awaited at once, in place (see [`Generator::new`]).
    #[doc(hidden)]
    pub unsafe fn lend_mut(self, value: &mut T) -> YieldLend<'_, T, LendMut<T>> {
        YieldLend {
            frame: self.frame,
            ptr: NonNull::from(value),
            state: State::Start,
            _borrow: PhantomData,
        }
    }
}

impl<T: ?Sized, B> Co<LendRef<T>, B> {
    /// `yield_!(&local)` for `-> &T`.
    ///
    /// # Safety
    ///
    /// Only the attribute's expansion calls this, at its one `yield_!`;
    /// the future is awaited at once, in place (see [`Generator::new`]).
    #[doc(hidden)]
    pub unsafe fn lend_ref(self, value: &T) -> YieldLend<'_, T, LendRef<T>> {
        YieldLend {
            frame: self.frame,
            ptr: NonNull::from(value),
            state: State::Start,
            _borrow: PhantomData,
        }
    }
}

/// Where a yield future is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    /// Published; waiting for the exit's outcome.
    Waiting,
    Done,
}

/// One poll of a yield future (`this`): publish on the first poll, confirm
/// while published, return the outcome once the exit left it.
///
/// # Safety
///
/// `frame` is the frame of the live generator that is polling its future
/// (the yield future's contract, see [`Generator::new`]). As defence in
/// depth, a yield future that is not inside that generator's allocation
/// (built from a yielder that reached other code, and polled elsewhere)
/// panics here without touching the slot.
unsafe fn poll_yield<R, T>(
    frame: Frame<R>,
    this: &T,
    state: &mut State,
    publish: impl FnOnce() -> R,
) -> Poll<Outcome> {
    assert!(
        frame.holds(this),
        "async-contextlib: a `yield_!` future polled outside its generator's frame; refusing"
    );
    // SAFETY: per the caller; no other reference to the slot is alive while
    // the generator's future is polled.
    let slot = unsafe { &mut *(*frame.slot).get() };
    match *state {
        State::Start => {
            *slot = Slot::Published(publish());
            *state = State::Waiting;
            // No waker: the generator looks at the slot right after this
            // poll returns, and the exit polls us again.
            Poll::Pending
        }
        State::Waiting => match std::mem::replace(slot, Slot::Empty) {
            Slot::Resume(outcome) => {
                *state = State::Done;
                Poll::Ready(outcome)
            }
            Slot::Published(raw) => {
                *slot = Slot::Confirmed(raw);
                Poll::Pending
            }
            other => {
                *slot = other;
                Poll::Pending
            }
        },
        State::Done => panic!("async-contextlib: yield_! polled after it returned"),
    }
}

/// Withdraws what a yield future (`this`) published, if it is dropped
/// before it returned (see the module docs).
///
/// # Safety
///
/// As for [`poll_yield`]; one outside the frame never published.
unsafe fn revoke<R, T>(frame: Frame<R>, this: &T, state: State) {
    if state == State::Waiting && frame.holds(this) {
        // SAFETY: per the caller; the generator's future (which owns us) is
        // being dropped or polled, and the slot outlives it (`Inner`).
        let slot = unsafe { &mut *(*frame.slot).get() };
        *slot = Slot::Revoked;
    }
}

/// The future of `yield_!(value)` for `-> T`.
#[allow(
    missing_debug_implementations,
    reason = "internal future; holds a raw slot pointer"
)]
pub struct YieldValue<T> {
    frame: Frame<T>,
    value: Option<T>,
    state: State,
}

// SAFETY: holds a `T` and a pointer into the generator that polls it; not
// `Sync` (no `&self` use is needed).
unsafe impl<T: Send> Send for YieldValue<T> {}
impl<T> Unpin for YieldValue<T> {}

impl<T> Future for YieldValue<T> {
    type Output = Outcome;
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = &mut *self;
        let (frame, mut state, mut value) = (this.frame, this.state, this.value.take());
        // SAFETY: only the generator owning the slot polls this future.
        let poll = unsafe {
            poll_yield(frame, &*this, &mut state, || {
                value.take().expect("published once")
            })
        };
        this.state = state;
        this.value = value;
        poll
    }
}

impl<T> Drop for YieldValue<T> {
    fn drop(&mut self) {
        // SAFETY: only the generator owning the slot holds this future.
        unsafe { revoke(self.frame, &*self, self.state) };
    }
}

/// The future of `yield_!(&mut local)` / `yield_!(&local)`: holds the
/// borrow of the local for as long as the body has it.
#[allow(
    missing_debug_implementations,
    reason = "internal future; holds a raw slot pointer"
)]
pub struct YieldLend<'b, T: ?Sized, Y> {
    frame: Frame<NonNull<T>>,
    ptr: NonNull<T>,
    state: State,
    _borrow: PhantomData<(&'b mut T, Y)>,
}

// SAFETY: semantically a `&'b mut T` (or `&'b T`) plus a pointer into the
// generator that polls it; not `Sync` (no `&self` use is needed). The mode
// is a marker: its type parameter is left free (it is always `T`, as only
// `Co::lend_*` build these), because inside a future's witness rustc sees
// the two with unrelated lifetimes, and an impl tying them is then "not
// general enough" to make the future `Send` (rust-lang/rust#110338).
unsafe impl<T: ?Sized + Send, U: ?Sized> Send for YieldLend<'_, T, LendMut<U>> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Sync, U: ?Sized> Send for YieldLend<'_, T, LendRef<U>> {}
impl<T: ?Sized, Y> Unpin for YieldLend<'_, T, Y> {}

impl<T: ?Sized, Y> Future for YieldLend<'_, T, Y> {
    type Output = Outcome;
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = &mut *self;
        let (frame, ptr, mut state) = (this.frame, this.ptr, this.state);
        // SAFETY: only the generator owning the slot polls this future.
        let poll = unsafe { poll_yield(frame, &*this, &mut state, || ptr) };
        this.state = state;
        poll
    }
}

impl<T: ?Sized, Y> Drop for YieldLend<'_, T, Y> {
    fn drop(&mut self) {
        // SAFETY: only the generator owning the slot holds this future; the
        // revoke happens before the borrow `'b` of the local ends.
        unsafe { revoke(self.frame, &*self, self.state) };
    }
}
