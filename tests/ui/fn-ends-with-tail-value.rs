use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn tail() -> u32 {
    yield_!(1);
    5
}

fn main() {}
