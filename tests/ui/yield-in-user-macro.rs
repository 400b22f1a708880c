use async_contextlib::{async_context_manager, yield_};

// A user macro that wraps its input in an `async` block the attribute
// cannot see: the yield future could be polled once and dropped.
macro_rules! later {
    ($e:expr) => {
        async move { $e }
    };
}

#[async_context_manager]
async fn hidden() -> &mut String {
    let mut s = String::new();
    let fut = later!(yield_!(&mut s));
    drop(fut);
}

fn main() {}
