use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
fn not_async() -> u32 {
    yield_!(1);
}

fn main() {}
