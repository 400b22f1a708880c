use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn in_for() -> u32 {
    for i in 0..1 {
        yield_!(i);
    }
}

fn main() {}
