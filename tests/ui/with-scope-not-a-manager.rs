use async_contextlib::with_scope;

async fn f() {
    with_scope!(5 as x => { x });
}

fn main() {}
