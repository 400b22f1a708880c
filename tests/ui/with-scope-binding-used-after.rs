use async_contextlib::{nullcontext, with_scope};

async fn f() -> u32 {
    with_scope!(nullcontext(1) as n => { n });
    n
}

fn main() {}
