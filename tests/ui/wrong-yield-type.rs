use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn wrong_type() -> u32 {
    yield_!("not a number");
}

fn main() {}
