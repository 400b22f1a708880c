use async_contextlib::{TaskError, TaskGroup, with_scope};

async fn run() -> Result<usize, TaskError> {
    let names = vec!["a".to_string(), "b".to_string()];
    with_scope!(TaskGroup::new() as tg => {
        // A task may outlive this fn's frame: it must own what it uses.
        tg.spawn(async {
            println!("{}", names.len());
        });
        Ok::<_, TaskError>(names.len())
    })
}

fn main() {
    drop(run());
}
