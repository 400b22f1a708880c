//! `ExitStack` and `LocalExitStack`: Python's `AsyncExitStack`, for a
//! number of managers known only at run time.
//!
//! # Layout
//!
//! The stack is a singly linked list of nodes, newest first, behind a
//! mutex (so that `enter` takes `&self` and several values are held at
//! once). Each node is one allocation holding the entry — the manager and,
//! once it exits, its exit future — reached only through raw pointers
//! (never a `Box` that moves, NOTES §2), so a value lent out of an entry
//! (`-> &mut T` managers lend into their own frame) stays valid while the
//! stack is borrowed:
//!
//! * an entry is freed only by unwinding (`close`, the stack's exit) or the
//!   stack's drop, which need `&mut self` or `self`: no value lent from the
//!   stack (each borrows `&'s self`) is alive then;
//! * `enter` writes only its own node and the list's head; no other code
//!   touches an entry while the stack is shared.
//!
//! Unwinding pops one node at a time (no recursion, 10,000 entries are
//! fine), polls its exit, counts it, and goes on past failures and panics.
//!
//! # Why two stacks
//!
//! A task holding an `ExitStack` must be `Send` to be spawned, so every
//! entry's exit future must be `Send` — and stable Rust cannot state that
//! for a generic manager. `ExitStack` takes [`SendManager`]s, whose trait
//! states it once per type (generated managers and the library's own
//! implement it; hand-written ones in one line, `send_manager!`), and is
//! `Send + Sync`. `LocalExitStack` takes any manager and is neither. Using
//! the wrong one is a compile error that names the other.

use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::driver::ticket::Ticket;
use crate::driver::{Job, JobKind, cascade, diag, in_place, stats};
use crate::outcome::Payload;
use crate::scope::guard::{dropped_outcome, exit_task};
use crate::scope::step::{Code, Lazy};
use crate::{AsyncContextManager, Failure, Outcome, Panic, SendManager};

/// The error of a stack's unwinding: a failing entry's error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a callback registered on a stack returns: `()`, or a `Result`
/// whose error the stack boxes.
pub trait ExitResult {
    /// As the stack's result.
    fn into_exit(self) -> Result<(), BoxError>;
}

