use async_contextlib::{async_context_manager, yield_};

struct Pool {
    conn: u32,
}

#[async_context_manager]
async fn lease<'a>(pool: &'a mut Pool) -> &'a mut u32 {
    yield_!(&mut pool.conn);
}

fn main() {}
