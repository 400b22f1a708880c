//! Shared helpers for the exit-driver tests (issue 4): counting managers,
//! runtimes of both flavours, and a `tracing` capture.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_contextlib::{AsyncContextManager, Outcome, OwnedManager, async_context_manager, yield_};
use tokio::sync::Notify;

/// Per-manager counters and a shared log of exits, in the order they started.
#[derive(Default, Debug)]
pub struct Probe {
    pub entered: AtomicUsize,
    /// Exits that started (a restarted exit would count twice).
    pub exit_started: AtomicUsize,
    /// Exits that ran to their end.
    pub exited: AtomicUsize,
    pub cancelled: AtomicUsize,
    pub log: Mutex<Vec<String>>,
}

impl Probe {
    pub fn new() -> Arc<Probe> {
        Arc::new(Probe::default())
    }
    pub fn entered(&self) -> usize {
        self.entered.load(SeqCst)
    }
    pub fn exited(&self) -> usize {
        self.exited.load(SeqCst)
    }
    pub fn exit_started(&self) -> usize {
        self.exit_started.load(SeqCst)
    }
    pub fn cancelled(&self) -> usize {
        self.cancelled.load(SeqCst)
    }
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
    fn on_exit_start(&self, id: &str, outcome: &Outcome) {
        self.exit_started.fetch_add(1, SeqCst);
        if matches!(outcome, Outcome::Cancelled) {
            self.cancelled.fetch_add(1, SeqCst);
        }
        self.log
            .lock()
            .unwrap()
            .push(format!("{id}:{}", outcome.label()));
    }
}

/// What an exit does before it returns.
#[derive(Clone, Debug, Default)]
pub enum ExitWork {
    #[default]
    Nothing,
    Sleep(Duration),
    /// Waits for a permit of this `Notify`.
    Gate(Arc<Notify>),
    Panic,
}

impl ExitWork {
    async fn run(&self) {
        match self {
            ExitWork::Nothing => {}
            ExitWork::Sleep(d) => tokio::time::sleep(*d).await,
            ExitWork::Gate(n) => n.notified().await,
            ExitWork::Panic => panic!("exit panicked on purpose"),
        }
    }
}

/// A hand-written owned manager (`impl OwnedManager`).
pub struct Owned {
    pub id: &'static str,
    pub probe: Arc<Probe>,
    pub work: ExitWork,
    /// If set, enter waits for a permit here (to cancel mid-enter).
    pub enter_gate: Option<Arc<Notify>>,
}

impl Owned {
    pub fn new(id: &'static str, probe: &Arc<Probe>) -> Owned {
        Owned {
            id,
            probe: probe.clone(),
            work: ExitWork::Nothing,
            enter_gate: None,
        }
    }
    pub fn work(mut self, work: ExitWork) -> Owned {
        self.work = work;
        self
    }
}

impl AsyncContextManager for Owned {
    type Value<'a> = &'static str;
    type Error = Infallible;
    async fn enter(&mut self) -> Result<&'static str, Infallible> {
        if let Some(gate) = &self.enter_gate {
            gate.notified().await;
        }
        self.probe.entered.fetch_add(1, SeqCst);
        Ok(self.id)
    }
    async fn exit(&mut self, outcome: Outcome) -> Result<(), Infallible> {
        self.probe.on_exit_start(self.id, &outcome);
        self.work.run().await;
        self.probe.exited.fetch_add(1, SeqCst);
        Ok(())
    }
    fn name(&self) -> &'static str {
        self.id
    }
}

impl OwnedManager for Owned {}

/// A generated owned manager: its signature borrows nothing.
#[async_context_manager]
/// (It yields a number: yielding `&'static str` by value makes the scope
/// future `!Send` — a rustc limitation with the trait's `enter` future.)
pub async fn gen_owned(id: &'static str, probe: Arc<Probe>, work: ExitWork) -> u32 {
    probe.entered.fetch_add(1, SeqCst);
    let outcome = yield_!(7);
    probe.on_exit_start(id, &outcome);
    work.run().await;
    probe.exited.fetch_add(1, SeqCst);
}

