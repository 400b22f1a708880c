use async_contextlib::{locked, with_scope};

// `locked` takes tokio's async `Mutex`; a `std::sync::Mutex` cannot be held
// across the block's awaits.
async fn count(m: &std::sync::Mutex<u32>) {
    with_scope!(locked(m) as n => { *n += 1 });
}

fn main() {}
