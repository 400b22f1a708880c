use async_contextlib::{async_context_manager, nullcontext, with_scope, yield_};

#[async_context_manager]
async fn in_manager_list() -> u32 {
    with_scope!(nullcontext(yield_!(1)) as n => {
        let _ = n;
    });
}

fn main() {}
