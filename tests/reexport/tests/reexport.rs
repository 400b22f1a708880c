//! `#[async_context_manager(crate = "...")]` through a re-export: this
//! package has no `async_contextlib` in scope, only `reexport_test::contextlib`.

use std::sync::{Arc, Mutex};

use reexport_test::contextlib::{self, Outcome, async_context_manager, with_scope, yield_};

#[async_context_manager(crate = "reexport_test::contextlib")]
async fn lend(log: Arc<Mutex<Vec<String>>>) -> Result<&mut Vec<u32>, std::io::Error> {
    let mut v = vec![1];
    log.lock().unwrap().push("enter".into());
    let outcome = yield_!(&mut v);
    log.lock()
        .unwrap()
        .push(format!("exit {} {v:?}", outcome.label()));
}

#[async_context_manager(crate = "::reexport_test::contextlib")]
async fn owned() -> u32 {
    let outcome: Outcome = contextlib::yield_!(5);
    assert!(outcome.is_success());
}

#[tokio::test]
async fn generated_through_the_reexport() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let out: Result<usize, std::io::Error> = with_scope!(lend(log.clone()) as v, owned() as n => {
        v.push(n);
        Ok(v.len())
    });
    assert_eq!(out.unwrap(), 2);
    assert_eq!(*log.lock().unwrap(), ["enter", "exit success [1, 5]"]);
}

#[test]
fn with_scope_through_the_reexport_on_block_on() {
    let out = futures::executor::block_on(async {
        contextlib::with_scope!(contextlib::nullcontext(3) as n => { n + 1 })
    });
    assert_eq!(out, 4);
}
