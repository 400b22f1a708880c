use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn never_yields() -> u32 {
    let _x = 1;
}

fn main() {}
