use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn lend_field(v: Vec<u32>) -> &mut u32 {
    yield_!(5);
}

fn main() {}
