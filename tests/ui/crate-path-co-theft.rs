// Safe code pointing `crate = "..."` at a fake facade in which `LendMut<T>`
// is really `ByValue<T>`, hoping the yield resolves to a user trait method
// that stashes the real yielder. The yield names the real `Co` and its
// inherent method, so the types do not line up; and a stolen yielder would
// need `unsafe` to write anything.
#![forbid(unsafe_code)]

use async_contextlib::{Outcome, async_context_manager, yield_};

mod fake {
    pub use async_contextlib::*;
    pub mod generated {
        pub use async_contextlib::generated::*;
        pub type LendMut<T> = async_contextlib::generated::ByValue<T>;
    }
}

trait Hijack {
    fn lend_mut(self, v: &mut u32) -> std::future::Ready<Outcome>;
}
impl<C: 'static> Hijack for C {
    fn lend_mut(self, _v: &mut u32) -> std::future::Ready<Outcome> {
        std::mem::forget(self);
        std::future::ready(Outcome::Success)
    }
}

#[async_context_manager(crate = "crate::fake")]
async fn evil() -> &mut u32 {
    let mut x = 0u32;
    let _ = yield_!(&mut x);
}

fn stolen(co: async_contextlib::__private::Co<async_contextlib::generated::ByValue<u32>>) {
    let _ = co.yield_value(0xdead_beef);
}

fn main() {}
