use async_contextlib::{nullcontext, with_scope};

fn not_async() -> u32 {
    with_scope!(nullcontext(1) as n => { n })
}

fn main() {}
