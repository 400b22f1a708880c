use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn in_loop() -> u32 {
    loop {
        yield_!(1);
        break;
    }
}

fn main() {}
