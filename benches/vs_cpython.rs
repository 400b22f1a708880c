//! async-contextlib against CPython's `asynccontextmanager`, on the same
//! work, in one run: `cargo bench --bench vs_cpython`.
//!
//! Both sides run N scopes of a trivial generator-based manager around a
//! trivial body inside their own event loop (tokio current-thread here,
//! asyncio there) and report the best of 3 runs in ns per scope.

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use async_contextlib::{async_context_manager, with_scope, yield_};

const N: u32 = 200_000;

struct Resource {
    value: u64,
    exits: u64,
}

#[async_context_manager]
async fn managed(r: &mut Resource) -> &mut u64 {
    r.value += 1;
    let mut v = r.value;
    let _ = yield_!(&mut v);
    r.exits += 1;
}

fn rust_ns_per_scope() -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        rt.block_on(async {
            let mut r = Resource { value: 0, exits: 0 };
            for _ in 0..N {
                with_scope!(managed(&mut r) as v => { *v = black_box(*v); });
            }
            assert_eq!(r.exits, u64::from(N));
        });
        best = best.min(start.elapsed().as_secs_f64() * 1e9 / f64::from(N));
    }
    best
}

fn cpython_ns_per_scope() -> Option<f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/cpython_scope.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(N.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn main() {
    let rust = rust_ns_per_scope();
    println!("async-contextlib (#[async_context_manager] + with_scope!): {rust:.1} ns/scope");
    match cpython_ns_per_scope() {
        Some(py) => {
            println!("CPython asynccontextmanager + async with:             {py:.1} ns/scope");
            println!("ratio: CPython is {:.0}x slower", py / rust);
        }
        None => println!("CPython: python3 not available, no comparison"),
    }
}
