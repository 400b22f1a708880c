//! Stress test (issues 4 and 8): many scopes nested two deep — the inner
//! level sometimes two sibling scopes in one `join!` — with random success /
//! `Err` / panic / cancellation at random points (enter, body, exit), over
//! owned (hand-written and generated) and borrowing managers, in batches
//! on a multi-thread runtime, a current-thread runtime and a `LocalSet` on
//! a multi-thread runtime. After `drain()`, every entered manager exited
//! exactly once and the driver holds nothing. Then the same scopes on a
//! runtime that is shut down mid-run: every entered manager exited at most
//! once, and each one is accounted for (exited, abandoned or lost).
//!
//! 100,000 scopes in debug and release builds: `cargo test --test stress`
//! or `cargo test --release --test stress`; `STRESS_SCOPES=n` overrides the
//! count.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::SeqCst};
use std::task::{Context, Poll};

use async_contextlib::{
    AsyncContextManager, Outcome, OwnedManager, async_context_manager, drain, stats, with_scope,
    yield_,
};

const SCOPES: usize = 100_000;
/// Managers per scope tree: two in the outer scope, one in each of the (at
/// most two, sibling) inner scopes.
const PER_SCOPE: usize = 4;

fn scopes() -> usize {
    std::env::var("STRESS_SCOPES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SCOPES)
}

#[derive(Debug)]
struct StressError;

impl std::fmt::Display for StressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stress error")
    }
}

/// Per-manager counters, one slot per manager instance.
struct Counters {
    entered: Vec<AtomicU8>,
    exit_started: Vec<AtomicU8>,
    exited: Vec<AtomicU8>,
    doubles: AtomicU64,
    /// Scopes cut by their poll budget.
    cancelled: AtomicU64,
}

