use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn empty() -> u32 {
    yield_!();
}

fn main() {}
