use async_contextlib::{async_context_manager, yield_};

#[derive(Debug)]
struct DbError;

#[async_context_manager]
async fn resource() -> Result<u32, DbError> {
    yield_!(1);
    Ok(())
}

fn main() {}
