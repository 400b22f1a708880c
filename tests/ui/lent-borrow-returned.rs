// The first case: the block returns the lent `&mut` as the scope's
// value. One error, on the binding, with the later use.
use async_contextlib::{async_context_manager, with_scope, yield_};

#[async_context_manager]
async fn lend() -> &mut Vec<u32> {
    let mut v = Vec::new();
    yield_!(&mut v);
}

async fn returned() {
    let kept = with_scope!(lend() as v => { v });
    kept.push(1);
}

fn main() {}