impl ExitResult for () {
    fn into_exit(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError>> ExitResult for Result<(), E> {
    fn into_exit(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

/// How an entry's exit ended: its result, or its panic.
type Exited = Result<Result<(), BoxError>, Payload>;

/// One entry of a stack, erased.
trait Entry {
    fn name(&self) -> &'static str;
    /// An entered manager (counted in `stats()`), not a callback.
    fn is_manager(&self) -> bool;
    /// Polls the entry's exit, starting it with `outcome` on the first
    /// poll; panics are caught. The entry must not move between polls (it
    /// lives in a node of the stack, which never moves).
    fn poll_exit(&mut self, outcome: &Outcome, cx: &mut Context<'_>) -> Poll<Exited>;
    /// Moves an owned manager not yet exiting into an entry of its own for
    /// the exit driver, leaving this one `Done`; `None` otherwise.
    fn detach(&mut self) -> Option<DetachedEntry>;
}

/// How an `ExitStack` entry asks its manager to be detached
/// ([`SendManager::__detach`]).
type DetachFn<M> = fn(M, &'static str) -> Result<DetachedEntry, M>;

/// An entered manager (or a registered callback), and its exit once begun.
enum State<M, G, F> {
    Entered { manager: M, exit: G },
    Exiting(F),
    Done,
}

struct EntryImpl<M, G, F> {
    name: &'static str,
    manager: bool,
    state: State<M, G, F>,
    /// Set for the managers of an `ExitStack` (whose exit futures are
    /// `Send`).
    detach: Option<DetachFn<M>>,
}

impl<M, G, F, R> Entry for EntryImpl<M, G, F>
where
    G: FnOnce(M, Outcome) -> F,
    F: Future<Output = R>,
    R: ExitResult,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn is_manager(&self) -> bool {
        self.manager
    }

    fn detach(&mut self) -> Option<DetachedEntry> {
        let detach = self.detach?;
        if !matches!(self.state, State::Entered { .. }) {
            return None;
        }
        let State::Entered { manager, exit } = std::mem::replace(&mut self.state, State::Done)
        else {
            unreachable!("checked above")
        };
        match detach(manager, self.name) {
            Ok(detached) => Some(detached),
            Err(manager) => {
                self.state = State::Entered { manager, exit };
                None
            }
        }
    }

    fn poll_exit(&mut self, outcome: &Outcome, cx: &mut Context<'_>) -> Poll<Exited> {
        // The exit's result, kept here if its drop (below) panics.
        let mut finished = None;
        let poll = catch_unwind(AssertUnwindSafe(|| {
            if matches!(self.state, State::Entered { .. }) {
                let State::Entered { manager, exit, .. } =
                    std::mem::replace(&mut self.state, State::Done)
                else {
                    unreachable!("checked above")
                };
                self.state = State::Exiting(exit(manager, outcome.clone()));
            }
            let State::Exiting(fut) = &mut self.state else {
                finished = Some(Ok(()));
                return Poll::Ready(());
            };
            // SAFETY: the entry lives in a node of its stack, which is
            // never moved and is freed only after this future is done or
            // dropped in place.
            let fut = unsafe { Pin::new_unchecked(fut) };
            finished = Some(ready!(fut.poll(cx)).into_exit());
            // Dropped inside the catch: a panic in that drop is the exit's.
            finish_state(&mut self.state);
            Poll::Ready(())
        }));
        match poll {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => Poll::Ready(Ok(finished.expect("set as it finished"))),
            Err(payload) => {
                // An exit that failed, then panicked as it was dropped: the
                // panic is its outcome, the error is reported.
                if let Some(Err(error)) = finished {
                    report_error_then_panic(self.name, &error);
                }
                // Dropped already if it was its drop that panicked; else the
                // panicked exit is dropped here, a second panic reported (a
                // stack may unwind inside a destructor).
                let state = &mut self.state;
                if catch_unwind(AssertUnwindSafe(|| finish_state(state))).is_err() {
                    diag::report_exit_error(
                        self.name,
                        "exit stack",
                        "a panicked exit panicked again while it was dropped",
                    );
                }
                Poll::Ready(Err(payload))
            }
        }
    }
}

/// Reports the error an exit returned before its future panicked as it
/// was dropped (the panic is the exit's outcome; the error would be lost).
#[cold]
fn report_error_then_panic(name: &'static str, error: &dyn std::fmt::Display) {
    // The error's `Display` is user code, run while a panic is in hand.
    let message = catch_unwind(AssertUnwindSafe(|| error.to_string()))
        .unwrap_or_else(|_| "an error whose `Display` panicked".to_owned());
    diag::report_exit_error(
        name,
        "exit stack",
        &format!("{message} (then its exit panicked as it was dropped)"),
    );
}

/// A manager of a cancelled `ExitStack`, moved into a node of its own that
/// a stack run by the exit driver takes (see [`SendManager::__detach`]).
#[doc(hidden)]
#[allow(missing_debug_implementations, reason = "an owned node")]
pub struct DetachedEntry(Link<'static>);

impl Drop for DetachedEntry {
    fn drop(&mut self) {
        // Never reached: every one made is pushed onto a stack (which
        // forgets it). Freeing it drops the manager unexited.
        Owned(self.0).free();
    }
}

/// Moves `manager` into a detached entry (its impl of
/// [`SendManager::__detach`] has proved it `'static`).
#[doc(hidden)]
pub fn detach_entry<M: SendManager + 'static>(
    manager: M,
    name: &'static str,
    into_box: fn(M::Error) -> BoxError,
) -> DetachedEntry {
    use futures_util::FutureExt as _;
    // Held until its exit ends, so that `drain_timeout` names the entry
    // the handed-over stack waits on (the stack's own job counts it).
    let held = Ticket::new(name, JobKind::Stack);
    let exit = move |manager: M, outcome: Outcome| {
        manager.exit_owned(outcome).map(move |result| {
            drop(held);
            result.map_err(into_box)
        })
    };
    let entry = EntryImpl {
        name,
        manager: true,
        state: State::Entered { manager, exit },
        detach: None,
    };
    // Checked, as at `enter`: the driver's stack is `Send` because every
    // entry let in is.
    let entry = admit::<SendStack, _>(entry);
    let node = Owned::new(Box::new(Node { next: None, entry }));
    let node = ManuallyDrop::new(node).0;
    DetachedEntry(node)
}

/// The body of [`SendManager::__detach`] for a manager type that is
/// `'static` in its impl (every library manager that is an
/// [`OwnedManager`](crate::OwnedManager) and can be entered into a stack).
/// `detach_static!(marker)` is for a macro's optional arm: the marker
/// only says the type is `'static`.
macro_rules! detach_static {
    ($($marker:ident)?) => {
        fn __detach(
            self,
            name: &'static str,
            into_box: fn(Self::Error) -> crate::BoxError,
        ) -> Result<crate::__private::DetachedEntry, Self> {
            Ok(crate::__private::detach_entry(self, name, into_box))
        }
    };
}
pub(crate) use detach_static;

/// [`SendManager::__detach`] for an entry of an `ExitStack`.
fn detach_send<M: SendManager>(manager: M, name: &'static str) -> Result<DetachedEntry, M>
where
    M::Error: Into<BoxError>,
{
    manager.__detach(name, Into::into)
}

/// Chooses `send_manager!`'s `__detach` at the macro's concrete type:
/// `(&&OwnedProbe::<M>::new()).__acm_detach(..)`.
#[doc(hidden)]
#[derive(Debug)]
pub struct OwnedProbe<M>(PhantomData<fn(M)>);

impl<M> OwnedProbe<M> {
    /// The probe.
    #[must_use]
    pub fn new() -> Self {
        OwnedProbe(PhantomData)
    }
}

impl<M> Default for OwnedProbe<M> {
    fn default() -> Self {
        Self::new()
    }
}

/// An [`OwnedManager`](crate::OwnedManager): detached.
#[doc(hidden)]
pub trait DetachOwned<M: SendManager> {
    /// The entry.
    fn __acm_detach(
        &self,
        manager: M,
        name: &'static str,
        into_box: fn(M::Error) -> BoxError,
    ) -> Result<DetachedEntry, M>;
}
impl<M: SendManager + crate::OwnedManager> DetachOwned<M> for &OwnedProbe<M> {
    fn __acm_detach(
        &self,
        manager: M,
        name: &'static str,
        into_box: fn(M::Error) -> BoxError,
    ) -> Result<DetachedEntry, M> {
        Ok(detach_entry(manager, name, into_box))
    }
}

/// Anything else: finished in place.
#[doc(hidden)]
pub trait DetachBorrowing<M: SendManager> {
    /// The manager back.
    fn __acm_detach(
        &self,
        manager: M,
        name: &'static str,
        into_box: fn(M::Error) -> BoxError,
    ) -> Result<DetachedEntry, M>;
}
impl<M: SendManager> DetachBorrowing<M> for OwnedProbe<M> {
    fn __acm_detach(
        &self,
        manager: M,
        _: &'static str,
        _: fn(M::Error) -> BoxError,
    ) -> Result<DetachedEntry, M> {
        Err(manager)
    }
}

/// What [`send_manager!`](crate::send_manager) makes a manager's owned exit
/// with: `manager.exit(outcome)`, whose future is dropped under a catch as
/// soon as it finishes. Awaited in the macro's `async` block instead, the
/// future would be dropped inside that block's poll, and an error it
/// returned just before panicking in its drop would go with the unwind; here
/// it is reported, then the panic goes on (and the stack running the exit
/// counts it as the exit's outcome).
#[doc(hidden)]
pub fn exit_reported<M: AsyncContextManager>(
    manager: &mut M,
    outcome: Outcome,
    describe: fn(&M::Error) -> Failure,
) -> impl Future<Output = Result<(), M::Error>> + '_ {
    let name = manager.name();
    ExitReported {
        code: Lazy::new(move || manager.exit(outcome)),
        name,
        describe,
    }
}

pin_project! {
    struct ExitReported<C, F, D> {
        #[pin]
        code: Lazy<C, F>,
        name: &'static str,
        describe: D,
    }
}

impl<C, F, E> Future for ExitReported<C, F, fn(&E) -> Failure>
where
    C: FnOnce() -> F,
    F: Future<Output = Result<(), E>>,
{
    type Output = Result<(), E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        let this = self.project();
        let mut salvage = None;
        let code = this.code;
        match catch_unwind(AssertUnwindSafe(|| code.poll_code(cx, &mut salvage))) {
            Ok(poll) => poll,
            Err(payload) => {
                if let Some(Err(error)) = &salvage {
                    let describe = *this.describe;
                    let failure = catch_unwind(AssertUnwindSafe(|| describe(error)));
                    match failure {
                        Ok(failure) => report_error_then_panic(this.name, &failure),
                        Err(_) => report_error_then_panic(this.name, &"an error"),
                    }
                }
                resume_unwind(payload)
            }
        }
    }
}

/// Drops an entry's state in place and leaves `Done`, even if that drop
/// panics (the exit future is pinned: it is dropped where it lies, never
/// moved out first).
fn finish_state<M, G, F>(state: &mut State<M, G, F>) {
    struct WriteDone<M, G, F>(*mut State<M, G, F>);
    impl<M, G, F> Drop for WriteDone<M, G, F> {
        fn drop(&mut self) {
            // SAFETY: the state was dropped in place (or its drop unwound,
            // which drops the rest of it): writing over it leaks nothing.
            unsafe { std::ptr::write(self.0, State::Done) };
        }
    }
    let state: *mut State<M, G, F> = state;
    let _done = WriteDone(state);
    // SAFETY: dropped once, in place; `_done` writes `Done` over it next,
    // on every path.
    unsafe { std::ptr::drop_in_place(state) };
}

/// A link of the list: the erased entry type is the same for both stacks
/// (what may go in is checked at `enter`, see [`Admits`]), so that the
/// link does not name a node's entry type and the node can be unsized.
type Link<'a> = NonNull<Node<'a, dyn Entry + 'a>>;

/// A node of the list: one allocation per entry.
struct Node<'a, T: ?Sized> {
    next: Option<Link<'a>>,
    entry: T,
}

// SAFETY: a node owns its entry; its `next` link is the list's (a node
// reaches another thread on its own only inside its enter future, before it
// is linked, or as part of a list, whose own `Send` impl decides).
unsafe impl<T: ?Sized + Send> Send for Node<'_, T> {}

/// Which entries a stack takes: `Send` ones ([`SendStack`]) or any
/// ([`LocalStack`]).
trait Admits<T> {}

/// The kind of [`ExitStack`].
enum SendStack {}
/// The kind of [`LocalExitStack`].
enum LocalStack {}

impl<T: Send> Admits<T> for SendStack {}
impl<T> Admits<T> for LocalStack {}

/// `entry`, once `K` admits it.
fn admit<K: Admits<T>, T>(entry: T) -> T {
    entry
}

/// A node pointer owned by whoever holds it (a `Box<Node>`, without the
/// retagging a moving `Box` does).
struct Owned<N: ?Sized>(NonNull<N>);

// SAFETY: an `Owned` is the sole owner of its node, like a `Box`.
unsafe impl<N: ?Sized + Send> Send for Owned<N> {}
// SAFETY: as above; `&Owned` gives no access to the node.
unsafe impl<N: ?Sized + Sync> Sync for Owned<N> {}

impl<N: ?Sized> Owned<N> {
    fn new(node: Box<N>) -> Self
    where
        N: Sized,
    {
        Owned(NonNull::from(Box::leak(node)))
    }

    /// Frees the node (and drops what it holds).
    fn free(self) {
        // SAFETY: the node came from `Box::leak` in `new` and we own it.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// The list shared by both stacks; `K` is the stack's kind.
struct Core<'a, K> {
    head: Mutex<Option<Link<'a>>>,
    /// `None` for a user's stack: dropped with entries left, it tries to
    /// hand them to the exit driver. The stack the driver unwinds holds the
    /// outcome they were cancelled with, for its own drop (its runtime
    /// shutting down): never handed over again.
    handed_over: Option<Outcome>,
    _own: PhantomData<(Box<Node<'a, dyn Entry + 'a>>, K)>,
}

impl<'a, K> Core<'a, K> {
    const fn new() -> Self {
        Core {
            head: Mutex::new(None),
            handed_over: None,
            _own: PhantomData,
        }
    }

    fn push(&self, node: Owned<Node<'a, dyn Entry + 'a>>) {
        let mut head = self.head.lock().unwrap_or_else(PoisonError::into_inner);
        let node = ManuallyDrop::new(node).0;
        // SAFETY: we own `node` (not yet shared); only its `next` field is
        // written, through the raw pointer, leaving any value lent out of
        // its entry untouched.
        unsafe { std::ptr::addr_of_mut!((*node.as_ptr()).next).write(*head) };
        *head = Some(node);
    }

    fn pop(&mut self) -> Option<Owned<Node<'a, dyn Entry + 'a>>> {
        let head = self.head.get_mut().unwrap_or_else(PoisonError::into_inner);
        let node = (*head)?;
        // SAFETY: `&mut self`: no value lent from the stack is alive, and
        // the node is ours until freed.
        *head = unsafe { (*node.as_ptr()).next };
        Some(Owned(node))
    }

    fn top(&mut self) -> Option<Link<'a>> {
        *self.head.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&mut self) -> Self {
        let head = self
            .head
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Core {
            head: Mutex::new(head),
            handed_over: None,
            _own: PhantomData,
        }
    }

    /// A new node for `manager` (not linked yet), whose exit `exit` makes,
    /// and a pointer to the manager in it for its enter.
    ///
    /// Erased at once: the enter future ([`Core::entering`]) names neither
    /// the entry nor its exit future, nor this fn's generics, so the
    /// witness of a future awaiting it does not either: their `Send` (or
    /// `'static`, for an owned manager's `SendManager` impl) proof can need
    /// lifetimes that rustc erases there (rust-lang/rust#110338).
    #[track_caller]
    fn node<M, G, F>(
        mut manager: M,
        exit: G,
        detach: Option<DetachFn<M>>,
    ) -> (Erased<'a, K>, SendPtr<M>, &'static str)
    where
        M: AsyncContextManager + 'a,
        EntryImpl<M, G, F>: Entry + 'a,
        K: Admits<EntryImpl<M, G, F>>,
    {
        let name = manager.name();
        // Asked just before the enter, as `with_scope!` asks (and, as
        // there, a panic in them is the manager's).
        let bounds = catch_unwind(AssertUnwindSafe(|| {
            manager.deadline().is_some() || manager.__cut_by().is_some()
        }));
        if !matches!(bounds, Ok(false)) {
            // Dropped first, under a catch: a manager whose drop panics
            // must not panic again inside the unwind that follows (an abort).
            let _ = catch_unwind(AssertUnwindSafe(move || drop(manager)));
            match bounds {
                Err(payload) => resume_unwind(payload),
                Ok(_) => refuse_bounds(name),
            }
        }
        let node = Box::new(Node {
            next: None,
            entry: EntryImpl {
                name,
                manager: true,
                state: State::Entered { manager, exit },
                detach,
            },
        });
        let node = NonNull::from(Box::leak(node));
        // SAFETY: the node is ours and alive until `Entering` frees or
        // pushes it; the manager in it is not touched by anything else
        // while its enter (and then the value it returns, borrowing the
        // stack for `'s`) lives.
        let manager: *mut M = unsafe {
            match &mut (*node.as_ptr()).entry.state {
                State::Entered { manager, .. } => manager,
                _ => unreachable!("a new entry"),
            }
        };
        let node = Erased(erase::<'a, EntryImpl<M, G, F>>(node), PhantomData);
        (node, SendPtr(manager), name)
    }

    /// Enters the manager at `lend` (in `node`, from [`Core::node`]); the
    /// node is pushed once the enter succeeds.
    fn entering<'s, M>(
        &'s self,
        (node, lend, name): (Erased<'a, K>, SendPtr<M>, &'static str),
    ) -> impl Future<Output = Result<M::Value<'s>, M::Error>> + 's
    where
        M: AsyncContextManager + 'a,
        M::Error: Into<BoxError>,
    {
        Entering {
            core: self,
            name,
            node: Some(node),
            // SAFETY: see `Core::node`; `'s` is the borrow of the stack,
            // which frees entries only through `&mut self`.
            enter: Some(unsafe { lazy_enter::<'s, M>(lend) }),
        }
    }
}

/// The enter of the manager at `lend`, made on its first poll. A fn of its
/// own, generic over the manager only: a closure written in
/// [`Core::enter`] would carry that fn's generics (the entry's exit future
/// and the bounds naming it) into the type of every future awaiting the
/// enter, where rustc proves them again with lifetimes erased
/// (rust-lang/rust#110338) — which an owned manager's `'static` proof
/// (its `SendManager` impl) would then fail.
///
/// # Safety
///
/// The manager at `lend` is alive and not aliased for `'s`.
unsafe fn lazy_enter<'s, M: AsyncContextManager + 's>(
    lend: SendPtr<M>,
) -> impl Code<Output = Result<M::Value<'s>, M::Error>> + 's {
    // SAFETY: per the caller.
    Lazy::new(move || unsafe { lend.get::<'s>() }.enter())
}

/// A deadline or a token bounds the block its manager guards, and a stack
/// entry guards none: bounding nothing would be a silent skip (a timeout
/// that never fires), so the entry is refused.
#[cold]
#[track_caller]
fn refuse_bounds(name: &str) -> ! {
    panic!(
        "async-contextlib: `{name}` bounds the block it guards (a deadline or a \
         cancellation token), and an ExitStack entry guards no block: enter it in \
         the `with_scope!` around the stack instead, as in \
         `with_scope!(timeout(limit), ExitStack::new() as stack => ..)`"
    )
}

/// A node not yet linked, owned by its enter future; `K` says which
/// entries it may hold, and so whether it is `Send`.
struct Erased<'a, K>(Link<'a>, PhantomData<K>);

// SAFETY: a `SendStack` node holds a `Send` entry (`SendStack: Admits<T>`
// only for `T: Send`), owned by this, like a `Box`.
unsafe impl Send for Erased<'_, SendStack> {}

impl<K> Erased<'_, K> {
    /// Frees the node (and drops what it holds).
    fn free(self) {
        Owned(self.0).free();
    }
}

/// The manager inside a node not yet pushed, for its enter.
struct SendPtr<M>(*mut M);

// SAFETY: points into a node owned by the `Entering` future that holds
// this, like a `&mut M`.
unsafe impl<M: Send> Send for SendPtr<M> {}

impl<M> SendPtr<M> {
    /// # Safety
    ///
    /// The pointee is alive and not aliased for `'s`.
    unsafe fn get<'s>(self) -> &'s mut M {
        // SAFETY: per the caller.
        unsafe { &mut *self.0 }
    }
}

pin_project! {
    /// A stack's `enter`: enters the manager in its node, then pushes the
    /// node; dropped or failed first, frees the node (nothing was entered).
    struct Entering<'s, 'a, K, L> {
        core: &'s Core<'a, K>,
        name: &'static str,
        node: Option<Erased<'a, K>>,
        #[pin]
        enter: Option<L>,
    }

    impl<'s, 'a, K, L> PinnedDrop for Entering<'s, 'a, K, L> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            // The enter (borrowing the manager) goes before its node.
            this.enter.set(None);
            if let Some(node) = this.node.take() {
                node.free();
            }
        }
    }
}

impl<K, L, V, E> Future for Entering<'_, '_, K, L>
where
    L: Code<Output = Result<V, E>>,
    E: Into<BoxError>,
{
    type Output = Result<V, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut enter = this
            .enter
            .as_mut()
            .as_pin_mut()
            .expect("async-contextlib: stack enter polled after it finished");
        let mut salvage = None;
        let polled = catch_unwind(AssertUnwindSafe(|| {
            enter.as_mut().poll_code(cx, &mut salvage)
        }));
        let result = match polled {
            Ok(poll) => ready!(poll),
            Err(payload) => {
                // An enter that returned its value and then panicked as it
                // was dropped entered all the same: its entry is pushed
                // (so its exit runs as the stack unwinds) before the panic
                // goes on to the block.
                let name = this.name;
                if let Some(Ok(value)) = salvage {
                    this.enter.set(None);
                    let node = this.node.take().expect("entered once");
                    stats::entered(name);
                    this.core.push(Owned(node.0));
                    // The block does not get it (nodes never move, so it
                    // may still borrow its entry here); a panic in its drop
                    // is reported, the enter's goes on.
                    if catch_unwind(AssertUnwindSafe(move || drop(value))).is_err() {
                        diag::report_exit_error(
                            name,
                            "exit stack",
                            "the value its panicking enter returned panicked as it was dropped",
                        );
                    }
                } else {
                    if let Some(Err(error)) = salvage {
                        let error: BoxError = error.into();
                        diag::report_exit_error(
                            name,
                            "exit stack",
                            &format!("its enter failed: {error} (then panicked as it was dropped)"),
                        );
                    }
                    // Not entered. The panicked enter and its node are
                    // dropped here, not by the unwind below, where a second
                    // panic would abort: it is reported instead.
                    let (enter, node) = (&mut this.enter, this.node.take());
                    let dropped = catch_unwind(AssertUnwindSafe(move || {
                        enter.set(None);
                        if let Some(node) = node {
                            node.free();
                        }
                    }));
                    if dropped.is_err() {
                        diag::report_exit_error(
                            name,
                            "exit stack",
                            "its panicked enter panicked again while it was dropped",
                        );
                    }
                }
                resume_unwind(payload);
            }
        };
        this.enter.set(None);
        let node = this.node.take().expect("entered once");
        match result {
            Ok(value) => {
                stats::entered(this.name);
                this.core.push(Owned(node.0));
                Poll::Ready(Ok(value))
            }
            Err(error) => {
                node.free();
                Poll::Ready(Err(error))
            }
        }
    }
}

/// Registers a callback entry.
fn push_callback_node<'a, K, C, Fut>(core: &Core<'a, K>, name: &'static str, callback: C)
where
    C: FnOnce(Outcome) -> Fut + 'a,
    Fut: Future + 'a,
    Fut::Output: ExitResult,
    K: Admits<CallbackEntry<C, Fut>>,
{
    let node = Owned::new(Box::new(Node {
        next: None,
        entry: EntryImpl {
            name,
            manager: false,
            state: State::Entered {
                manager: callback,
                exit: run_callback::<C, Fut> as fn(C, Outcome) -> Fut,
            },
            detach: None,
        },
    }));
    let erased = erase::<'a, CallbackEntry<C, Fut>>(ManuallyDrop::new(node).0);
    core.push(Owned(erased));
}

type CallbackEntry<C, Fut> = EntryImpl<C, fn(C, Outcome) -> Fut, Fut>;

fn run_callback<C: FnOnce(Outcome) -> Fut, Fut>(callback: C, outcome: Outcome) -> Fut {
    callback(outcome)
}

/// Unwinds a stack: every entry's exit, newest first, each once.
///
/// Each failure is counted once, when it is settled: reported, or returned.
/// What it returns to a caller that counts it (the scope or stack it is a
/// manager of) is left to that caller.
struct Unwind<'s, 'a, K> {
    core: &'s mut Core<'a, K>,
    outcome: Outcome,
    caller_counts: bool,
    /// The first failure, and the entry it came from.
    error: Option<(&'static str, BoxError)>,
    panic: Option<(&'static str, Payload)>,
}

impl<'a, K> Core<'a, K> {
    /// Unwinds with `outcome`; `caller_counts` when run as a manager's exit.
    fn unwind(&mut self, outcome: Outcome, caller_counts: bool) -> Unwind<'_, 'a, K> {
        Unwind {
            core: self,
            outcome,
            caller_counts,
            error: None,
            panic: None,
        }
    }
}

const STACK: &str = "exit stack";

impl<K> Unwind<'_, '_, K> {
    /// The first error is the result; any later one is reported.
    fn failed(&mut self, name: &'static str, error: BoxError) {
        if self.error.is_none() && self.panic.is_none() {
            if self.outcome.is_success() {
                self.outcome = Outcome::Failed(Failure::new(&*error));
            }
            self.error = Some((name, error));
        } else {
            stats::exit_failed(name);
            diag::report_exit_error(name, STACK, &error.to_string());
        }
    }

    /// The first panic is resumed at the end; any later one is reported.
    fn panicked(&mut self, name: &'static str, payload: Payload) {
        if self.panic.is_none() {
            self.outcome = Outcome::Panicked(Panic::from_payload(&*payload));
            self.panic = Some((name, payload));
        } else {
            stats::exit_failed(name);
            let panic = Panic::from_payload(&*payload);
            diag::report_exit_error(name, STACK, &format!("panicked: {}", panic.message()));
        }
    }

    /// Counts the failure (of entry `name`) handed to the caller, unless
    /// the caller does.
    fn settle(&self, name: &'static str) {
        if !self.caller_counts {
            stats::exit_failed(name);
        }
    }
}

impl<K> Future for Unwind<'_, '_, K> {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        while let Some(top) = this.core.top() {
            // SAFETY: `&mut` to the stack: no value lent from it is alive;
            // the entry stays in place until its exit is done.
            let entry = unsafe { &mut (*top.as_ptr()).entry };
            let exited = ready!(entry.poll_exit(&this.outcome, cx));
            let (name, manager) = (entry.name(), entry.is_manager());
            this.core.pop().expect("the top").free();
            if manager {
                stats::exited(name);
            }
            match exited {
                Ok(Ok(())) => {}
                Ok(Err(error)) => this.failed(name, error),
                Err(payload) => this.panicked(name, payload),
            }
        }
        if let Some((name, payload)) = this.panic.take() {
            if let Some((first, error)) = this.error.take() {
                stats::exit_failed(first);
                diag::report_exit_error(first, STACK, &error.to_string());
            }
            this.settle(name);
            resume_unwind(payload);
        }
        Poll::Ready(match this.error.take() {
            Some((name, error)) => {
                this.settle(name);
                Err(error)
            }
            None => Ok(()),
        })
    }
}

impl<K> Drop for Unwind<'_, '_, K> {
    /// Dropped mid-unwind (its future cancelled): a failure it held would
    /// reach no one, so it is reported and counted here. The entries left
    /// exit when the stack is dropped.
    fn drop(&mut self) {
        if let Some((name, error)) = self.error.take() {
            stats::exit_failed(name);
            diag::report_exit_error(name, "exit stack, cancelled", &error.to_string());
        }
        if let Some((name, payload)) = self.panic.take() {
            stats::exit_failed(name);
            let panic = Panic::from_payload(&*payload);
            diag::report_exit_error(
                name,
                "exit stack, cancelled",
                &format!("panicked: {}", panic.message()),
            );
        }
    }
}

impl<K> Core<'_, K> {
    /// Moves every entry left into a stack of its own for the exit driver,
    /// if every one is an owned manager not yet exiting (see
    /// [`SendManager::__detach`]: each entry's own impl proves it
    /// `'static`, so no bound on `enter` is needed, which rustc could not
    /// check inside a future awaiting it, rust-lang/rust#110338). If one
    /// is not, the newer entries already moved are finished in place now,
    /// and the rest are left here, to be finished in place next: the order
    /// holds either way.
    fn detach_all(&mut self, outcome: &Outcome) -> Option<Core<'static, SendStack>> {
        let mut detached = Vec::new();
        while let Some(top) = self.top() {
            // SAFETY: dropping the stack: nothing else reaches its nodes.
            let entry: &mut (dyn Entry + '_) = unsafe { &mut (*top.as_ptr()).entry };
            let name = entry.name();
            // `__detach` is the manager's impl: a panic there must not
            // escape this destructor.
            let Ok(moved) = catch_unwind(AssertUnwindSafe(|| entry.detach())) else {
                diag::report_exit_error(name, STACK, "panicked while being detached; not exited");
                break;
            };
            let Some(moved) = moved else { break };
            // What is left of the entry (`Done`) holds nothing.
            self.pop().expect("the top").free();
            detached.push(moved);
        }
        let core = Core::<'static, SendStack> {
            head: Mutex::new(None),
            handed_over: Some(outcome.clone()),
            _own: PhantomData,
        };
        for moved in detached.into_iter().rev() {
            core.push(Owned(ManuallyDrop::new(moved).0));
        }
        if self.top().is_some() {
            // Finished in place, newest first (its drop), before the rest.
            drop(core);
            return None;
        }
        Some(core)
    }
}

/// A cancelled stack of owned entries, unwound by the exit driver after
/// what the scope being dropped around it collected so far (as an
/// in-place finish would be), beside that scope's other children.
fn hand_over(mut core: Core<'static, SendStack>, outcome: Outcome) {
    const NAME: &str = "async_contextlib::ExitStack";
    let inner = cascade::take_innermost();
    let job = Job::new(NAME, JobKind::Stack, async move {
        if let Some(inner) = inner {
            inner.await;
        }
        // Each entry counts its exit, and its failure, itself.
        if let Err(error) = core.unwind(outcome, false).await {
            diag::report_exit_error(NAME, "exit stack, cancelled", &error.to_string());
        }
        Ok::<(), std::convert::Infallible>(())
    });
    cascade::push_child(job.into_node());
}

impl<K> Drop for Core<'_, K> {
    /// Dropped with entries left (its scope cancelled, or never closed):
    /// each exits once with `Cancelled` (`Panicked` if a panic is unwinding
    /// through it), newest first, after what the scope being dropped around
    /// it collected so far — scopes nested in it, managers entered after
    /// it. If every entry is an owned manager, they are handed to the exit
    /// driver and run after the drop (SPEC §5: such a stack is owned);
    /// otherwise they are finished in place (bounded, see
    /// `driver/in_place.rs`).
    fn drop(&mut self) {
        if self
            .head
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            return;
        }
        // Dropped by a panic unwinding through it, entries see that panic
        // (its payload is not reachable from here, only the fact).
        let handed_over = self.handed_over.take();
        let driver_stack = handed_over.is_some();
        let outcome = handed_over.unwrap_or_else(|| dropped_outcome("the exit stack"));
        if !driver_stack && let Some(core) = self.detach_all(&outcome) {
            hand_over(core, outcome);
            return;
        }
        let head = self.head.get_mut().unwrap_or_else(PoisonError::into_inner);
        let Some(first) = head.take() else {
            return;
        };
        let mut next = Some(first);
        while let Some(node) = next {
            // SAFETY: dropping the stack: nothing else reaches its nodes.
            let entry: &mut (dyn Entry + '_) = unsafe { &mut (*node.as_ptr()).entry };
            // SAFETY: as above.
            next = unsafe { (*node.as_ptr()).next };
            let (name, manager) = (entry.name(), entry.is_manager());
            let work = std::future::poll_fn(|cx| entry.poll_exit(&outcome, cx));
            let ran = in_place::finish_innermost(name, work);
            if manager {
                in_place::record::<BoxError>(name, in_place::STACK_DROPPED, ran);
            } else {
                in_place::record_callback(name, ran);
            }
            // An exit cut short is dropped with its entry: a panic there
            // must not skip the older entries (or abort an unwinding thread).
            let free = AssertUnwindSafe(move || Owned(node).free());
            if catch_unwind(free).is_err() {
                diag::report_exit_error(name, STACK, "panicked while being dropped");
            }
        }
    }
}

