use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn in_closure() -> u32 {
    let f = || yield_!(1);
    f();
}

fn main() {}
