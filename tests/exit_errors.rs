//! Exit errors that the scope cannot return (SPEC §3): the body's error
//! wins, the exit's error is reported as an error-level `tracing` event
//! naming the manager, and counted in `stats().exit_failures`.
//!
//! `stats()` is process-wide: every test in this file takes `SERIAL`, so the
//! counter deltas they assert are exact.

use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_contextlib::{AsyncContextManager, Outcome, stats, with_scope};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One captured `tracing` event: its level and its fields as text.
#[derive(Debug, Clone)]
struct Event {
    level: tracing::Level,
    fields: Vec<(String, String)>,
}

impl Event {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Event>>>);

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _cx: Context<'_, S>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Event {
            level: *event.metadata().level(),
            fields,
        });
    }
}

/// Runs `fut` to completion on this thread with a capturing subscriber.
fn capture<T>(fut: impl Future<Output = T>) -> (T, Vec<Event>) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let out = tracing::subscriber::with_default(subscriber, || futures::executor::block_on(fut));
    let events = capture.0.lock().unwrap().clone();
    (out, events)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MgrError(&'static str);

impl fmt::Display for MgrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit of {} failed", self.0)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum AppError {
    Mgr(MgrError),
    Body(u32),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Mgr(e) => write!(f, "{e}"),
            AppError::Body(n) => write!(f, "body error {n}"),
        }
    }
}

impl From<MgrError> for AppError {
    fn from(e: MgrError) -> Self {
        AppError::Mgr(e)
    }
}

/// A manager whose exit fails; counts its exits.
struct FailingExit {
    name: &'static str,
    exits: Arc<Mutex<Vec<Outcome>>>,
}

impl AsyncContextManager for FailingExit {
    type Value<'a> = ();
    type Error = MgrError;

    async fn enter(&mut self) -> Result<(), MgrError> {
        Ok(())
    }

    async fn exit(&mut self, outcome: Outcome) -> Result<(), MgrError> {
        self.exits.lock().unwrap().push(outcome);
        Err(MgrError(self.name))
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

/// An infallible manager that records the outcome it saw.
struct Watch(Arc<Mutex<Vec<Outcome>>>);

impl AsyncContextManager for Watch {
    type Value<'a> = ();
    type Error = Infallible;

    async fn enter(&mut self) -> Result<(), Infallible> {
        Ok(())
    }

    async fn exit(&mut self, outcome: Outcome) -> Result<(), Infallible> {
        self.0.lock().unwrap().push(outcome);
        Ok(())
    }
}

fn exit_error_events<'a>(events: &'a [Event], name: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.level == tracing::Level::ERROR && e.field("manager") == Some(name))
        .collect()
}

#[test]
fn body_error_wins_and_the_exit_error_is_reported_and_counted() {
    let _serial = serial();
    let exits = Arc::new(Mutex::new(Vec::new()));
    let before = stats();
    let (out, events) = capture(async {
        let r: Result<(), AppError> = with_scope!(
            FailingExit { name: "flaky-tx", exits: exits.clone() } => { Err(AppError::Body(7)) }
        );
        r
    });
    let after = stats();
    assert_eq!(out, Err(AppError::Body(7)), "the body's error is returned");
    assert_eq!(exits.lock().unwrap().len(), 1, "the exit ran once");
    assert_eq!(after.exit_failures - before.exit_failures, 1);
    let reported = exit_error_events(&events, "flaky-tx");
    assert_eq!(
        reported.len(),
        1,
        "one error event naming the manager: {events:?}"
    );
    let text = format!("{:?}", reported[0].fields);
    assert!(
        text.contains("exit of flaky-tx failed"),
        "the event carries the exit's error: {text}"
    );
}

#[test]
fn two_failing_exits_under_a_failing_body_are_each_reported() {
    let _serial = serial();
    let (ea, eb) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let before = stats();
    let (out, events) = capture(async {
        let r: Result<(), AppError> = with_scope!(
            FailingExit { name: "outer-mgr", exits: ea.clone() },
            FailingExit { name: "inner-mgr", exits: eb.clone() } => { Err(AppError::Body(1)) }
        );
        r
    });
    let after = stats();
    assert_eq!(out, Err(AppError::Body(1)));
    assert_eq!(after.exit_failures - before.exit_failures, 2);
    assert_eq!(exit_error_events(&events, "outer-mgr").len(), 1);
    assert_eq!(exit_error_events(&events, "inner-mgr").len(), 1);
    // Both exits saw the body's failure, not each other's.
    for exits in [&ea, &eb] {
        let exits = exits.lock().unwrap();
        assert_eq!(exits.len(), 1);
        assert_eq!(exits[0].failure().unwrap().to_string(), "body error 1");
    }
}

#[test]
fn exit_error_alone_is_returned_not_reported() {
    let _serial = serial();
    let exits = Arc::new(Mutex::new(Vec::new()));
    let outer = Arc::new(Mutex::new(Vec::new()));
    let before = stats();
    let (out, events) = capture(async {
        let r: Result<u32, AppError> = with_scope!(
            Watch(outer.clone()),
            FailingExit { name: "only-exit", exits: exits.clone() } => { Ok(3) }
        );
        r
    });
    let after = stats();
    assert_eq!(out, Err(AppError::Mgr(MgrError("only-exit"))));
    assert!(exits.lock().unwrap()[0].is_success());
    let outer = outer.lock().unwrap();
    assert_eq!(outer.len(), 1);
    let failure = outer[0]
        .failure()
        .expect("outer manager sees the exit failure");
    assert!(failure.is::<MgrError>());
    assert_eq!(failure.to_string(), "exit of only-exit failed");
    // Counted as an exit failure, but returned: no error event.
    assert_eq!(after.exit_failures - before.exit_failures, 1);
    assert!(
        exit_error_events(&events, "only-exit").is_empty(),
        "{events:?}"
    );
}

#[test]
fn first_exit_error_is_returned_the_outer_one_is_reported() {
    let _serial = serial();
    let (ea, eb) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let before = stats();
    let (out, events) = capture(async {
        let r: Result<u32, AppError> = with_scope!(
            FailingExit { name: "second-to-fail", exits: ea.clone() },
            FailingExit { name: "first-to-fail", exits: eb.clone() } => { Ok(3) }
        );
        r
    });
    let after = stats();
    assert_eq!(out, Err(AppError::Mgr(MgrError("first-to-fail"))));
    assert_eq!(after.exit_failures - before.exit_failures, 2);
    assert!(exit_error_events(&events, "first-to-fail").is_empty());
    assert_eq!(exit_error_events(&events, "second-to-fail").len(), 1);
    assert!(ea.lock().unwrap()[0].failure().unwrap().is::<MgrError>());
}

#[test]
fn entered_and_exited_are_counted() {
    let _serial = serial();
    let outer = Arc::new(Mutex::new(Vec::new()));
    let before = stats();
    let ((), _) = capture(async {
        with_scope!(Watch(outer.clone()), Watch(outer.clone()) => {});
    });
    let after = stats();
    assert_eq!(after.entered - before.entered, 2);
    assert_eq!(after.exited - before.exited, 2);
    assert_eq!(after.exit_failures, before.exit_failures);
}
