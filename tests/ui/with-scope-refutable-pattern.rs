use async_contextlib::{nullcontext, with_scope};

async fn f() -> u32 {
    with_scope!(nullcontext(Some(1)) as Some(n) => { n })
}

fn main() {}
