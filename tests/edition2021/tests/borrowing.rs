//! Borrowing generated managers from an edition-2021 crate.

use async_contextlib::{async_context_manager, with_scope, yield_};

#[async_context_manager]
async fn counted(log: &mut Vec<&'static str>) -> &mut u32 {
    let mut n = 0;
    let outcome = yield_!(&mut n);
    log.push(if outcome.is_success() { "ok" } else { "failed" });
    assert_eq!(n, 1);
}

struct Db {
    prefix: String,
}

impl Db {
    #[async_context_manager]
    async fn session(&self, name: &str) -> String {
        let _ = yield_!(format!("{}{}", self.prefix, name));
    }
}

#[test]
fn borrowing_managers_compile_and_run_in_edition_2021() {
    let mut log = Vec::new();
    let db = Db {
        prefix: "db:".into(),
    };
    let name = futures::executor::block_on(async {
        with_scope!(counted(&mut log) as n => { *n += 1; });
        with_scope!(db.session("alice") as s => { s.clone() })
    });
    assert_eq!(name, "db:alice");
    assert_eq!(log, ["ok"]);
}
