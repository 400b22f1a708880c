use std::time::Duration;

use async_contextlib::{move_on_after, with_scope};

async fn f() -> Option<u32> {
    // The block must be an `Option` (a cut makes the scope `None`): write `Some(1)`.
    let r: Option<u32> = with_scope!(move_on_after(Duration::from_millis(5)) => { 1u32 });
    r
}

fn main() {}
