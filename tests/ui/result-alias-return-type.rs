use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn io_alias() -> std::io::Result<u32> {
    yield_!(1);
}

fn main() {}
