use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn opaque() -> impl std::fmt::Debug {
    yield_!(1);
}

fn main() {}
