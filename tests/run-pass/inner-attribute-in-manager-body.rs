//! Inner attributes at the top of a manager fn's body (`#![allow(..)]`, an
//! inner doc comment) stay inside the generated fn, as rustc accepts them.
#![deny(warnings)]

use async_contextlib::{async_context_manager, with_scope, yield_};

#[async_context_manager]
async fn inner_attr() -> u32 {
    //! The manager's own inner doc.
    #![allow(unused_variables)]
    let unused = 1;
    let _ = yield_!(2);
}

fn main() {
    futures::executor::block_on(async {
        assert_eq!(with_scope!(inner_attr() as v => { v }), 2);
    });
}