/// Python's `AsyncExitStack`: managers (and cleanup callbacks) entered at
/// run time, exited newest first, each exactly once — when the stack is
/// closed, when its scope ends (it is itself a manager), on error, on
/// panic, and when the future holding it is dropped.
///
/// ```
/// use async_contextlib::{ExitStack, nullcontext, with_scope};
///
/// # futures::executor::block_on(async {
/// let sum: Result<u32, async_contextlib::BoxError> = with_scope!(ExitStack::new() as stack => {
///     let mut total = 0;
///     for n in 1..=3 {
///         total += stack.enter(nullcontext(n)).await?; // several values at once
///     }
///     stack.push_callback(async { /* runs first at unwind */ });
///     Ok(total)
/// });
/// assert_eq!(sum.unwrap(), 6);
/// # });
/// ```
///
/// * [`enter`](Self::enter) takes `&self`: values of several entries are
///   held at once, including borrows of a generated manager's local (an
///   entry never moves until it exits). An enter that fails leaves the
///   stack as it was.
/// * Unwinding goes on past a failing or panicking exit: the outcome the
///   next exit sees becomes that failure; the first error is returned (a
///   panic resumes once unwinding is done); later ones are reported and
///   counted.
/// * Cancelled (the stack dropped with entries left), each entry exits
///   once with `Cancelled`, newest first, before the exits of the scopes
///   around the stack. If every entry left is an owned manager — a
///   generated one whose signature borrows nothing, a hand-written
///   [`OwnedManager`](crate::OwnedManager) with
///   [`send_manager!`](crate::send_manager), the library's own owned
///   managers — the stack is owned: its exits are handed to the exit driver
///   and run on the runtime after the drop, like `with_scope!`'s owned
///   managers (`drain().await` waits for them). Otherwise (a borrowing
///   entry, a callback, or any `LocalExitStack`) each is finished in place,
///   bounded by [`in_place_limit`](crate::in_place_limit): on a
///   multi-thread runtime before the drop returns; on a current-thread
///   runtime an exit that waits on that runtime's timers or I/O cannot
///   progress there, and is abandoned once the limit passes, reported and
///   counted in [`stats`](crate::stats) (`abandoned`). Where that matters,
///   `stack.close().await` before the point where the task may be
///   cancelled, or [`shield`](crate::shield) the waiting part of the exit.
/// * One allocation per entry; unwinding is a loop, not recursion.
/// * `ExitStack` is `Send + Sync` and takes [`SendManager`]s; for managers
///   whose exit is not `Send`, use [`LocalExitStack`].
pub struct ExitStack<'a> {
    core: Core<'a, SendStack>,
}

