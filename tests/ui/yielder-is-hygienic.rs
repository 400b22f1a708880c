use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn steal() -> u32 {
    // The yielder's name is hygienic: user code cannot reach it.
    let stolen = __acm_co;
    yield_!(1);
    let _ = stolen;
}

fn main() {}
