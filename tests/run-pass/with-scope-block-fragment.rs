//! `with_scope!` called by a `macro_rules!` that forwards its block as a
//! `$b:block` fragment (which arrives in an invisible group).
use async_contextlib::{nullcontext, with_scope};

macro_rules! scope_block {
    ($m:expr, $b:block) => {
        with_scope!($m as v => $b)
    };
}

fn main() {
    futures::executor::block_on(async {
        assert_eq!(scope_block!(nullcontext(1u32), { 5 }), 5);
    });
}
