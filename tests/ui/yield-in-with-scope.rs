use async_contextlib::{async_context_manager, nullcontext, with_scope, yield_};

// Python's `async with lock: yield conn` — but the scope's block is a
// future the scope polls, not the fn's own frame.
#[async_context_manager]
async fn held() -> u32 {
    with_scope!(nullcontext(1) as n => {
        let _ = yield_!(n);
    });
}

fn main() {}
