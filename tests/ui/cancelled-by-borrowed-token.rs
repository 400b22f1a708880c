use async_contextlib::{cancelled_by, with_scope};
use tokio_util::sync::CancellationToken;

async fn f(token: &CancellationToken) -> Result<(), std::io::Error> {
    // The manager owns a token: pass a clone, not a borrow.
    with_scope!(cancelled_by(token) => { Ok(()) })
}

fn main() {}
