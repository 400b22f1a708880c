//! `closing`, `from_sync` and the `testing::Recorder` double.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use async_contextlib::testing::{Event, Recorder};
use async_contextlib::{AsyncClose, Outcome, closing, drain, from_sync, with_scope};

struct Conn {
    closes: Arc<AtomicUsize>,
}

impl AsyncClose for Conn {
    type Error = Infallible;
    async fn close(&mut self) -> Result<(), Infallible> {
        tokio::task::yield_now().await;
        self.closes.fetch_add(1, SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn closing_closes_on_success_error_and_cancellation() {
    let closes = Arc::new(AtomicUsize::new(0));
    let conn = || Conn {
        closes: closes.clone(),
    };
    with_scope!(closing(conn()) => {});
    let r: Result<(), &str> = with_scope!(closing(conn()) => { Err("no") });
    assert!(r.is_err());
    assert_eq!(closes.load(SeqCst), 2);
    // Cancelled mid-block: `Closing<Conn>` is owned, so the driver closes it.
    let cut = tokio::time::timeout(Duration::from_millis(5), async {
        with_scope!(closing(conn()) => {
            std::future::pending::<()>().await;
        })
    })
    .await;
    assert!(cut.is_err());
    drain().await;
    assert_eq!(closes.load(SeqCst), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn from_sync_runs_blocking_work_off_the_async_thread() {
    let here = std::thread::current().id();
    let seen: Arc<Mutex<Vec<(ThreadId, String)>>> = Arc::default();
    let (a, b) = (seen.clone(), seen.clone());
    let manager = from_sync(
        move || {
            a.lock()
                .unwrap()
                .push((std::thread::current().id(), "enter".into()));
            Ok::<_, std::io::Error>(String::from("x"))
        },
        move |value: String, outcome: Outcome| {
            b.lock().unwrap().push((
                std::thread::current().id(),
                format!("exit {value} {}", outcome.label()),
            ));
            Ok(())
        },
    );
    let r: Result<usize, std::io::Error> = with_scope!(manager as v => {
        v.push('y');
        Ok(v.len())
    });
    assert_eq!(r.unwrap(), 2);
    let seen = seen.lock().unwrap().clone();
    let labels: Vec<&str> = seen.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(labels, ["enter", "exit xy success"]);
    assert!(
        seen.iter().all(|(t, _)| *t != here),
        "blocking work ran on the async thread"
    );
}

#[tokio::test]
async fn from_sync_enter_error_runs_no_exit_and_exit_panic_resumes() {
    let exits = Arc::new(AtomicUsize::new(0));
    let e = exits.clone();
    let manager = from_sync(
        || Err::<u8, _>(std::io::Error::other("locked")),
        move |_, _| {
            e.fetch_add(1, SeqCst);
            Ok(())
        },
    );
    let r: Result<(), std::io::Error> = with_scope!(manager => { Ok(()) });
    assert_eq!(r.unwrap_err().to_string(), "locked");
    assert_eq!(exits.load(SeqCst), 0);

    let manager = from_sync(
        || Ok::<u8, std::io::Error>(1),
        |_, _| panic!("exit blew up"),
    );
    let panicked = tokio::spawn(async move {
        let _: Result<(), std::io::Error> = with_scope!(manager => { Ok(()) });
    })
    .await
    .unwrap_err();
    let payload = panicked.into_panic();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"exit blew up"));
}

#[tokio::test]
async fn recorder_records_order_and_outcomes() {
    let rec = Recorder::new("double");
    let r: Result<(), String> = with_scope!(rec.manager() as a, rec.manager() as b => {
        assert_eq!((a, b), (0, 1));
        Err("inner".to_string())
    });
    assert!(r.is_err());
    let order: Vec<String> = rec
        .events()
        .iter()
        .map(|e| match e {
            Event::Enter { id } => format!("enter {id}"),
            Event::Exit { id, outcome } => format!("exit {id} {}", outcome.label()),
        })
        .collect();
    assert_eq!(
        order,
        ["enter 0", "enter 1", "exit 1 failed", "exit 0 failed"]
    );
    assert_eq!(rec.enters(), 2);
    assert!(
        rec.outcomes()
            .iter()
            .all(|o| o.failure().unwrap().message() == "inner")
    );
}
