//! `#[async_context_manager]` (SPEC §1): order, return-type modes, `?`
//! before and after the yield, outcomes seen after `yield_!`, "didn't
//! yield", methods, generics, argument handling, executors.

mod common;

use common::Log;
use std::cell::Cell;
use std::fmt;
use std::fmt::Debug;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_contextlib::{Outcome, async_context_manager, with_scope, yield_};
use futures::FutureExt;

// ---------------------------------------------------------------- helpers

#[derive(Debug, Clone, PartialEq, Eq)]
struct DbError(String);

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "db: {}", self.0)
    }
}

impl std::error::Error for DbError {}

#[derive(Debug, PartialEq, Eq)]
enum AppError {
    Db(DbError),
    Body(&'static str),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Db(e) => write!(f, "{e}"),
            AppError::Body(s) => write!(f, "body: {s}"),
        }
    }
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        AppError::Db(e)
    }
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

/// Describes an outcome with its details, for logs.
fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Success => "success".into(),
        Outcome::Failed(f) => format!("failed({f})"),
        Outcome::Panicked(p) => format!("panicked({})", p.message()),
        Outcome::Cancelled => "cancelled".into(),
    }
}

// ------------------------------------------------------------- order, modes

#[async_context_manager]
async fn owned(log: Log, value: u32) -> u32 {
    log.push("enter");
    let outcome = yield_!(value * 2);
    log.push(format!("exit {}", describe(&outcome)));
}

#[tokio::test]
async fn enter_body_exit_order() {
    let log = Log::default();
    let out = with_scope!(owned(log.clone(), 21) as n => {
        log.push(format!("body {n}"));
        n
    });
    assert_eq!(out, 42);
    assert_eq!(log.take(), ["enter", "body 42", "exit success"]);
}

#[tokio::test]
async fn two_generated_managers_nest_in_order() {
    let log = Log::default();
    let out = with_scope!(owned(log.clone(), 1) as a, owned(log.clone(), a) as b => {
        log.push("body");
        a + b
    });
    assert_eq!(out, 6);
    assert_eq!(
        log.take(),
        ["enter", "enter", "body", "exit success", "exit success"]
    );
}

#[async_context_manager]
async fn lend_mut(seen_at_exit: Arc<Mutex<Vec<u32>>>) -> &mut Vec<u32> {
    let mut local = vec![1];
    let _ = yield_!(&mut local);
    // The local, as the body left it.
    local.push(99);
    *seen_at_exit.lock().unwrap() = local;
}

#[tokio::test]
async fn lend_mut_exit_sees_the_bodys_changes() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let len = with_scope!(lend_mut(seen.clone()) as v => {
        v.push(2);
        v.push(3);
        v.len()
    });
    assert_eq!(len, 3);
    assert_eq!(*seen.lock().unwrap(), [1, 2, 3, 99]);
}

#[async_context_manager]
async fn lend_ref(text: &'static str, log: Log) -> &String {
    let local = format!("<{text}>");
    let outcome = yield_!(&local);
    log.push(format!("exit {local} {}", outcome.label()));
}

#[tokio::test]
async fn lend_ref_lends_a_shared_borrow_of_the_local() {
    let log = Log::default();
    let len = with_scope!(lend_ref("hi", log.clone()) as s => { s.len() });
    assert_eq!(len, 4);
    assert_eq!(log.take(), ["exit <hi> success"]);
}

/// A fallible lending manager (SPEC §1's `transaction`).
#[async_context_manager]
async fn transaction(
    log: Log,
    fail_begin: bool,
    fail_commit: bool,
) -> Result<&mut Vec<String>, DbError> {
    let mut tx = begin(fail_begin).await?;
    log.push("begun");
    match yield_!(&mut tx) {
        Outcome::Success => {
            commit(fail_commit).await?;
            log.push(format!("commit {tx:?}"));
        }
        other => log.push(format!("rollback {} {tx:?}", describe(&other))),
    }
}

async fn begin(fail: bool) -> Result<Vec<String>, DbError> {
    if fail {
        Err(DbError("begin".into()))
    } else {
        Ok(Vec::new())
    }
}

async fn commit(fail: bool) -> Result<(), DbError> {
    if fail {
        Err(DbError("commit".into()))
    } else {
        Ok(())
    }
}

