use std::convert::Infallible;
use std::rc::Rc;

use async_contextlib::{AsyncContextManager, BoxManager, Outcome, box_manager};

/// Its enter future holds an `Rc` across an await: not `Send`.
struct Local(u32);

impl AsyncContextManager for Local {
    type Value<'a> = &'a mut u32;
    type Error = Infallible;
    async fn enter(&mut self) -> Result<&mut u32, Infallible> {
        let rc = Rc::new(());
        tokio::task::yield_now().await;
        drop(rc);
        Ok(&mut self.0)
    }
    async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> {
        Ok(())
    }
}

fn boxed() -> BoxManager<u32, Infallible> {
    box_manager!(Local(1))
}

fn main() {}
