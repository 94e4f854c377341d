#!/usr/bin/env bash
# Fuzzes clonet's decoders of untrusted input with cargo-fuzz (libFuzzer),
# one target after the other, and prints a table: per target, the inputs
# executed, the seconds taken and the crashes found. The targets' bodies
# are `clonet::fuzzing::*`; their binaries are in fuzz/.
#
# Usage:
#   scripts/fuzz.sh                   every target, 1 000 000 inputs each
#   scripts/fuzz.sh saved_lab qmp_message
#   FUZZ_RUNS=10000000 scripts/fuzz.sh
#   FUZZ_ARGS="-max_len=70000" scripts/fuzz.sh gso_segment
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz
# --locked`). Builds go to $CARGO_TARGET_DIR if set (else fuzz/target).
#
# Inputs that cover new code are added to fuzz/corpus/<target>/; shrink
# that before committing it (`cargo +nightly fuzz cmin <target>`). A crash
# stops its target: its input, from fuzz/artifacts/<target>/, is copied to
# fuzz/regressions/<target>/, where the stable unit test (`cargo test
# --lib fuzzing`) replays it from then on. Fix the defect, keep the input,
# and run the target again until it is clean.
#
# Exits 1 if any target crashed or could not run.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${FUZZ_RUNS:-1000000}
read -r -a extra <<<"${FUZZ_ARGS:-}"
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build >&2

mkdir -p fuzz/logs
rows=()
failed=0
for target in "${targets[@]}"; do
    artifacts=fuzz/artifacts/$target
    mkdir -p "$artifacts" "fuzz/corpus/$target"
    before=$(ls "$artifacts")
    log=fuzz/logs/$target.log
    echo "fuzzing $target ($runs inputs; log in $log)" >&2
    start=$(date +%s.%N)
    status=0
    cargo +nightly fuzz run "$target" -- -runs="$runs" -print_final_stats=1 -timeout=30 "${extra[@]}" \
        >"$log" 2>&1 || status=$?
    seconds=$(echo "$start $(date +%s.%N)" | awk '{printf "%.1f", $2 - $1}')
    executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    crashes=0
    for file in $(comm -13 <(echo "$before") <(ls "$artifacts")); do
        mkdir -p "fuzz/regressions/$target"
        cp "$artifacts/$file" "fuzz/regressions/$target/$file"
        crashes=$((crashes + 1))
    done
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        echo "$target failed without a crash input (status $status): see $log" >&2
        crashes="error"
    fi
    [ "$crashes" = 0 ] || failed=1
    rows+=("$(printf '%-20s %12s %9s %8s' "$target" "${executed:-?}" "$seconds" "$crashes")")
done

printf '%-20s %12s %9s %8s\n' target inputs seconds crashes
printf '%s\n' "${rows[@]}"
exit "$failed"
