//! Issue 4 stress test: many scopes on a multi-thread runtime, nested two
//! deep, with random success / `Err` / panic / cancellation at random points
//! (enter, body, exit), over owned (hand-written and generated) and
//! borrowing managers. After `drain()`, every entered manager exited exactly
//! once and the driver holds nothing.
//!
//! 100,000 scopes in debug and release builds (about 2 s in debug on two
//! cores): `cargo test --test stress` or `cargo test --release --test stress`;
//! `STRESS_SCOPES=n` overrides the count.

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
/// Managers per scope tree: two in the outer scope, one in the inner one.
const PER_SCOPE: usize = 3;

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
    let (p0, p1, p2) = (rng.plan(), rng.plan(), rng.plan());
    let body = rng.act();
    let body_yields = rng.below(3) as u8;
    let hand_outer = rng.below(2) == 0;
    let inner_kind = rng.below(3) as u8;
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
        let r: Result<usize, StressError> = if hand_outer {
            with_scope!(outer as a, generated(base + 1, p1, c.clone()) as b => {
                inner(a + b, base + 2, p2, inner_kind, body, body_yields, c.clone()).await
            })
        } else {
            with_scope!(generated(base + 1, p1, c.clone()) as b, outer as a => {
                inner(a + b, base + 2, p2, inner_kind, body, body_yields, c.clone()).await
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
    _sum: usize,
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
    let counters = Arc::new(Counters::new(n * PER_SCOPE));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c = counters.clone();
    rt.block_on(async move {
        const BATCH: usize = 2_000;
        let mut start = 0;
        while start < n {
            let end = (start + BATCH).min(n);
            let handles: Vec<_> = (start..end)
                .map(|i| tokio::spawn(one_scope(i, c.clone())))
                .collect();
            for h in handles {
                let _ = h.await; // Err for scopes that panicked, by design
            }
            start = end;
        }
        drain().await;
    });
    let c = &counters;
    let mut entered = 0;
    for slot in 0..n * PER_SCOPE {
        let e = c.entered[slot].load(SeqCst);
        let s = c.exit_started[slot].load(SeqCst);
        let x = c.exited[slot].load(SeqCst);
        assert!(
            e <= 1 && s == e && x == e,
            "manager {slot}: entered {e}, exit started {s}, exited {x}"
        );
        entered += usize::from(e);
    }
    assert_eq!(c.doubles.load(SeqCst), 0);
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
}
