use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn resource() -> u32 {
    yield_!(1);
}

async fn run() -> u32 {
    let r = resource().await;
    r
}

fn main() {}
