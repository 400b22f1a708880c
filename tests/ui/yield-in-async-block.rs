use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn in_async_block() -> u32 {
    async {
        yield_!(1);
    }
    .await;
}

fn main() {}
