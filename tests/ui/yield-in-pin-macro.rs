use async_contextlib::{async_context_manager, yield_};

#[async_context_manager]
async fn pinned() -> &mut String {
    let mut s = String::new();
    // The yield future would be pinned (and could be polled once and
    // dropped) by `pin!`, out of the attribute's sight.
    let outcome = std::pin::pin!(yield_!(&mut s));
    let _ = outcome;
}

fn main() {}
