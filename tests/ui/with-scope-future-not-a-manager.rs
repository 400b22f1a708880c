// A plain `async fn` (the attribute forgotten) given to `with_scope!`: one
// error, on the call, saying what a manager is.
use async_contextlib::with_scope;

struct Conn;

impl Conn {
    fn query(&self) -> u32 {
        1
    }
}

async fn connect() -> Conn {
    Conn
}

async fn run() -> u32 {
    with_scope!(connect() as c => { c.query() })
}

fn main() {}
