// Safe code pointing `crate = "..."` at a fake facade whose lending mode is
// another one, so that the rewritten yield resolves to the user's trait
// method, which gets the real yielder by value. The yielder is useless
// there: making a yield future from it needs `unsafe`.
#![forbid(unsafe_code)]

use async_contextlib::{async_context_manager, yield_};

mod fake {
    pub use async_contextlib::*;
    pub mod generated {
        pub use async_contextlib::generated::*;
        pub type LendRef<T> = async_contextlib::generated::LendMut<T>;
    }
}

trait Hijack: Sized {
    fn lend_ref<V: ?Sized>(self, _v: &V) -> std::future::Ready<Self> {
        std::future::ready(self)
    }
}
impl<C> Hijack for C {}

#[async_context_manager(crate = "crate::fake")]
async fn evil() -> &Vec<u64> {
    let dummy: Vec<u64> = Vec::new();
    let co = yield_!(&dummy);
    let mut target = vec![1u64, 2, 3];
    let lend = co.lend_mut(&mut target);
    drop(lend);
}

fn main() {}
