use async_contextlib::{nullcontext, scoped};

#[scoped(nullcontext(1) as)]
async fn binding_missing() -> u32 {
    1
}

#[scoped()]
async fn no_managers() -> u32 {
    2
}

fn main() {
    drop(binding_missing());
    drop(no_managers());
}
