use async_contextlib::async_context_manager;

#[async_context_manager]
struct Connection {
    id: u32,
}

fn main() {}
