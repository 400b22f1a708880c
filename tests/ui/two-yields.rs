use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn twice() -> u32 {
    yield_!(1);
    yield_!(2);
}

fn main() {}
