use async_contextlib::{nullcontext, with_scope};

async fn f() -> u32 {
    with_scope!(nullcontext(1u32) as (a, b) => { a + b })
}

fn main() {}
