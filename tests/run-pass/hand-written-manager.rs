//! A hand-written manager implementing the trait, used with and without `as`.
use std::convert::Infallible;

use async_contextlib::{AsyncContextManager, Outcome, with_scope};

struct Counter {
    exits: u32,
}

impl AsyncContextManager for &mut Counter {
    type Value<'a>
        = u32
    where
        Self: 'a;
    type Error = Infallible;

    async fn enter(&mut self) -> Result<u32, Infallible> {
        Ok(self.exits)
    }

    async fn exit(&mut self, outcome: Outcome) -> Result<(), Infallible> {
        assert!(outcome.is_success());
        self.exits += 1;
        Ok(())
    }
}

fn main() {
    let mut counter = Counter { exits: 0 };
    futures::executor::block_on(async {
        with_scope!(&mut counter => {});
        let seen = with_scope!(&mut counter as n => { n });
        assert_eq!(seen, 1);
    });
    assert_eq!(counter.exits, 2);
}
