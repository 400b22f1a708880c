use async_contextlib::{async_context_manager, yield_};

#[async_context_manager(crate = "async_contextlib::<u8>")]
async fn generic_path() -> u32 {
    yield_!(1);
}

fn main() {}
