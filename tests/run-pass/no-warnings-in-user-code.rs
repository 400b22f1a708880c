//! What `with_scope!` expands to raises no warning (rustc's or clippy's
//! defaults) in the user's code: a block that only panics, one that
//! returns early, an unused binding kept for its manager.
#![deny(warnings)]

use async_contextlib::{nullcontext, with_scope};

async fn only_panics() -> u32 {
    with_scope!(nullcontext(1) as _n => { panic!("always") })
}

async fn returns_early(flag: bool) -> Result<u32, std::io::Error> {
    with_scope!(nullcontext(2) as n => {
        if flag {
            return Err(std::io::Error::other("early"));
        }
        Ok(n)
    })
}

async fn debug_only_error() -> Result<(), DebugOnly> {
    with_scope!(nullcontext(()) => {
        "x".parse::<u32>().map_err(|_| DebugOnly)?;
        Ok(())
    })
}

#[derive(Debug)]
struct DebugOnly;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert!(rt.block_on(returns_early(true)).is_err());
    assert_eq!(rt.block_on(returns_early(false)).unwrap(), 2);
    assert!(rt.block_on(debug_only_error()).is_err());
    let panicked = std::panic::catch_unwind(|| rt.block_on(only_panics()));
    assert!(panicked.is_err());
}
