use async_contextlib::generated::{ByValue, Generator};

fn main() {
    // Safe code cannot build a generator from its own closure: the
    // constructor is `unsafe`, for the attribute's expansion only.
    let g = Generator::<_, ByValue<u32>>::new("mine", |co| async move {
        let _ = co;
    });
    drop(g);
}
