//! `testing::Recorder`'s doubles: a lent value the test chooses, and
//! failures and panics injected at enter or exit, seen by the scope and by
//! the managers around the double.

#[path = "driver_util/mod.rs"]
mod driver_util;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_contextlib::testing::{Event, Injected, Recorder, Stage};
use async_contextlib::{Outcome, with_scope};
use driver_util::{forever, on_both, spawn_then_abort};
use futures::FutureExt;

#[derive(Debug, Default)]
struct FakeConn {
    sent: Vec<String>,
}

impl FakeConn {
    fn send(&mut self, line: &str) {
        self.sent.push(line.to_owned());
    }
}

#[tokio::test]
async fn a_fake_lends_the_value_the_test_chose_and_keeps_what_the_block_did() {
    let recorder = Recorder::new("conn");
    let mut fake = recorder.lending(FakeConn::default());
    let r: Result<usize, Injected> = with_scope!(&mut fake as conn => {
        conn.send("BEGIN");
        conn.send("COMMIT");
        Ok(conn.sent.len())
    });
    assert_eq!(r.unwrap(), 2);
    assert_eq!(fake.value().sent, ["BEGIN", "COMMIT"]);
    assert_eq!(fake.into_value().sent.len(), 2);
    assert!(matches!(
        recorder.events()[..],
        [
            Event::Enter { id: 0 },
            Event::Exit {
                id: 0,
                outcome: Outcome::Success
            }
        ]
    ));
}

#[tokio::test]
async fn a_failing_enter_skips_the_block_and_the_outer_manager_sees_failed() {
    let recorder = Recorder::new("db");
    let outer = Recorder::new("outer");
    let mut ran = false;
    let r: Result<(), Injected> = with_scope!(
        outer.manager(),
        recorder.lending(FakeConn::default()).fail_enter() as _conn => {
            ran = true;
            Ok(())
        }
    );
    let err = r.unwrap_err();
    assert_eq!(err.stage(), Stage::Enter);
    assert_eq!(err.to_string(), "db: injected enter failure");
    assert!(!ran);
    assert_eq!(recorder.enters(), 1);
    assert!(
        recorder.outcomes().is_empty(),
        "an enter that failed has no exit"
    );
    match &outer.outcomes()[..] {
        [Outcome::Failed(f)] => assert!(f.message().contains("injected enter failure")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_failing_exit_fails_the_scope_after_the_block_succeeded() {
    let recorder = Recorder::new("db");
    let r: Result<u32, Injected> =
        with_scope!(recorder.lending(5u32).fail_exit() as n => { Ok(*n) });
    assert_eq!(r.unwrap_err().stage(), Stage::Exit);
    assert!(matches!(recorder.outcomes()[..], [Outcome::Success]));
}

#[tokio::test]
async fn a_panicking_enter_or_exit_resumes_and_the_others_see_panicked() {
    for stage in [Stage::Enter, Stage::Exit] {
        let recorder = Recorder::new("db");
        let outer = Recorder::new("outer");
        let fake = recorder.lending(());
        let fake = match stage {
            Stage::Enter => fake.panic_enter(),
            Stage::Exit => fake.panic_exit(),
        };
        let caught = AssertUnwindSafe(async {
            let _: Result<(), Injected> = with_scope!(outer.manager(), fake => { Ok(()) });
        })
        .catch_unwind()
        .await;
        let payload = caught.expect_err("the injected panic resumes");
        let text = payload
            .downcast_ref::<String>()
            .expect("a formatted payload");
        assert!(
            text.contains(&format!("injected {stage:?} panic").to_lowercase()),
            "{text}"
        );
        assert!(
            matches!(outer.outcomes()[..], [Outcome::Panicked(_)]),
            "{stage:?}"
        );
    }
}

#[tokio::test]
async fn a_recording_can_panic_at_exit_and_still_records_what_it_saw() {
    let recorder = Recorder::new("plain");
    let caught = AssertUnwindSafe(async {
        let _: Result<(), &str> = with_scope!(recorder.manager().panic_exit() => { Err("body") });
    })
    .catch_unwind()
    .await;
    assert!(caught.is_err());
    match &recorder.outcomes()[..] {
        [Outcome::Failed(f)] => assert_eq!(f.message(), "body"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_fake_cut_by_a_timeout_or_an_abort_records_cancelled_on_both_flavours() {
    on_both(|flavour| async move {
        let recorder = Recorder::new("db");
        let cut = tokio::time::timeout(Duration::from_millis(5), async {
            let _: Result<(), Injected> = with_scope!(recorder.lending(FakeConn::default()) as c => {
                c.send("half");
                forever().await;
                Ok(())
            });
        })
        .await;
        assert!(cut.is_err());
        let r2 = recorder.clone();
        spawn_then_abort(async move {
            let _: Result<(), Injected> = with_scope!(r2.lending(0u8) => {
                forever().await;
                Ok(())
            });
        })
        .await;
        assert!(
            matches!(
                recorder.outcomes()[..],
                [Outcome::Cancelled, Outcome::Cancelled]
            ),
            "{flavour}: {:?}",
            recorder.outcomes()
        );
    });
}
