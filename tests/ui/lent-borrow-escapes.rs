use async_contextlib::{async_context_manager, with_scope, yield_};

#[async_context_manager]
async fn lend() -> &mut Vec<u32> {
    let mut v = Vec::new();
    yield_!(&mut v);
}

async fn escape() {
    let mut outer: Option<&mut Vec<u32>> = None;
    with_scope!(lend() as v => {
        outer = Some(v);
    });
    outer.unwrap().push(1);
}

fn main() {}
