//! Issue 4 property test: random nestings of `with_scope!` (depth and width
//! chosen by proptest, run by a recursive async fn) with random outcomes at
//! random points (enter `Err`, body `Err`, exit `Err`, cancellation after a
//! random number of polls), on both runtime flavours. Checks that enters and
//! exits nest LIFO and that every entered manager exits exactly once.

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
    log: Mutex<Vec<Ev>>,
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

async fn body(node: &Node, ctx: Arc<Ctx>) -> Result<u32, PropError> {
    if node.body_yields {
        tokio::task::yield_now().await;
    }
    for child in &node.children {
        let _ = run(child, ctx.clone()).await;
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
fn run(node: &Node, ctx: Arc<Ctx>) -> BoxFut<'_> {
    Box::pin(async move {
        let s = &node.managers;
        let id = || ctx.next.fetch_add(1, SeqCst);
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
            1 if gen_at(0) => with_scope!(g!(0) => { body(node, ctx.clone()).await }),
            1 => with_scope!(h!(0) => { body(node, ctx.clone()).await }),
            2 => match (gen_at(0), gen_at(1)) {
                (false, false) => with_scope!(h!(0), h!(1) => { body(node, ctx.clone()).await }),
                (false, true) => with_scope!(h!(0), g!(1) => { body(node, ctx.clone()).await }),
                (true, false) => with_scope!(g!(0), h!(1) => { body(node, ctx.clone()).await }),
                (true, true) => with_scope!(g!(0), g!(1) => { body(node, ctx.clone()).await }),
            },
            _ => match (gen_at(0), gen_at(1) || gen_at(2)) {
                (false, false) => {
                    with_scope!(h!(0), h!(1), h!(2) => { body(node, ctx.clone()).await })
                }
                (false, true) => {
                    with_scope!(h!(0), g!(1), h!(2) => { body(node, ctx.clone()).await })
                }
                (true, false) => {
                    with_scope!(g!(0), h!(1), g!(2) => { body(node, ctx.clone()).await })
                }
                (true, true) => {
                    with_scope!(g!(0), g!(1), g!(2) => { body(node, ctx.clone()).await })
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
            body_fails,
            body_yields,
        });
    leaf.prop_recursive(4, 32, 3, |inner| {
        (
            prop::collection::vec(spec(), 1..=3),
            prop::collection::vec(inner, 0..=3),
            prop::bool::weighted(0.2),
            any::<bool>(),
        )
            .prop_map(|(managers, children, body_fails, body_yields)| Node {
                managers,
                children,
                body_fails,
                body_yields,
            })
    })
}

fn check(log: &[Ev]) -> Result<(), TestCaseError> {
    // LIFO: each exit starts for the innermost manager still entered, and
    // nothing else happens between an exit's start and its end.
    let mut stack: Vec<u32> = Vec::new();
    let mut exiting: Option<u32> = None;
    let mut exits: HashMap<u32, (u32, u32)> = HashMap::new();
    for ev in log {
        match *ev {
            Ev::Enter(id) => {
                prop_assert!(exiting.is_none(), "enter {id} during an exit: {log:?}");
                prop_assert!(!stack.contains(&id), "entered twice: {id}");
                stack.push(id);
            }
            Ev::ExitStart(id) => {
                prop_assert!(
                    exiting.is_none(),
                    "exit {id} started during another: {log:?}"
                );
                prop_assert_eq!(stack.pop(), Some(id), "exit out of LIFO order: {:?}", log);
                exiting = Some(id);
                exits.entry(id).or_default().0 += 1;
            }
            Ev::ExitDone(id) => {
                prop_assert_eq!(
                    exiting.take(),
                    Some(id),
                    "exit end without its start: {:?}",
                    log
                );
                exits.entry(id).or_default().1 += 1;
            }
        }
    }
    prop_assert!(
        stack.is_empty(),
        "entered, never exited: {stack:?} in {log:?}"
    );
    prop_assert!(exiting.is_none(), "exit never finished: {log:?}");
    for (id, (started, done)) in exits {
        prop_assert_eq!((started, done), (1, 1), "manager {} exit counts", id);
    }
    Ok(())
}

fn run_case(
    rt: &tokio::runtime::Runtime,
    tree: &Node,
    budget: Option<u32>,
) -> Result<(), TestCaseError> {
    let ctx = Arc::new(Ctx::default());
    let abandoned = async_contextlib::stats().abandoned;
    rt.block_on(async {
        let fut = run(tree, ctx.clone());
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
    });
    let log = ctx.log.lock().unwrap().clone();
    prop_assert_eq!(
        async_contextlib::stats().abandoned,
        abandoned,
        "abandoned exits: {:?}",
        log
    );
    check(&log)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn nested_scopes_exit_lifo_and_exactly_once(
        tree in node(),
        budget in prop::option::weighted(0.6, 0u32..40),
    ) {
        let current = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        run_case(&current, &tree, budget).map_err(|e| TestCaseError::fail(format!("current_thread: {e}")))?;
        let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        run_case(&multi, &tree, budget).map_err(|e| TestCaseError::fail(format!("multi_thread: {e}")))?;
    }
}