impl Counters {
    fn new(n: usize) -> Counters {
        let v = || (0..n).map(|_| AtomicU8::new(0)).collect();
        Counters {
            entered: v(),
            exit_started: v(),
            exited: v(),
            doubles: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
        }
    }
    fn bump(&self, which: &[AtomicU8], slot: usize) {
        if which[slot].fetch_add(1, SeqCst) != 0 {
            self.doubles.fetch_add(1, SeqCst);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Act {
    Ok,
    Err,
    Panic,
}

#[derive(Clone, Copy, Debug)]
struct Plan {
    enter: Act,
    enter_yields: u8,
    exit: Act,
    exit_yields: u8,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn act(&mut self) -> Act {
        match self.below(20) {
            0 => Act::Err,
            1 => Act::Panic,
            _ => Act::Ok,
        }
    }
    fn plan(&mut self) -> Plan {
        Plan {
            enter: self.act(),
            enter_yields: self.below(3) as u8,
            exit: self.act(),
            exit_yields: self.below(3) as u8,
        }
    }
}

async fn yields(n: u8) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// The enter every manager kind runs: yield as planned, then fail, panic
/// or count the enter.
async fn planned_enter(c: &Counters, slot: usize, plan: Plan) -> Result<usize, StressError> {
    yields(plan.enter_yields).await;
    match plan.enter {
        Act::Ok => {}
        Act::Err => return Err(StressError),
        Act::Panic => panic!("stress: enter panicked on purpose"),
    }
    c.bump(&c.entered, slot);
    Ok(slot)
}

/// The exit every manager kind runs: count its start, yield as planned,
/// count its end, then fail or panic as planned.
async fn planned_exit(c: &Counters, slot: usize, plan: Plan) -> Result<(), StressError> {
    c.bump(&c.exit_started, slot);
    yields(plan.exit_yields).await;
    c.bump(&c.exited, slot);
    match plan.exit {
        Act::Ok => Ok(()),
        Act::Err => Err(StressError),
        Act::Panic => panic!("stress: exit panicked on purpose"),
    }
}

/// A hand-written manager following a plan. `Hand<Arc<Counters>>` is owned
/// (its exit is detached on cancellation); `Hand<&Counters>` borrows, so
/// on cancellation its exit is finished in place (`block_in_place`) on the
/// multi-thread runtime.
struct Hand<C> {
    slot: usize,
    plan: Plan,
    c: C,
}

impl<C: Deref<Target = Counters>> AsyncContextManager for Hand<C> {
    type Value<'a>
        = usize
    where
        Self: 'a;
    type Error = StressError;
    async fn enter(&mut self) -> Result<usize, StressError> {
        planned_enter(&self.c, self.slot, self.plan).await
    }
    async fn exit(&mut self, _: Outcome) -> Result<(), StressError> {
        planned_exit(&self.c, self.slot, self.plan).await
    }
}

impl OwnedManager for Hand<Arc<Counters>> {}

/// The same as a generated owned manager.
#[async_context_manager]
async fn generated(slot: usize, plan: Plan, c: Arc<Counters>) -> Result<usize, StressError> {
    planned_enter(&c, slot, plan).await?;
    let _outcome = yield_!(slot);
    planned_exit(&c, slot, plan).await?;
}

/// Polls `fut` at most `budget` times, then drops it (a cancellation at
/// whatever await point it reached).
struct Budget<F> {
    fut: Option<Pin<Box<F>>>,
    budget: u32,
}

impl<F: Future> Future for Budget<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.budget == 0 {
            self.fut = None;
            return Poll::Ready(None);
        }
        self.budget -= 1;
        let fut = self.fut.as_mut().expect("polled after completion");
        match fut.as_mut().poll(cx) {
            Poll::Ready(out) => {
                self.fut = None;
                Poll::Ready(Some(out))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

async fn one_scope(i: usize, c: Arc<Counters>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let base = i * PER_SCOPE;
    let (p0, p1, p2, p3) = (rng.plan(), rng.plan(), rng.plan(), rng.plan());
    let body = rng.act();
    let body_yields = rng.below(3) as u8;
    let hand_outer = rng.below(2) == 0;
    let inner_kind = rng.below(3) as u8;
    let sibling_kind = rng.below(3) as u8;
    let siblings = rng.below(3) == 0;
    // 0 = no cancellation; else cancel after that many polls.
    let budget = if rng.below(4) == 0 {
        1 + rng.below(12) as u32
    } else {
        u32::MAX
    };
    let c2 = c.clone();
    let scope = async move {
        let c = c2;
        let outer = Hand {
            slot: base,
            plan: p0,
            c: c.clone(),
        };
        // The inner level: one scope, or two sibling scopes in a `join!`.
        let level = |c: Arc<Counters>| async move {
            if siblings {
                let (x, y) = tokio::join!(
                    inner(base + 2, p2, inner_kind, body, body_yields, c.clone()),
                    inner(base + 3, p3, sibling_kind, Act::Ok, body_yields, c.clone()),
                );
                Ok(x? + y?)
            } else {
                inner(base + 2, p2, inner_kind, body, body_yields, c).await
            }
        };
        let r: Result<usize, StressError> = if hand_outer {
            with_scope!(outer as _a, generated(base + 1, p1, c.clone()) as _b => {
                level(c.clone()).await
            })
        } else {
            with_scope!(generated(base + 1, p1, c.clone()) as _b, outer as _a => {
                level(c.clone()).await
            })
        };
        r
    };
    let run = Budget {
        fut: Some(Box::pin(scope)),
        budget,
    };
    // A panicking scope unwinds into this task; the caller sees a JoinError.
    if run.await.is_none() {
        c.cancelled.fetch_add(1, SeqCst);
    }
}

async fn inner(
    slot: usize,
    plan: Plan,
    kind: u8,
    body: Act,
    body_yields: u8,
    c: Arc<Counters>,
) -> Result<usize, StressError> {
    let run_body = || async move {
        yields(body_yields).await;
        match body {
            Act::Ok => Ok(1),
            Act::Err => Err(StressError),
            Act::Panic => panic!("stress: body panicked on purpose"),
        }
    };
    match kind {
        0 => with_scope!(Hand { slot, plan, c: c.clone() } as _x => { run_body().await }),
        1 => with_scope!(generated(slot, plan, c.clone()) as _x => { run_body().await }),
        _ => with_scope!(Hand { slot, plan, c: &*c } as _x => { run_body().await }),
    }
}

/// How a batch of scopes runs.
#[derive(Clone, Copy, Debug)]
enum Mode {
    MultiThread,
    CurrentThread,
    LocalSet,
}

/// Runs scopes `range` to their end (or cancellation) in `mode`.
fn run_batch(mode: Mode, range: std::ops::Range<usize>, c: &Arc<Counters>) {
    let spawn_all = |spawn: &dyn Fn(usize) -> tokio::task::JoinHandle<()>| {
        range.clone().map(spawn).collect::<Vec<_>>()
    };
    let join = |handles: Vec<tokio::task::JoinHandle<()>>| async move {
        for h in handles {
            let _ = h.await; // Err for scopes that panicked, by design
        }
    };
    match mode {
        Mode::MultiThread => multi_thread().block_on(async {
            let handles = spawn_all(&|i| tokio::spawn(one_scope(i, c.clone())));
            join(handles).await;
            drain().await;
        }),
        Mode::CurrentThread => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let handles = spawn_all(&|i| tokio::spawn(one_scope(i, c.clone())));
                join(handles).await;
                drain().await;
            });
        }
        Mode::LocalSet => {
            let local = tokio::task::LocalSet::new();
            multi_thread().block_on(local.run_until(async {
                let handles = spawn_all(&|i| tokio::task::spawn_local(one_scope(i, c.clone())));
                join(handles).await;
                drain().await;
            }));
        }
    }
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Per manager: entered at most once, and every exit started and finished
/// exactly as often as it was entered (`exact`), or at most as often (a
/// runtime shut down mid-run). Returns how many were entered.
fn check_slots(c: &Counters, range: std::ops::Range<usize>, exact: bool) -> usize {
    let mut entered = 0;
    for slot in range {
        let e = c.entered[slot].load(SeqCst);
        let s = c.exit_started[slot].load(SeqCst);
        let x = c.exited[slot].load(SeqCst);
        let ok = if exact {
            e <= 1 && s == e && x == e
        } else {
            e <= 1 && s <= e && x <= s
        };
        assert!(
            ok,
            "manager {slot}: entered {e}, exit started {s}, exited {x}"
        );
        entered += usize::from(e);
    }
    assert_eq!(c.doubles.load(SeqCst), 0);
    entered
}

#[test]
fn stress_every_entered_manager_exits_exactly_once() {
    // Thousands of panics on purpose: keep the output readable.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if !msg.contains("on purpose") {
            default_hook(info);
        }
    }));
    let n = scopes();
    let started = std::time::Instant::now();
    let counters = Arc::new(Counters::new(2 * n * PER_SCOPE));
    const BATCH: usize = 2_000;
    let modes = [Mode::MultiThread, Mode::CurrentThread, Mode::LocalSet];
    let mut start = 0;
    let mut batch = 0;
    while start < n {
        let end = (start + BATCH).min(n);
        run_batch(modes[batch % modes.len()], start..end, &counters);
        start = end;
        batch += 1;
    }
    let c = &counters;
    let entered = check_slots(c, 0..n * PER_SCOPE, true);
    let cancelled = c.cancelled.load(SeqCst);
    assert!(
        cancelled as usize > n / 10,
        "too few cancellations: {cancelled}"
    );
    let s = stats();
    assert_eq!(s.active, 0, "{s:?}");
    assert_eq!(s.pending, 0, "{s:?}");
    assert_eq!(s.lost, 0, "{s:?}");
    assert_eq!(s.abandoned, 0, "{s:?}");
    assert_eq!(s.entered as usize, entered, "{s:?}");
    assert_eq!(s.exited as usize, entered, "{s:?}");
    eprintln!(
        "stress: {n} scopes ({cancelled} cancelled), {entered} managers entered, {:?} ({s:?})",
        started.elapsed()
    );

    // The same scopes again, on a runtime shut down mid-run.
    let before = stats();
    let shutdown_n = (n / 10).max(100);
    let range = n..n + shutdown_n;
    let rt = multi_thread();
    for i in range.clone() {
        rt.spawn(one_scope(i, counters.clone()));
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    let dropped = std::time::Instant::now();
    drop(rt);
    assert!(
        dropped.elapsed() < std::time::Duration::from_secs(20),
        "shutdown hung"
    );
    let entered = check_slots(
        &counters,
        n * PER_SCOPE..(n + shutdown_n) * PER_SCOPE,
        false,
    );
    let s = stats();
    assert_eq!(s.active, 0, "{s:?}");
    assert_eq!(
        (s.entered - before.entered) as usize,
        entered,
        "every enter was counted: {s:?}"
    );
    assert_eq!(
        s.entered - before.entered,
        (s.exited - before.exited) + (s.abandoned - before.abandoned) + (s.lost - before.lost),
        "every entered manager exited, or was counted abandoned or lost: {s:?}"
    );
    eprintln!(
        "stress: {shutdown_n} scopes on a runtime shut down mid-run: {entered} entered, \
         {} lost, {} abandoned",
        s.lost - before.lost,
        s.abandoned - before.abandoned
    );
}
