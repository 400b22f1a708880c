#!/usr/bin/env bash
# Compile time of generated managers against the same managers written by
# hand (issue 10, SPEC §7), and the expanded size of one `with_scope!`.
#
# Writes two crates under target/compile-time/: `generated` (200
# `#[async_context_manager]` fns, each used in one `with_scope!`) and
# `hand` (the same 200 managers as hand-written trait impls, each used in
# one `with_scope!`). Both depend on this checkout. Dependencies are
# checked once first; then each crate's own `cargo check` is timed, best of
# $RUNS, after touching its source. Run from anywhere:
#   benches/compile_time.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/target/compile-time"
n=${N:-200}
runs=${RUNS:-3}
mkdir -p "$out"
export CARGO_TARGET_DIR="$out/target"

manifest() {
    cat <<EOF
[package]
name = "ct-$1"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
async-contextlib = { path = "$root" }

[workspace]
EOF
}

gen_generated() {
    echo 'use async_contextlib::{async_context_manager, with_scope, yield_};'
    echo 'pub struct R { pub v: u64 }'
    for i in $(seq 0 $((n - 1))); do
        cat <<EOF
#[async_context_manager]
pub async fn m$i(r: &mut R) -> &mut u64 {
    r.v += $i;
    let mut c = r.v;
    let _ = yield_!(&mut c);
    r.v += 1;
}
pub async fn use$i(r: &mut R) -> u64 {
    with_scope!(m$i(r) as v => { *v * 2 })
}
EOF
    done
}

gen_hand() {
    echo 'use std::convert::Infallible;'
    echo 'use async_contextlib::{AsyncContextManager, Outcome, with_scope};'
    echo 'pub struct R { pub v: u64 }'
    for i in $(seq 0 $((n - 1))); do
        cat <<EOF
pub struct M$i<'a>(&'a mut R, u64);
impl AsyncContextManager for M$i<'_> {
    type Value<'b> = &'b mut u64 where Self: 'b;
    type Error = Infallible;
    async fn enter(&mut self) -> Result<&mut u64, Infallible> {
        self.0.v += $i;
        self.1 = self.0.v;
        Ok(&mut self.1)
    }
    async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> {
        self.0.v += 1;
        Ok(())
    }
}
pub async fn use$i(r: &mut R) -> u64 {
    with_scope!(M$i(r, 0) as v => { *v * 2 })
}
EOF
    done
}

for kind in generated hand; do
    mkdir -p "$out/$kind/src"
    manifest "$kind" >"$out/$kind/Cargo.toml"
    "gen_$kind" >"$out/$kind/src/lib.rs"
    (cd "$out/$kind" && cargo check -q 2>/dev/null)
done

# One timed `cargo check` of crate $1, in seconds.
check_once() {
    touch "$out/$1/src/lib.rs"
    local t0 t1
    t0=$(date +%s%N)
    (cd "$out/$1" && cargo check -q)
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}

# Interleaved, so that both see the same machine load; best of $runs each.
g=""
h=""
for _ in $(seq "$runs"); do
    tg=$(check_once generated)
    th=$(check_once hand)
    if [ -z "$g" ] || [ "$tg" -lt "$g" ]; then g=$tg; fi
    if [ -z "$h" ] || [ "$th" -lt "$h" ]; then h=$th; fi
done
g=$(awk -v ms="$g" 'BEGIN { print ms / 1000 }')
h=$(awk -v ms="$h" 'BEGIN { print ms / 1000 }')
printf 'cargo check, %d managers each used in one with_scope!, best of %d\n' "$n" "$runs"
printf '  generated (#[async_context_manager]): %.2f s\n' "$g"
printf '  hand-written trait impls:             %.2f s\n' "$h"
awk -v g="$g" -v h="$h" 'BEGIN { printf "  ratio: %.2fx\n", g / h }'

# Expanded size of one with_scope! (needs nightly for -Zunpretty).
if cargo +nightly --version >/dev/null 2>&1; then
    one="$out/one"
    mkdir -p "$one/src"
    manifest one >"$one/Cargo.toml"
    cat >"$one/src/lib.rs" <<'EOF'
use std::convert::Infallible;
use async_contextlib::{AsyncContextManager, Outcome, with_scope};
pub struct M(u64);
impl AsyncContextManager for M {
    type Value<'b> = &'b mut u64 where Self: 'b;
    type Error = Infallible;
    async fn enter(&mut self) -> Result<&mut u64, Infallible> { Ok(&mut self.0) }
    async fn exit(&mut self, _: Outcome) -> Result<(), Infallible> { Ok(()) }
}
pub async fn scope(m: M) -> u64 {
    with_scope!(m as v => { *v * 2 })
}
EOF
    expanded=$(cd "$one" && cargo +nightly rustc -q --lib -- -Zunpretty=expanded 2>/dev/null)
    body=$(printf '%s\n' "$expanded" | awk '/pub async fn scope/,0')
    printf 'expanded size of one with_scope! (one manager, `as` binding):\n'
    printf '  %d lines, %d tokens (whitespace-separated) in the expanded fn\n' \
        "$(printf '%s\n' "$body" | wc -l)" "$(printf '%s\n' "$body" | wc -w)"
else
    echo "expanded size: skipped (no nightly toolchain for -Zunpretty=expanded)"
fi
