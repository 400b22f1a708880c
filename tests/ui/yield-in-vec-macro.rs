use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn in_vec() -> u32 {
    let outcomes = vec![yield_!(1)];
    let _ = outcomes;
}

fn main() {}
