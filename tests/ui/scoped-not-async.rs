use async_contextlib::{nullcontext, scoped};

#[scoped(nullcontext(1) as n)]
fn not_async() -> u32 {
    n
}

fn main() {
    let _ = not_async;
}