// SAFETY: the list owns its nodes, whose entries are all `Send` (only
// `SendStack: Admits<T>` for `T: Send` lets one in): moving the list moves
// them.
unsafe impl Send for Core<'_, SendStack> {}
// SAFETY: through `&Core` only the list's head is touched, under its
// mutex, and new nodes are pushed; entries are reached only through
// `&mut Core` or by their own enter future.
unsafe impl Sync for Core<'_, SendStack> {}

fn erase<'a, T: Entry + 'a>(node: NonNull<Node<'a, T>>) -> Link<'a> {
    node
}

impl std::fmt::Debug for ExitStack<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExitStack").finish_non_exhaustive()
    }
}

impl Default for ExitStack<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> ExitStack<'a> {
    /// An empty stack.
    #[must_use]
    pub const fn new() -> Self {
        ExitStack { core: Core::new() }
    }

    /// Enters `manager` and returns its value (Python's
    /// `enter_async_context`). Its exit runs when the stack unwinds.
    ///
    /// # Errors
    ///
    /// The manager's enter error; the stack is then as it was.
    ///
    /// # Panics
    ///
    /// If the manager bounds the block it guards ([`timeout`](crate::timeout),
    /// [`move_on_after`](crate::move_on_after), [`cancelled_by`](crate::cancelled_by),
    /// a manager whose [`deadline`](crate::AsyncContextManager::deadline) is
    /// `Some`): an entry guards no block, so its bound would bound nothing.
    /// Enter such a manager in the `with_scope!` around the stack. Python's
    /// `enter_async_context(asyncio.timeout(..))` cancels the task itself,
    /// which has no counterpart here.
    ///
    /// ```should_panic
    /// use std::time::Duration;
    /// use async_contextlib::{timeout, with_scope, BoxError, ExitStack};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let _: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
    ///     stack.enter(timeout(Duration::from_secs(1))).await?; // panics here
    ///     Ok(())
    /// });
    /// # }
    /// ```
    #[track_caller]
    pub fn enter<'s, M>(
        &'s self,
        manager: M,
    ) -> impl Future<Output = Result<M::Value<'s>, M::Error>> + 's
    where
        M: SendManager + 'a,
        M::Error: Into<BoxError>,
    {
        let detach = Some(detach_send::<M> as DetachFn<M>);
        self.core
            .entering(Core::node(manager, M::exit_owned, detach))
    }

    /// Registers async cleanup, run when the stack unwinds (Python's
    /// `push_async_callback`). It may return `()` or a `Result`.
    pub fn push_callback<Fut>(&self, callback: Fut)
    where
        Fut: Future + Send + 'a,
        Fut::Output: ExitResult,
    {
        push_callback_node(
            &self.core,
            "async_contextlib::ExitStack::push_callback",
            move |_: Outcome| callback,
        );
    }

    /// Registers an exit callback that sees the unwinding's [`Outcome`]
    /// (Python's `push_async_exit`).
    pub fn push_exit<C, Fut>(&self, exit: C)
    where
        C: FnOnce(Outcome) -> Fut + Send + 'a,
        Fut: Future + Send + 'a,
        Fut::Output: ExitResult,
    {
        push_callback_node(&self.core, "async_contextlib::ExitStack::push_exit", exit);
    }

    /// Moves every registered exit into a new stack, leaving this one
    /// empty (Python's `pop_all`): the transfer-ownership idiom.
    #[must_use = "the exits moved into the new stack run when it unwinds or is dropped"]
    pub fn pop_all(&mut self) -> ExitStack<'a> {
        ExitStack {
            core: self.core.take(),
        }
    }

    /// Unwinds now (Python's `aclose`): every exit, newest first, once,
    /// with `Outcome::Success`. The stack is empty afterwards.
    ///
    /// # Errors
    ///
    /// The first exit that failed; later failures are reported and counted.
    pub fn close(&mut self) -> impl Future<Output = Result<(), BoxError>> + Send + '_ {
        self.core.unwind(Outcome::Success, false)
    }
}

