use async_contextlib::{nullcontext, with_scope};

async fn f() {
    with_scope!(nullcontext(1) as => { 1 });
}

fn main() {}
