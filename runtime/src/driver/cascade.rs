//! The tree of scopes being dropped on this thread, and the exits they hand
//! over, in the order they must run.
//!
//! Rust drops a cancelled future synchronously, from the outside in: a
//! scope's runner (`scope/step.rs`) *opens* a frame for the scope before the
//! code it holds is dropped, so that scopes nested in that code open their
//! own frames on top of it. What a frame collects:
//!
//! * **children** — the nodes of scopes nested in it (closed while it was
//!   open), and shielded work. Siblings (branches of one `join!`/`select!`)
//!   are children of one frame and run *concurrently*: one may wait on what
//!   another's exit releases, as Python's task groups unwind;
//! * **own** — the scope's own detached exits, innermost first, run one
//!   after the other once every child is done.
//!
//! When the scope itself is dropped (`close`), its frame becomes one node:
//! handed to the frame below (its parent), or spawned if there is none.
//! A *barrier* frame (an in-place exit running, see `in_place.rs`) is not a
//! parent: what is closed above it runs at once, so an exit finished in
//! place never waits on work queued behind it.
//!
//! Every entry point survives thread-local teardown and re-entrancy: when
//! the frames cannot be reached, work is spawned directly.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;

use super::spawn;

/// A unit of detached work (a job, or a subtree of them), ready to run.
pub(crate) type Node = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    /// A scope being dropped, by address.
    Scope(usize),
    /// An exit finishing in place.
    Barrier,
}

/// Nodes in the order they were added, the first held inline: most frames
/// collect one exit, which then costs no allocation here
/// (`benches/instructions.sh cancelled`).
#[derive(Default)]
struct Nodes {
    first: Option<Node>,
    rest: Vec<Node>,
}

impl Nodes {
    fn push(&mut self, node: Node) {
        if self.first.is_none() {
            self.first = Some(node);
        } else {
            self.rest.push(node);
        }
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// The one node, if there is exactly one.
    fn single(self) -> Option<Node> {
        if self.rest.is_empty() {
            self.first
        } else {
            None
        }
    }

    fn in_order(self) -> impl Iterator<Item = Node> {
        self.first.into_iter().chain(self.rest)
    }
}

struct Frame {
    key: Key,
    children: Nodes,
    own: Nodes,
}

impl Frame {
    fn new(key: Key) -> Frame {
        Frame {
            key,
            children: Nodes::default(),
            own: Nodes::default(),
        }
    }

    /// Children concurrently, then own exits in order; `None` if empty.
    fn into_node(self) -> Option<Node> {
        match (self.children.len(), self.own.len()) {
            (0, 0) => None,
            (0, 1) => self.own.single(),
            (1, 0) => self.children.single(),
            _ => {
                let (children, own) = (self.children, self.own);
                Some(Box::pin(async move {
                    futures_util::future::join_all(children.in_order()).await;
                    for job in own.in_order() {
                        job.await;
                    }
                }))
            }
        }
    }

