use std::rc::Rc;
use async_contextlib::{ExitStack, async_context_manager, yield_};

// A generated manager whose frame holds an `Rc` across its yield: its
// exit is not `Send`, so it belongs in a `LocalExitStack`.
#[async_context_manager]
async fn local(shared: Rc<u32>) -> u32 {
    let _ = yield_!(*shared);
    drop(shared);
}

async fn run() {
    let stack = ExitStack::new();
    stack.enter(local(Rc::new(1))).await.unwrap();
}

fn main() {
    drop(run());
}
