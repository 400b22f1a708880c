#!/usr/bin/env bash
# Instructions per scope for each variant of benches/common, by callgrind:
# (Ir with n = 100000 - Ir with n = 0) / 100000. Repeatable whatever else
# the machine does. Run from the repository root: benches/instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench instructions --no-run >/dev/null 2>&1
bin=$(ls -t target/release/deps/instructions-* | grep -v '\.d$' | head -1)
n=100000
ir() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '%-12s %s\n' variant instructions/scope
for v in bare floor trait trait_2 generated generated_2 nested_3 spawn cancelled; do
    base=$(ir "$v" 0)
    full=$(ir "$v" "$n")
    awk -v b="$base" -v f="$full" -v n="$n" -v v="$v" 'BEGIN { printf "%-12s %.1f\n", v, (f - b) / n }'
done
"$bin"