/// A hand-written borrowing manager (not `OwnedManager`).
pub struct Borrowing<'a> {
    pub id: &'static str,
    pub probe: &'a Probe,
    pub work: ExitWork,
}

impl AsyncContextManager for Borrowing<'_> {
    type Value<'b>
        = &'static str
    where
        Self: 'b;
    type Error = Infallible;
    async fn enter(&mut self) -> Result<&'static str, Infallible> {
        self.probe.entered.fetch_add(1, SeqCst);
        Ok(self.id)
    }
    async fn exit(&mut self, outcome: Outcome) -> Result<(), Infallible> {
        self.probe.on_exit_start(self.id, &outcome);
        self.work.run().await;
        self.probe.exited.fetch_add(1, SeqCst);
        Ok(())
    }
    fn name(&self) -> &'static str {
        self.id
    }
}

/// A generated borrowing manager: its signature holds a reference.
#[async_context_manager]
pub async fn gen_borrowing(id: &'static str, probe: &Probe, work: ExitWork) -> u32 {
    probe.entered.fetch_add(1, SeqCst);
    let outcome = yield_!(7);
    probe.on_exit_start(id, &outcome);
    work.run().await;
    probe.exited.fetch_add(1, SeqCst);
}

pub fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs the same test body on a multi-thread and on a current-thread runtime.
pub fn on_both<F, Fut>(test: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = ()>,
{
    multi_thread().block_on(test("multi_thread"));
    current_thread().block_on(test("current_thread"));
}

/// Makes each listed `async fn` a test on a current-thread and on a
/// multi-thread runtime (`current_thread::name`, `multi_thread::name`):
/// `driver_util::both_flavours! { a, b, }`. Unlike [`on_both`], each
/// flavour is a test of its own.
#[allow(unused_macros, reason = "each test binary uses a different subset")]
macro_rules! both_flavours {
    ($($name:ident,)*) => {
        mod current_thread {
            $(#[tokio::test(flavor = "current_thread")] async fn $name() { super::$name().await })*
        }
        mod multi_thread {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name().await })*
        }
    };
}
#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub(crate) use both_flavours;

/// Spawns `scope` (one that never finishes), aborts its task once it has
/// had time to start, checks the task was cancelled, and waits for the
/// driver to finish what the drop handed over.
pub async fn spawn_then_abort<F>(scope: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let task = tokio::spawn(scope);
    tokio::time::sleep(Duration::from_millis(5)).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    async_contextlib::drain().await;
}

/// A body that never finishes, so the scope can only end by cancellation.
pub async fn forever() {
    std::future::pending::<()>().await;
}

// ---- tracing capture -------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Event {
    pub level: tracing::Level,
    /// `field=value ` for every field, message included.
    pub text: String,
}

#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    pub fn all(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
    pub fn find(&self, level: tracing::Level, needles: &[&str]) -> Option<Event> {
        self.all()
            .into_iter()
            .find(|e| e.level == level && needles.iter().all(|n| e.text.contains(n)))
    }
}

struct Capture(Events);

struct Text(String);

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let _ = write!(self.0, "{}={} ", field.name(), value);
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        self.0.0.lock().unwrap().push(Event {
            level: *event.metadata().level(),
            text: text.0,
        });
    }
}

/// Captures the events emitted on this thread while the guard lives.
pub fn capture() -> (tracing::subscriber::DefaultGuard, Events) {
    let (subscriber, events) = capturing_subscriber();
    (tracing::subscriber::set_default(subscriber), events)
}

/// A subscriber that records every event into the returned log.
pub fn capturing_subscriber() -> (impl tracing::Subscriber + Send + Sync, Events) {
    use tracing_subscriber::layer::SubscriberExt as _;
    let events = Events::default();
    (
        tracing_subscriber::registry().with(Capture(events.clone())),
        events,
    )
}

/// Serializes tests of one binary that assert on the process-global stats.
pub fn stats_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
