use async_contextlib::{async_context_manager, yield_};

#[async_context_manager(krate = "async_contextlib")]
async fn with_bad_arg() -> u32 {
    yield_!(1);
}

fn main() {}
