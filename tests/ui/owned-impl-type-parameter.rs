// A type parameter of the surrounding impl is invisible to the attribute,
// which takes the fn for owned: the error is at the argument, with rustc's
// suggestion (`T: 'static`); `#[async_context_manager(borrowing)]` is the
// other way out.
use async_contextlib::{async_context_manager, yield_};

pub struct Holder<T>(T);

impl<T: Send> Holder<T> {
    #[async_context_manager]
    pub async fn hold(x: T) -> usize {
        let _keep = x;
        yield_!(1);
    }
}

fn main() {}
