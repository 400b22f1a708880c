use async_contextlib::{acquired, with_scope};
use tokio::sync::Semaphore;

async fn f(sem: &Semaphore) -> Result<(), async_contextlib::SemaphoreClosed> {
    let n: usize = 2;
    // Permits are counted in `u32`, as tokio's `acquire_many` takes them.
    with_scope!(acquired(sem, n) => { Ok(()) })
}

fn main() {}
