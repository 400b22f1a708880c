//! One variant of `benches/common` run `n` times, for instruction counts
//! under callgrind: `benches/instructions.sh` runs each variant with
//! `n = 100000` and `n = 0` and reports the difference per scope.
//!
//! `cargo bench --bench instructions -- <variant> <n>`; with no arguments
//! it prints every variant's future size.

mod common;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.as_slice() {
        [variant, n] => {
            let n: u64 = n.parse().expect("a count");
            match common::run_variant(variant, n) {
                Some(exits) => {
                    std::hint::black_box(exits);
                }
                None => common::run_cancel_variant(variant, n)
                    .unwrap_or_else(|| panic!("no variant `{variant}`")),
            }
        }
        _ => {
            for (name, size) in common::sizes() {
                println!("{name}: {size} bytes");
            }
        }
    }
}
