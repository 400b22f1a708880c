use async_contextlib::yield_;

async fn plain() -> u32 {
    yield_!(1);
    1
}

fn main() {}
