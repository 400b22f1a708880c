//! Property test (issues 4 and 8): random nestings of `with_scope!` (depth
//! and width chosen by proptest, run by a recursive async fn; the children
//! of a scope run one after the other, or as siblings in one `join_all`)
//! with random outcomes at random points (enter `Err`, body `Err`, exit
//! `Err`, cancellation after a random number of polls), on a
//! current-thread runtime, a multi-thread one, and a `LocalSet` on a
//! multi-thread one. Checks that every entered manager exits exactly once,
//! that a scope's managers exit LIFO and one at a time, and that a scope's
//! managers exit only after every scope nested in it is done (the driver's
//! tree order).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_contextlib::{
    AsyncContextManager, Outcome, OwnedManager, async_context_manager, drain, with_scope, yield_,
};
use proptest::prelude::*;

#[derive(Debug)]
struct PropError;

impl std::fmt::Display for PropError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("prop error")
    }
}

#[derive(Clone, Copy, Debug)]
struct Spec {
    generated: bool,
    enter_fails: bool,
    exit_fails: bool,
    enter_yields: bool,
    exit_yields: bool,
}

#[derive(Clone, Debug)]
struct Node {
    managers: Vec<Spec>,
    children: Vec<Node>,
    /// The children run as siblings, concurrently.
    concurrent: bool,
    body_fails: bool,
    body_yields: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    Enter(u32),
    ExitStart(u32),
    ExitDone(u32),
}

#[derive(Default)]
struct Ctx {
    next: AtomicU32,
    next_scope: AtomicU32,
    log: Mutex<Vec<Ev>>,
    /// Manager → the scope it belongs to.
    scope_of: Mutex<HashMap<u32, u32>>,
    /// Scope → the scope its `with_scope!` is nested in.
    parent: Mutex<HashMap<u32, u32>>,
}

impl Ctx {
    fn push(&self, ev: Ev) {
        self.log.lock().unwrap().push(ev);
    }
}

struct Hand {
    id: u32,
    spec: Spec,
    ctx: Arc<Ctx>,
}

impl AsyncContextManager for Hand {
    type Value<'a> = u32;
    type Error = PropError;
    async fn enter(&mut self) -> Result<u32, PropError> {
        if self.spec.enter_yields {
            tokio::task::yield_now().await;
        }
        if self.spec.enter_fails {
            return Err(PropError);
        }
        self.ctx.push(Ev::Enter(self.id));
        Ok(self.id)
    }
    async fn exit(&mut self, _: Outcome) -> Result<(), PropError> {
        self.ctx.push(Ev::ExitStart(self.id));
        if self.spec.exit_yields {
            tokio::task::yield_now().await;
        }
        self.ctx.push(Ev::ExitDone(self.id));
        if self.spec.exit_fails {
            Err(PropError)
        } else {
            Ok(())
        }
    }
}

impl OwnedManager for Hand {}

#[async_context_manager]
async fn generated(id: u32, spec: Spec, ctx: Arc<Ctx>) -> Result<u32, PropError> {
    if spec.enter_yields {
        tokio::task::yield_now().await;
    }
    if spec.enter_fails {
        Err(PropError)?;
    }
    ctx.push(Ev::Enter(id));
    let _outcome = yield_!(id);
    ctx.push(Ev::ExitStart(id));
    if spec.exit_yields {
        tokio::task::yield_now().await;
    }
    ctx.push(Ev::ExitDone(id));
    if spec.exit_fails {
        Err(PropError)?;
    }
}

type BoxFut<'a> = Pin<Box<dyn Future<Output = Result<u32, PropError>> + 'a>>;

async fn body(node: &Node, ctx: Arc<Ctx>, scope: u32) -> Result<u32, PropError> {
    if node.body_yields {
        tokio::task::yield_now().await;
    }
    if node.concurrent {
        let children = node
            .children
            .iter()
            .map(|child| run(child, ctx.clone(), scope));
        futures::future::join_all(children).await;
    } else {
        for child in &node.children {
            let _ = run(child, ctx.clone(), scope).await;
        }
    }
    if node.body_fails {
        Err(PropError)
    } else {
        Ok(1)
    }
}

