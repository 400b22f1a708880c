//! A lending and an owning generated manager in one scope.
use async_contextlib::{Outcome, async_context_manager, with_scope, yield_};

#[async_context_manager]
async fn buffer() -> &mut Vec<u8> {
    let mut buf = Vec::new();
    let outcome = yield_!(&mut buf);
    assert!(matches!(outcome, Outcome::Success));
    assert_eq!(buf, [1, 2]);
}

#[async_context_manager]
async fn number(n: u8) -> u8 {
    yield_!(n);
}

fn main() {
    let len = futures::executor::block_on(async {
        with_scope!(number(1) as a, buffer() as buf, number(a + 1) as b => {
            buf.push(a);
            buf.push(b);
            buf.len()
        })
    });
    assert_eq!(len, 2);
}
