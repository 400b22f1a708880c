use async_contextlib::{read_locked, with_scope};
use tokio::sync::RwLock;

async fn f(lock: &RwLock<Vec<u32>>) {
    // A read lock lends `&T`: writing needs `write_locked`.
    with_scope!(read_locked(lock) as v => { v.push(1) });
}

fn main() {}
