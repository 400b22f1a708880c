// A lifetime hidden in an argument's path (`Conn` for `Conn<'a>`): the
// attribute cannot see it and takes the fn for owned. The error is at the
// fn, on the argument, not at each `with_scope!` that uses the manager.
// Writing `Conn<'_>` makes the manager borrowing, and it compiles.
use async_contextlib::{async_context_manager, yield_};

pub struct Conn<'a>(pub &'a mut u32);

#[async_context_manager]
async fn session(conn: Conn) -> u32 {
    *conn.0 += 1;
    yield_!(1);
}

fn main() {}
