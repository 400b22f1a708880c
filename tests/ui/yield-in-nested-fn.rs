use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn outer() -> u32 {
    async fn inner() {
        yield_!(1);
    }
    inner().await;
}

fn main() {}