    /// Folds frames left open above this one (their scopes were never
    /// closed, e.g. leaked) into it as children.
    fn absorb(&mut self, above: Vec<Frame>) {
        for frame in above {
            if let Some(node) = frame.into_node() {
                self.children.push(node);
            }
        }
    }
}

thread_local! {
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's frames; `None` if they are gone (thread-local
/// teardown) or already borrowed (re-entered from a drop inside `f`).
fn with<R>(f: impl FnOnce(&mut Vec<Frame>) -> R) -> Option<R> {
    FRAMES
        .try_with(|frames| {
            frames
                .try_borrow_mut()
                .ok()
                .map(|mut frames| f(&mut frames))
        })
        .ok()
        .flatten()
}

fn position(frames: &[Frame], key: Key) -> Option<usize> {
    frames.iter().rposition(|f| f.key == key)
}

/// Marks the scope at `addr` as being dropped.
pub(crate) fn open(addr: usize) {
    with(|frames| frames.push(Frame::new(Key::Scope(addr))));
}

/// Takes frame `key` (with anything left open above it) off the stack.
fn pop(frames: &mut Vec<Frame>, key: Key) -> Option<Frame> {
    let pos = position(frames, key)?;
    let above = frames.split_off(pos + 1);
    let mut frame = frames.pop()?;
    frame.absorb(above);
    Some(frame)
}

/// The scope at `addr` is gone: its frame (if it opened one, or had work
/// queued) becomes a node of its parent, or is spawned.
pub(crate) fn close(addr: usize) {
    let orphan = with(|frames| {
        let node = pop(frames, Key::Scope(addr))?.into_node()?;
        match frames.last_mut() {
            Some(parent) if parent.key != Key::Barrier => {
                parent.children.push(node);
                None
            }
            _ => Some(node),
        }
    })
    .flatten();
    if let Some(node) = orphan {
        spawn(node);
    }
}

/// Queues work on the frame of the scope at `addr` — opening it if the
/// scope was dropped without a runner in flight (its `close` follows) — as
/// a child (runs before the scope's own exits, beside its siblings) or as
/// one of its own exits (after the ones queued before it). Spawned at once
/// where the frames cannot be reached.
pub(crate) fn add(addr: usize, node: Node, as_child: bool) {
    let mut node = Some(node);
    with(|frames| {
        let pos = position(frames, Key::Scope(addr)).unwrap_or_else(|| {
            frames.push(Frame::new(Key::Scope(addr)));
            frames.len() - 1
        });
        let frame = &mut frames[pos];
        let list = if as_child {
            &mut frame.children
        } else {
            &mut frame.own
        };
        if let Some(node) = node.take() {
            list.push(node);
        }
    });
    if let Some(node) = node {
        spawn(node);
    }
}

/// Queues work beside whatever is being dropped now (a shielded future
/// dropped inside a scope), or spawns it if nothing is.
pub(crate) fn push_child(node: Node) {
    let mut node = Some(node);
    with(|frames| match frames.last_mut() {
        Some(top) if top.key != Key::Barrier => {
            if let Some(node) = node.take() {
                top.children.push(node);
            }
        }
        _ => {}
    });
    if let Some(node) = node {
        spawn(node);
    }
}

/// What the scope at `addr` has collected so far (inner exits, nested
/// scopes), to run before an exit finished in place; the frame stays open.
pub(crate) fn take(addr: usize) -> Option<Node> {
    with(|frames| {
        let pos = position(frames, Key::Scope(addr))?;
        take_at(frames, pos)
    })
    .flatten()
}

/// What the innermost scope being dropped on this thread has collected so
/// far, for a value dropped inside it (an `ExitStack` in a block, or a
/// scope's manager) whose exits finish in place: everything dropped before
/// it in that scope is nested in it or entered after it, so it runs first.
/// `None` inside an in-place exit (a barrier), or outside any drop.
pub(crate) fn take_innermost() -> Option<Node> {
    with(|frames| {
        let top = frames.len().checked_sub(1)?;
        if frames[top].key == Key::Barrier {
            return None;
        }
        take_at(frames, top)
    })
    .flatten()
}

fn take_at(frames: &mut [Frame], pos: usize) -> Option<Node> {
    let frame = &mut frames[pos];
    Frame {
        key: frame.key,
        children: std::mem::take(&mut frame.children),
        own: std::mem::take(&mut frame.own),
    }
    .into_node()
}

/// Pops its frame when dropped (also on unwind), spawning what it holds.
struct Popper(Key);

impl Drop for Popper {
    fn drop(&mut self) {
        let key = self.0;
        if let Some(Some(node)) = with(|frames| pop(frames, key).and_then(Frame::into_node)) {
            spawn(node);
        }
    }
}

/// Runs `f` (an exit finishing in place) behind a barrier: scopes it drops
/// do not wait for it, they run at once.
pub(crate) fn barrier<R>(f: impl FnOnce() -> R) -> R {
    with(|frames| frames.push(Frame::new(Key::Barrier)));
    let _pop = Popper(Key::Barrier);
    f()
}

/// Runs `drop` with a frame open for `addr` and returns what it collected,
/// for the caller to run inline (a deadline cut a block).
pub(crate) fn drop_in_cascade(addr: usize, drop: impl FnOnce()) -> Option<Node> {
    open(addr);
    {
        // On unwind, what was collected is spawned.
        let popper = Popper(Key::Scope(addr));
        drop();
        std::mem::forget(popper);
    }
    with(|frames| pop(frames, Key::Scope(addr)).and_then(Frame::into_node)).flatten()
}
