//! `#[scoped]` on a fn whose return type holds an `impl Trait` below the
//! top (`Result<impl Display, E>`, `Option<impl Display>`): the body is not
//! annotated with a type a `let` cannot hold.
use async_contextlib::{nullcontext, scoped};
use std::fmt::Display;

#[scoped(nullcontext(1u32) as n)]
async fn in_result() -> Result<impl Display, std::io::Error> {
    Ok(n)
}

#[scoped(nullcontext(2u32) as n)]
async fn in_option() -> Option<impl Display> {
    Some(n)
}

fn main() {
    futures::executor::block_on(async {
        assert_eq!(in_result().await.unwrap().to_string(), "1");
        assert_eq!(in_option().await.unwrap().to_string(), "2");
    });
}
