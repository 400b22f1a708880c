use async_contextlib::{async_context_manager, yield_};

// Three yields are still one mistake: one error, marking the first to the last.
#[async_context_manager]
async fn thrice(flag: bool) -> u32 {
    if flag {
        yield_!(1);
    }
    yield_!(2);
    let _ = flag;
    yield_!(3);
}

fn main() {}
