use async_contextlib::{async_context_manager, yield_};

#[async_context_manager(crate = "async_contextlib", crate = "async_contextlib")]
async fn dup() -> u32 {
    yield_!(1);
}

fn main() {}