#[tokio::test]
async fn fallible_lend_mut_commits_on_success() {
    let log = Log::default();
    let out: Result<usize, AppError> = with_scope!(transaction(log.clone(), false, false) as tx => {
        tx.push("insert".into());
        Ok(tx.len())
    });
    assert_eq!(out, Ok(1));
    assert_eq!(log.take(), ["begun", r#"commit ["insert"]"#]);
}

#[tokio::test]
async fn question_mark_before_yield_fails_enter_and_no_exit_code_runs() {
    let log = Log::default();
    let mut body_ran = false;
    let out: Result<(), AppError> = with_scope!(transaction(log.clone(), true, false) as _tx => {
        body_ran = true;
        Ok(())
    });
    assert_eq!(out, Err(AppError::Db(DbError("begin".into()))));
    assert!(!body_ran);
    assert!(
        log.take().is_empty(),
        "neither the rest of enter nor exit ran"
    );
}

#[tokio::test]
async fn question_mark_after_yield_fails_the_exit() {
    let log = Log::default();
    let outer = Log::default();
    let out: Result<(), AppError> = with_scope!(
        owned(outer.clone(), 0),
        transaction(log.clone(), false, true) as tx => {
            tx.push("x".into());
            Ok(())
        }
    );
    assert_eq!(out, Err(AppError::Db(DbError("commit".into()))));
    assert_eq!(log.take(), ["begun"], "the code after `?` did not run");
    // The outer manager sees the exit's failure.
    assert_eq!(outer.take(), ["enter", "exit failed(db: commit)"]);
}

#[tokio::test]
async fn body_error_is_seen_after_yield() {
    let log = Log::default();
    let out: Result<(), AppError> = with_scope!(transaction(log.clone(), false, false) as tx => {
        tx.push("half".into());
        Err(AppError::Body("constraint"))
    });
    assert_eq!(out, Err(AppError::Body("constraint")));
    assert_eq!(
        log.take(),
        ["begun", r#"rollback failed(body: constraint) ["half"]"#]
    );
}

#[tokio::test]
async fn body_panic_is_seen_after_yield_and_resumes() {
    let log = Log::default();
    let caught = AssertUnwindSafe(async {
        let _: Result<(), AppError> = with_scope!(transaction(log.clone(), false, false) as tx => {
            tx.push("p".into());
            if tx.len() == 1 {
                panic!("body blew up");
            }
            Ok(())
        });
    })
    .catch_unwind()
    .await;
    assert_eq!(payload_text(&*caught.unwrap_err()), Some("body blew up"));
    assert_eq!(
        log.take(),
        ["begun", r#"rollback panicked(body blew up) ["p"]"#]
    );
}

// --------------------------------------------------------- didn't yield

#[async_context_manager]
async fn maybe_yield(skip: bool) -> u32 {
    if skip {
        return;
    }
    yield_!(1);
}

#[tokio::test]
async fn returning_before_the_yield_panics_naming_the_fn() {
    let mut body_ran = false;
    let caught =
        AssertUnwindSafe(async { with_scope!(maybe_yield(true) as _v => { body_ran = true; }) })
            .catch_unwind()
            .await;
    let payload = caught.unwrap_err();
    let text = payload_text(&*payload).unwrap();
    assert!(
        text.contains("generator::maybe_yield"),
        "the message names the fn: {text}"
    );
    assert!(text.contains("didn't yield"), "{text}");
    assert!(!body_ran);
    // The same fn that does yield works.
    assert_eq!(with_scope!(maybe_yield(false) as v => { v }), 1);
}

// ---------------------------------------------------------------- methods

struct Service {
    name: String,
    log: Log,
    counter: u32,
}

impl Service {
    /// A doc comment is kept.
    #[async_context_manager]
    async fn by_ref(&self, suffix: &str) -> String {
        let outcome = yield_!(format!("{}{suffix}", self.name));
        self.log.push(format!("by_ref exit {}", outcome.label()));
    }

    #[async_context_manager]
    async fn by_mut(&mut self) -> &mut u32 {
        let mut n = self.counter;
        let _ = yield_!(&mut n);
        self.counter = n;
    }

    #[async_context_manager]
    async fn by_value(self) -> String {
        let name = self.name.clone();
        let _ = yield_!(name);
        self.log.push("by_value exit");
    }

    #[async_context_manager]
    async fn by_arc(self: Arc<Self>, add: u32) -> Result<u32, DbError> {
        if add == 0 {
            return Err(DbError("zero".into()));
        }
        let _ = yield_!(self.counter + add);
        self.log
            .push(format!("by_arc exit {}", Arc::strong_count(&self)));
    }

    #[async_context_manager]
    pub(crate) async fn lend_field(&mut self) -> &mut String {
        let _ = yield_!(&mut self.name);
        self.log.push(format!("lend_field exit {}", self.name));
    }
}

#[tokio::test]
async fn methods_with_every_receiver() {
    let log = Log::default();
    let mut svc = Service {
        name: "svc".into(),
        log: log.clone(),
        counter: 1,
    };

    let s = with_scope!(svc.by_ref("!") as s => { s });
    assert_eq!(s, "svc!");

    let out = with_scope!(svc.by_mut() as n => {
        *n += 10;
        *n
    });
    assert_eq!(out, 11);
    assert_eq!(svc.counter, 11, "the exit wrote the body's change back");

    with_scope!(svc.lend_field() as name => { name.push_str("-x"); });
    assert_eq!(svc.name, "svc-x");

    let arc = Arc::new(svc);
    let out: Result<u32, AppError> = with_scope!(arc.clone().by_arc(4) as n => { Ok(n) });
    assert_eq!(out, Ok(15));
    let out: Result<u32, AppError> = with_scope!(arc.clone().by_arc(0) as n => { Ok(n) });
    assert_eq!(out, Err(AppError::Db(DbError("zero".into()))));

    let svc = Arc::try_unwrap(arc)
        .ok()
        .expect("no clone outlives its scope");
    let name = with_scope!(svc.by_value() as name => { name });
    assert_eq!(name, "svc-x");
    assert_eq!(
        log.take(),
        [
            "by_ref exit success",
            "lend_field exit svc-x",
            "by_arc exit 2",
            "by_value exit"
        ]
    );
}

// ------------------------------------------------- generics, impl Trait

#[async_context_manager]
async fn generic<T, U: Clone>(value: T, extra: U, log: Log) -> (T, U)
where
    T: Debug + Clone,
{
    log.push(format!("enter {value:?}"));
    let outcome = yield_!((value.clone(), extra.clone()));
    log.push(format!("exit {value:?} {}", outcome.label()));
}

#[async_context_manager]
async fn generic_lend<'a, T: Default + Debug + 'a>(log: &'a Log) -> &mut T {
    let mut local = T::default();
    let _ = yield_!(&mut local);
    log.push(format!("{local:?}"));
}

#[async_context_manager]
async fn const_generic<const N: usize>() -> [u8; N] {
    let _ = yield_!([7; N]);
}

#[tokio::test]
async fn generics_and_where_clauses() {
    let log = Log::default();
    let (a, b) = with_scope!(generic(5_i64, "u", log.clone()) as pair => { pair });
    assert_eq!((a, b), (5, "u"));
    with_scope!(generic_lend::<Vec<u8>>(&log) as v => { v.extend([1, 2]); });
    let arr = with_scope!(const_generic::<3>() as a => { a });
    assert_eq!(arr, [7, 7, 7]);
    assert_eq!(log.take(), ["enter 5", "exit 5 success", "[1, 2]"]);
}

#[async_context_manager]
async fn sum_of(items: impl IntoIterator<Item = u32>, log: &Log) -> u32 {
    let sum = items.into_iter().sum();
    let _ = yield_!(sum);
    log.push(format!("sum {sum}"));
}

#[tokio::test]
async fn impl_trait_arguments() {
    let log = Log::default();
    let out = with_scope!(sum_of(vec![1, 2, 3], &log) as s => { s });
    assert_eq!(out, 6);
    assert_eq!(log.take(), ["sum 6"]);
}

// -------------------------------------------------- clashing argument names

#[async_context_manager]
#[allow(clippy::too_many_arguments)]
async fn clashing_names(
    args: u32,
    outcome: u32,
    slot: u32,
    guard: u32,
    cx: u32,
    fut: u32,
    value: u32,
    state: u32,
    co: u32,
) -> u32 {
    let total = args + outcome + slot + guard + cx + fut + value + state + co;
    let seen = yield_!(total);
    assert!(seen.is_success());
    // The arguments are still the user's after the yield.
    assert_eq!(
        args + outcome + slot + guard + cx + fut + value + state + co,
        total
    );
}

#[tokio::test]
async fn arguments_named_like_generated_locals() {
    let out = with_scope!(clashing_names(1, 2, 3, 4, 5, 6, 7, 8, 9) as t => { t });
    assert_eq!(out, 45);
}

// ----------------------------------------------------- laziness, `_` args

#[async_context_manager]
async fn counting(entered: Arc<AtomicUsize>, exited: Arc<AtomicUsize>) -> () {
    entered.fetch_add(1, Ordering::SeqCst);
    yield_!(());
    exited.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test]
async fn calling_the_fn_runs_nothing_until_entered() {
    let (entered, exited) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let manager = counting(entered.clone(), exited.clone());
    tokio::task::yield_now().await;
    assert_eq!(entered.load(Ordering::SeqCst), 0);
    with_scope!(manager => {
        assert_eq!(entered.load(Ordering::SeqCst), 1);
        assert_eq!(exited.load(Ordering::SeqCst), 0);
    });
    assert_eq!(exited.load(Ordering::SeqCst), 1);

    // A manager that is never entered runs nothing, even when dropped.
    drop(counting(entered.clone(), exited.clone()));
    assert_eq!(entered.load(Ordering::SeqCst), 1);
    assert_eq!(exited.load(Ordering::SeqCst), 1);
}

struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_context_manager]
async fn keeps_wildcard(_: DropCount, drops: Arc<AtomicUsize>, at_exit: Arc<AtomicUsize>) -> u32 {
    let _ = yield_!(7);
    at_exit.store(drops.load(Ordering::SeqCst) + 100, Ordering::SeqCst);
}

#[tokio::test]
async fn wildcard_argument_lives_until_exit() {
    let drops = Arc::new(AtomicUsize::new(0));
    let at_exit = Arc::new(AtomicUsize::new(0));
    let out = with_scope!(keeps_wildcard(DropCount(drops.clone()), drops.clone(), at_exit.clone()) as v => {
        assert_eq!(drops.load(Ordering::SeqCst), 0, "alive during the body");
        v
    });
    assert_eq!(out, 7);
    assert_eq!(at_exit.load(Ordering::SeqCst), 100, "alive during the exit");
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "dropped once, after the scope"
    );
}

// ------------------------------------------------------------- executors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_manager_in_a_spawned_task() {
    let log = Log::default();
    let task_log = log.clone();
    let out = tokio::spawn(async move {
        let r: Result<usize, AppError> = with_scope!(transaction(task_log.clone(), false, false) as tx => {
            tx.push("a".into());
            tokio::task::yield_now().await;
            tx.push("b".into());
            Ok(tx.len())
        });
        r
    })
    .await
    .unwrap();
    assert_eq!(out, Ok(2));
    assert_eq!(log.take(), ["begun", r#"commit ["a", "b"]"#]);
}

#[test]
fn generated_manager_on_futures_block_on() {
    let log = Log::default();
    let out = futures::executor::block_on(async {
        with_scope!(owned(log.clone(), 4) as n, lend_mut(Arc::default()) as v => {
            v.push(n);
            v.len()
        })
    });
    assert_eq!(out, 2);
    assert_eq!(log.take(), ["enter", "exit success"]);
}

/// `Send` but not `Sync`.
struct Conn {
    uses: Cell<u32>,
}

#[async_context_manager]
async fn connection(at_exit: Arc<AtomicUsize>) -> &mut Conn {
    let mut conn = Conn { uses: Cell::new(0) };
    let _ = yield_!(&mut conn);
    at_exit.store(conn.uses.get() as usize, Ordering::SeqCst);
}

fn assert_send<T: Send>(_: &T) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_lending_of_send_not_sync_is_send() {
    let at_exit = Arc::new(AtomicUsize::new(0));
    let manager = connection(at_exit.clone());
    assert_send(&manager);
    let fut = async move {
        with_scope!(manager as conn => {
            conn.uses.set(1);
            tokio::task::yield_now().await;
            conn.uses.set(conn.uses.get() + 1);
        })
    };
    assert_send(&fut);
    tokio::spawn(fut).await.unwrap();
    assert_eq!(at_exit.load(Ordering::SeqCst), 2);
}

// ------------------------------------------------------------- regressions

mod issue1 {
    //! Attributes and doc comments on the fn are kept; visibility too.
    use super::*;

    /// Documented.
    #[async_context_manager]
    #[must_use]
    pub async fn documented() -> u8 {
        let _ = yield_!(3);
    }

    #[tokio::test]
    async fn test() {
        assert_eq!(with_scope!(documented() as v => { v }), 3);
    }
}

mod issue7 {
    //! A `yield_!` inside another macro's input is rejected
    //! (`tests/ui/yield-in-*-macro.rs`); its outcome, bound first, can be
    //! used in one.
    use super::*;

    #[async_context_manager]
    async fn in_macro() -> u8 {
        let outcome = yield_!(5);
        assert!(matches!(outcome, Outcome::Success));
    }

    #[tokio::test]
    async fn test() {
        assert_eq!(with_scope!(in_macro() as v => { v }), 5);
    }
}
