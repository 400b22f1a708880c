use std::convert::Infallible;
use async_contextlib::{AsyncContextManager, ExitStack, Outcome};

// A hand-written manager that did not say its exit is `Send`.
struct Lease;

impl AsyncContextManager for Lease {
    type Value<'a> = ();
    type Error = Infallible;
    async fn enter(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
    async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> {
        Ok(())
    }
}

async fn run() {
    let stack = ExitStack::new();
    stack.enter(Lease).await.unwrap();
}

fn main() {
    drop(run());
}
