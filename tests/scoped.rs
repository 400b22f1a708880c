//! `#[scoped(..)]` (issue 9): an async fn's whole body in a scope, as
//! Python's `AsyncContextDecorator`. It behaves as the block of a
//! `with_scope!`: order, outcomes, error conversion, panics, cancellation.

mod common;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_contextlib::testing::Recorder;
use async_contextlib::{Outcome, async_context_manager, drain, nullcontext, scoped, yield_};
use common::Log;
use futures::FutureExt;

#[derive(Debug, PartialEq)]
enum AppError {
    Db(String),
    Body(&'static str),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

#[derive(Debug)]
struct DbError(String);

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        AppError::Db(e.0)
    }
}

/// A fallible generated manager that logs what its exit saw.
#[async_context_manager]
async fn transaction(
    name: &'static str,
    log: Log,
    fail_enter: bool,
) -> Result<&mut Vec<String>, DbError> {
    if fail_enter {
        Err(DbError(format!("{name}: cannot begin")))?;
    }
    log.push(format!("begin {name}"));
    let mut rows = Vec::new();
    let outcome = yield_!(&mut rows);
    log.push(format!(
        "{} {name} {rows:?}",
        if outcome.is_success() {
            "commit"
        } else {
            "rollback"
        }
    ));
    if let Outcome::Failed(f) = &outcome {
        log.push(format!("saw failure: {}", f.message()));
    }
}

struct Bank {
    log: Log,
}

impl Bank {
    #[scoped(transaction("outer", self.log.clone(), false) as tx, nullcontext(amount) as n)]
    async fn transfer(&self, amount: u32, fail: bool) -> Result<u32, AppError> {
        tx.push(format!("move {n}"));
        if fail {
            return Err(AppError::Body("refused"));
        }
        helper()?;
        Ok(n * 2)
    }
}

fn helper() -> Result<(), AppError> {
    Ok(())
}

#[scoped(transaction("free", log.clone(), fail_enter) as tx)]
async fn free_fn(log: Log, fail_enter: bool) -> Result<usize, AppError> {
    tx.push("row".to_owned());
    Ok(tx.len())
}

#[tokio::test]
async fn a_method_runs_inside_its_managers_in_order() {
    let bank = Bank {
        log: Log::default(),
    };
    assert_eq!(bank.transfer(5, false).await, Ok(10));
    assert_eq!(
        bank.log.take(),
        ["begin outer", "commit outer [\"move 5\"]"]
    );
}

#[tokio::test]
async fn return_and_question_mark_fail_the_scope_and_the_exit_sees_it() {
    let bank = Bank {
        log: Log::default(),
    };
    assert_eq!(bank.transfer(5, true).await, Err(AppError::Body("refused")));
    assert_eq!(
        bank.log.take(),
        [
            "begin outer",
            "rollback outer [\"move 5\"]",
            "saw failure: Body(\"refused\")"
        ]
    );
}

#[tokio::test]
async fn a_free_fn_and_an_enter_error_converted_with_from() {
    let log = Log::default();
    assert_eq!(free_fn(log.clone(), false).await, Ok(1));
    assert_eq!(
        free_fn(log.clone(), true).await,
        Err(AppError::Db("free: cannot begin".into()))
    );
    // The second fn's body never ran: no exit for an enter that failed.
    assert_eq!(log.take(), ["begin free", "commit free [\"row\"]"]);
}

#[scoped(recorder.manager() as id)]
async fn panics(recorder: Recorder) -> usize {
    if id < 10 {
        panic!("body panicked");
    }
    id
}

#[tokio::test]
async fn a_panic_in_the_body_is_seen_by_the_exit_then_resumes() {
    let recorder = Recorder::new("decorated");
    let result = std::panic::AssertUnwindSafe(panics(recorder.clone()))
        .catch_unwind()
        .await;
    assert!(result.is_err());
    assert!(matches!(recorder.outcomes()[..], [Outcome::Panicked(_)]));
}

#[scoped(recorder.manager() as _id)]
async fn waits(recorder: Arc<Recorder>) {
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[test]
fn cancelling_the_fn_runs_the_exit_once_on_both_flavours() {
    for rt in [
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap(),
    ] {
        let recorder = Arc::new(Recorder::new("cancelled"));
        rt.block_on(async {
            let r = tokio::time::timeout(Duration::from_millis(5), waits(recorder.clone())).await;
            assert!(r.is_err());
            drain().await;
        });
        assert!(matches!(recorder.outcomes()[..], [Outcome::Cancelled]));
    }
}

#[scoped(crate = "async_contextlib", nullcontext(x) as y)]
async fn with_crate_path(x: u8) -> u8 {
    y + 1
}

#[tokio::test]
async fn the_crate_path_argument() {
    assert_eq!(with_crate_path(1).await, 2);
}

#[scoped(nullcontext((3, String::from("three"))) as (n, mut name))]
async fn destructured(suffix: &str) -> String {
    name.push_str(suffix);
    format!("{n} {name}")
}

#[tokio::test]
async fn the_attribute_takes_patterns_after_as() {
    assert_eq!(destructured("!").await, "3 three!");
}