/// What a `with_scope!` over a stack binds: the stack itself, through a
/// `&mut` (so that `close` and `pop_all` work in the block too). A plain
/// `&mut` would make `stack.enter(cm)` pick the manager trait's `enter`
/// (whose receiver matches first) over the stack's.
#[derive(Debug)]
pub struct StackRef<'s, S>(&'s mut S);

impl<S> std::ops::Deref for StackRef<'_, S> {
    type Target = S;
    fn deref(&self) -> &S {
        self.0
    }
}

impl<S> std::ops::DerefMut for StackRef<'_, S> {
    fn deref_mut(&mut self) -> &mut S {
        self.0
    }
}

impl<'a> AsyncContextManager for ExitStack<'a> {
    type Value<'s>
        = StackRef<'s, ExitStack<'a>>
    where
        Self: 's;
    type Error = BoxError;

    fn enter(&mut self) -> impl Future<Output = Result<StackRef<'_, ExitStack<'a>>, BoxError>> {
        std::future::ready(Ok(StackRef(self)))
    }

    fn exit(&mut self, outcome: Outcome) -> impl Future<Output = Result<(), BoxError>> {
        self.core.unwind(outcome, true)
    }

    fn name(&self) -> &'static str {
        "async_contextlib::ExitStack"
    }

    const __DROP_CANCELS: bool = true;
}

