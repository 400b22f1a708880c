use async_contextlib::{async_context_manager, with_scope, yield_};

#[derive(Debug)]
struct DbError;

#[async_context_manager]
async fn connect() -> Result<u32, DbError> {
    yield_!(1);
}

fn parse(s: &str) -> Result<u32, DbError> {
    s.parse().map_err(|_| DbError)
}

async fn run() -> Result<u32, DbError> {
    let n = with_scope!(connect() as c => {
        let k = parse("1")?;
        Ok(c + k)
    })?;
    Ok(n)
}

fn main() {}
