use std::convert::Infallible;
use async_contextlib::{with_scope, AsyncContextManager, Outcome};

#[derive(Debug)]
struct PoolError;

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pool")
    }
}

struct Pool;

impl AsyncContextManager for Pool {
    type Value<'a> = u32;
    type Error = PoolError;
    async fn enter(&mut self) -> Result<u32, PoolError> { Ok(1) }
    async fn exit(&mut self, _: Outcome) -> Result<(), PoolError> { Ok(()) }
}

#[derive(Debug)]
struct AppError;

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("app")
    }
}

async fn f() -> Result<u32, AppError> {
    let _ = Infallible::from;
    with_scope!(Pool as n => { Ok::<u32, AppError>(n) })
}

fn main() {}