impl SendManager for ExitStack<'_> {
    async fn exit_owned(mut self, outcome: Outcome) -> Result<(), BoxError> {
        self.core.unwind(outcome, true).await
    }
}

/// [`ExitStack`] for managers whose exit is not `Send` (any manager); not
/// `Send` itself.
pub struct LocalExitStack<'a> {
    core: Core<'a, LocalStack>,
}

impl std::fmt::Debug for LocalExitStack<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalExitStack").finish_non_exhaustive()
    }
}

impl Default for LocalExitStack<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> LocalExitStack<'a> {
    /// An empty stack.
    #[must_use]
    pub const fn new() -> Self {
        LocalExitStack { core: Core::new() }
    }

    /// See [`ExitStack::enter`].
    ///
    /// # Errors
    ///
    /// The manager's enter error; the stack is then as it was.
    ///
    /// # Panics
    ///
    /// As [`ExitStack::enter`], if the manager bounds the block it guards.
    #[track_caller]
    pub fn enter<'s, M>(
        &'s self,
        manager: M,
    ) -> impl Future<Output = Result<M::Value<'s>, M::Error>> + 's
    where
        M: AsyncContextManager + 'a,
        M::Error: Into<BoxError>,
    {
        self.core
            .entering(Core::node(manager, exit_task::<M>, None))
    }

    /// See [`ExitStack::push_callback`].
    pub fn push_callback<Fut>(&self, callback: Fut)
    where
        Fut: Future + 'a,
        Fut::Output: ExitResult,
    {
        push_callback_node(
            &self.core,
            "async_contextlib::LocalExitStack::push_callback",
            move |_: Outcome| callback,
        );
    }

    /// See [`ExitStack::push_exit`].
    pub fn push_exit<C, Fut>(&self, exit: C)
    where
        C: FnOnce(Outcome) -> Fut + 'a,
        Fut: Future + 'a,
        Fut::Output: ExitResult,
    {
        push_callback_node(
            &self.core,
            "async_contextlib::LocalExitStack::push_exit",
            exit,
        );
    }

    /// See [`ExitStack::pop_all`].
    #[must_use = "the exits moved into the new stack run when it unwinds or is dropped"]
    pub fn pop_all(&mut self) -> LocalExitStack<'a> {
        LocalExitStack {
            core: self.core.take(),
        }
    }

    /// See [`ExitStack::close`].
    ///
    /// # Errors
    ///
    /// The first exit that failed; later failures are reported and counted.
    pub fn close(&mut self) -> impl Future<Output = Result<(), BoxError>> + '_ {
        self.core.unwind(Outcome::Success, false)
    }
}

impl<'a> AsyncContextManager for LocalExitStack<'a> {
    type Value<'s>
        = StackRef<'s, LocalExitStack<'a>>
    where
        Self: 's;
    type Error = BoxError;

    fn enter(
        &mut self,
    ) -> impl Future<Output = Result<StackRef<'_, LocalExitStack<'a>>, BoxError>> {
        std::future::ready(Ok(StackRef(self)))
    }

    fn exit(&mut self, outcome: Outcome) -> impl Future<Output = Result<(), BoxError>> {
        self.core.unwind(outcome, true)
    }

    fn name(&self) -> &'static str {
        "async_contextlib::LocalExitStack"
    }

    const __DROP_CANCELS: bool = true;
}
