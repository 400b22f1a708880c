use async_contextlib::{with_scope, AsyncContextManager, Outcome};

#[derive(Debug)]
struct PoolError;

struct Pool;

impl AsyncContextManager for Pool {
    type Value<'a> = u32;
    type Error = PoolError;
    async fn enter(&mut self) -> Result<u32, PoolError> { Ok(1) }
    async fn exit(&mut self, _: Outcome) -> Result<(), PoolError> { Ok(()) }
}

async fn f() -> u32 {
    with_scope!(Pool as n => { n + 1 })
}

fn main() {}
