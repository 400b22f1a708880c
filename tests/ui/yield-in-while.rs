use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn in_while(mut n: u32) -> u32 {
    while n > 0 {
        yield_!(n);
        n -= 1;
    }
}

fn main() {}