/// Runs `node` as a `with_scope!` over its managers (hand-written and
/// generated in any mix), its children nested in the body. Managers are
/// written at the call site: behind an `impl AsyncContextManager` return
/// type, `with_scope!` cannot see that a generated manager's exit is `Send`
/// and treats it as borrowing (see the issue-4 report).
fn run(node: &Node, ctx: Arc<Ctx>, parent: u32) -> BoxFut<'_> {
    Box::pin(async move {
        let s = &node.managers;
        let scope = 1 + ctx.next_scope.fetch_add(1, SeqCst);
        ctx.parent.lock().unwrap().insert(scope, parent);
        let id = || {
            let id = ctx.next.fetch_add(1, SeqCst);
            ctx.scope_of.lock().unwrap().insert(id, scope);
            id
        };
        macro_rules! h {
            ($i:expr) => {
                Hand {
                    id: id(),
                    spec: s[$i],
                    ctx: ctx.clone(),
                }
            };
        }
        macro_rules! g {
            ($i:expr) => {
                generated(id(), s[$i], ctx.clone())
            };
        }
        let gen_at = |i: usize| s[i].generated;
        match s.len() {
            1 if gen_at(0) => with_scope!(g!(0) => { body(node, ctx.clone(), scope).await }),
            1 => with_scope!(h!(0) => { body(node, ctx.clone(), scope).await }),
            2 => match (gen_at(0), gen_at(1)) {
                (false, false) => {
                    with_scope!(h!(0), h!(1) => { body(node, ctx.clone(), scope).await })
                }
                (false, true) => {
                    with_scope!(h!(0), g!(1) => { body(node, ctx.clone(), scope).await })
                }
                (true, false) => {
                    with_scope!(g!(0), h!(1) => { body(node, ctx.clone(), scope).await })
                }
                (true, true) => {
                    with_scope!(g!(0), g!(1) => { body(node, ctx.clone(), scope).await })
                }
            },
            _ => match (gen_at(0), gen_at(1) || gen_at(2)) {
                (false, false) => {
                    with_scope!(h!(0), h!(1), h!(2) => { body(node, ctx.clone(), scope).await })
                }
                (false, true) => {
                    with_scope!(h!(0), g!(1), h!(2) => { body(node, ctx.clone(), scope).await })
                }
                (true, false) => {
                    with_scope!(g!(0), h!(1), g!(2) => { body(node, ctx.clone(), scope).await })
                }
                (true, true) => {
                    with_scope!(g!(0), g!(1), g!(2) => { body(node, ctx.clone(), scope).await })
                }
            },
        }
    })
}

/// Polls `fut` at most `budget` times, then drops it.
struct Budget<F> {
    fut: Option<F>,
    budget: u32,
}

impl<F: Future + Unpin> Future for Budget<F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.budget == 0 {
            self.fut = None;
            return Poll::Ready(());
        }
        self.budget -= 1;
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Ready(());
        };
        match Pin::new(fut).poll(cx) {
            Poll::Ready(_) => {
                self.fut = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(generated, enter_fails, exit_fails, enter_yields, exit_yields)| Spec {
                generated,
                enter_fails,
                exit_fails,
                enter_yields,
                exit_yields,
            },
        )
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = (
        prop::collection::vec(spec(), 1..=3),
        prop::bool::weighted(0.2),
        any::<bool>(),
    )
        .prop_map(|(managers, body_fails, body_yields)| Node {
            managers,
            children: Vec::new(),
            concurrent: false,
            body_fails,
            body_yields,
        });
    leaf.prop_recursive(4, 32, 3, |inner| {
        (
            prop::collection::vec(spec(), 1..=3),
            prop::collection::vec(inner, 0..=3),
            any::<bool>(),
            prop::bool::weighted(0.2),
            any::<bool>(),
        )
            .prop_map(
                |(managers, children, concurrent, body_fails, body_yields)| Node {
                    managers,
                    children,
                    concurrent,
                    body_fails,
                    body_yields,
                },
            )
    })
}

