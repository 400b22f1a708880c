//! Methods with every receiver kind, generics and a where clause.
use std::sync::Arc;

use async_contextlib::{async_context_manager, with_scope, yield_};

struct Store<T> {
    items: Vec<T>,
}

impl<T: Clone + Send + 'static> Store<T> {
    #[async_context_manager]
    async fn view(&self) -> &[T] {
        yield_!(&self.items[..]);
    }

    #[async_context_manager]
    async fn edit(&mut self) -> &mut Vec<T> {
        yield_!(&mut self.items);
    }

    #[async_context_manager]
    async fn shared(self: Arc<Self>) -> usize {
        yield_!(self.items.len());
    }

    #[async_context_manager]
    async fn consume(self) -> Vec<T> {
        yield_!(self.items.clone());
    }
}

#[async_context_manager]
async fn pair<A, B>(a: A, b: B) -> (A, B)
where
    A: Clone,
    B: Clone,
{
    yield_!((a.clone(), b.clone()));
}

fn main() {
    futures::executor::block_on(async {
        let mut store = Store { items: vec![1_u8] };
        with_scope!(store.edit() as items => { items.push(2); });
        let n = with_scope!(store.view() as items => { items.len() });
        assert_eq!(n, 2);
        let store = Arc::new(store);
        assert_eq!(with_scope!(store.clone().shared() as n => { n }), 2);
        let store = Arc::try_unwrap(store).ok().unwrap();
        assert_eq!(with_scope!(store.consume() as v => { v }), [1, 2]);
        assert_eq!(with_scope!(pair(1, "b") as p => { p }), (1, "b"));
    });
}
