use async_contextlib::{async_context_manager, with_scope, yield_};

#[derive(Debug)]
struct DbError;

#[async_context_manager]
async fn connect() -> Result<u32, DbError> {
    yield_!(1);
}

async fn run() {
    let _ = with_scope!(connect() as _c => {
        panic!("not yet written")
    });
}

fn main() {}