fn check(ctx: &Ctx) -> Result<(), TestCaseError> {
    let log = ctx.log.lock().unwrap().clone();
    let scope_of = ctx.scope_of.lock().unwrap().clone();
    let parent = ctx.parent.lock().unwrap().clone();
    // Where each manager's events are in the log.
    let mut enter: HashMap<u32, usize> = HashMap::new();
    let mut start: HashMap<u32, usize> = HashMap::new();
    let mut done: HashMap<u32, usize> = HashMap::new();
    for (at, ev) in log.iter().enumerate() {
        let (map, id) = match *ev {
            Ev::Enter(id) => (&mut enter, id),
            Ev::ExitStart(id) => (&mut start, id),
            Ev::ExitDone(id) => (&mut done, id),
        };
        prop_assert!(map.insert(id, at).is_none(), "{ev:?} twice: {log:?}");
    }
    // Exactly once, in order.
    for (&id, &e) in &enter {
        let s = start.get(&id).copied();
        let d = done.get(&id).copied();
        prop_assert!(
            matches!((s, d), (Some(s), Some(d)) if e < s && s < d),
            "manager {id}: enter at {e}, exit start {s:?}, exit done {d:?}: {log:?}"
        );
    }
    prop_assert_eq!(start.len(), enter.len(), "exit without enter: {:?}", log);
    // Per scope: LIFO, one exit at a time.
    let mut by_scope: HashMap<u32, Vec<u32>> = HashMap::new();
    for &id in enter.keys() {
        by_scope.entry(scope_of[&id]).or_default().push(id);
    }
    for ids in by_scope.values_mut() {
        ids.sort_by_key(|id| enter[id]);
        for pair in ids.windows(2) {
            let (outer, inner) = (pair[0], pair[1]);
            prop_assert!(
                done[&inner] < start[&outer],
                "{inner} must finish exiting before {outer} starts: {log:?}"
            );
        }
    }
    // Tree order: a scope's managers exit after every scope nested in it.
    let ancestors = |mut scope: u32| {
        let mut up = Vec::new();
        while let Some(&p) = parent.get(&scope) {
            up.push(p);
            scope = p;
        }
        up
    };
    for (&id, &d) in &done {
        for up in ancestors(scope_of[&id]) {
            for outer in by_scope.get(&up).into_iter().flatten() {
                prop_assert!(
                    d < start[outer],
                    "{outer} (scope {up}) exited before {id}, nested in it: {log:?}"
                );
            }
        }
    }
    Ok(())
}

fn run_case(
    rt: &tokio::runtime::Runtime,
    local: bool,
    tree: &Node,
    budget: Option<u32>,
) -> Result<(), TestCaseError> {
    let ctx = Arc::new(Ctx::default());
    let abandoned = async_contextlib::stats().abandoned;
    let case = async {
        let fut = run(tree, ctx.clone(), 0);
        match budget {
            None => {
                let _ = fut.await;
            }
            Some(budget) => {
                Budget {
                    fut: Some(fut),
                    budget,
                }
                .await
            }
        }
        drain().await;
    };
    if local {
        rt.block_on(tokio::task::LocalSet::new().run_until(case));
    } else {
        rt.block_on(case);
    }
    prop_assert_eq!(
        async_contextlib::stats().abandoned,
        abandoned,
        "abandoned exits: {:?}",
        ctx.log.lock().unwrap()
    );
    check(&ctx)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn nested_scopes_exit_lifo_and_exactly_once(
        tree in node(),
        budget in prop::option::weighted(0.6, 0u32..40),
    ) {
        let current = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        run_case(&current, false, &tree, budget).map_err(|e| TestCaseError::fail(format!("current_thread: {e}")))?;
        let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        run_case(&multi, false, &tree, budget).map_err(|e| TestCaseError::fail(format!("multi_thread: {e}")))?;
        run_case(&multi, true, &tree, budget).map_err(|e| TestCaseError::fail(format!("LocalSet on multi_thread: {e}")))?;
    }
}
