use async_contextlib::with_scope;

async fn f() {
    with_scope!(=> { 1 });
}

fn main() {}
