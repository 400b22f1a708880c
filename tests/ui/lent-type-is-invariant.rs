// The lent `&mut &'static str` is invariant in its pointee: the block
// cannot store a shorter-lived `&str` in it (the generator would later read
// a dangling reference).
use async_contextlib::{async_context_manager, with_scope, yield_};

#[async_context_manager]
async fn name() -> &mut &'static str {
    let mut name: &'static str = "static";
    yield_!(&mut name);
    println!("{name}");
}

async fn shorten() {
    with_scope!(name() as n => {
        let local = String::from("local");
        *n = &local;
    });
}

fn main() {}
