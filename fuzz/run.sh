#!/usr/bin/env bash
# Builds every fuzz target (libFuzzer with sanitizer coverage, on stable Rust) and runs each for
# a bounded time, starting from the checked-in seed corpora. Exits 1 if any target crashed; the
# crashing input is kept under the work dir's artifacts/<target>/ (replay it with the target's
# binary: `<binary> <crash file>`).
#
# Usage: fuzz/run.sh [seconds per target (default 60)] [target ...]
#        fuzz/run.sh --seeds    (re)write the seed corpora fuzz/corpus/<target>/ (examples/seeds.rs)
# Environment:
#   FUZZ_TARGET_DIR  where to build (default: $CARGO_TARGET_DIR/fuzz-target, or
#                    /work/target/fuzz-target); its own dir, as the flags differ from a normal build
#   FUZZ_WORK        corpora grown by the runs and crash artifacts (default: $FUZZ_TARGET_DIR/work)
#   FUZZ_CARGO_FUZZ  1: build with `cargo fuzz build -s none` (cargo-fuzz installed); default:
#                    plain `cargo build` with the flags cargo-fuzz passes (no extra tool needed)
#   FUZZ_ARGS        extra libFuzzer flags (e.g. "-jobs=2 -workers=2", "-dict=...")
set -euo pipefail

cd "$(dirname "$0")"

seeds=0
if [ "${1:-}" = --seeds ]; then
    seeds=1
    shift
fi
secs="${1:-60}"
shift || true
if [ "$seeds" = 1 ]; then
    targets=()
elif [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(sed -n 's/^name = "\([a-z_0-9]*\)"$/\1/p' Cargo.toml | grep -v '^mesh-fuzz$')
fi

target_dir="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-/work/target}/fuzz-target}"
work="${FUZZ_WORK:-$target_dir/work}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
# What `cargo fuzz build --sanitizer none` passes (cargo-fuzz 0.13): coverage counters, compare
# tracing, `--cfg fuzzing`, debug assertions. All stable flags; no nightly needed. Except
# cargo-fuzz's `-Ccodegen-units=1`: parallel code generation builds much faster on few cores.
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
flags+=" -Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth"
flags+=" -Cdebug-assertions"

if [ "$seeds" = 1 ]; then
    RUSTFLAGS="$flags" cargo build --release --target "$triple" --target-dir "$target_dir" \
        --example seeds
    "$target_dir/$triple/release/examples/seeds" -runs=1 2>/dev/null
    echo "seed corpora written under $PWD/corpus/"
    exit 0
fi

echo "== fuzz: build ${targets[*]} (target dir $target_dir)"
if [ "${FUZZ_CARGO_FUZZ:-0}" = 1 ]; then
    for t in "${targets[@]}"; do
        cargo fuzz build --sanitizer none --target-dir "$target_dir" "$t"
    done
else
    bins=()
    for t in "${targets[@]}"; do bins+=(--bin "$t"); done
    # Same profile, target triple and layout as cargo-fuzz.
    RUSTFLAGS="$flags" cargo build --release --target "$triple" --target-dir "$target_dir" "${bins[@]}"
    # The support code's own tests (the hyper framing model, the xDS input format).
    RUSTFLAGS="$flags" cargo test --release --target "$triple" --target-dir "$target_dir" --lib -q
fi

failed=()
for t in "${targets[@]}"; do
    bin="$target_dir/$triple/release/$t"
    mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
    echo "== fuzz: $t for ${secs}s"
    # The first corpus dir receives what the run finds; the checked-in seeds stay untouched.
    # shellcheck disable=SC2086
    if ! "$bin" "$work/corpus/$t" "corpus/$t" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
        -artifact_prefix="$work/artifacts/$t/" -print_final_stats=1 ${FUZZ_ARGS:-} \
        >"$work/$t.log" 2>&1; then
        failed+=("$t")
        tail -n 40 "$work/$t.log" >&2
        echo "fuzz target $t FAILED; input kept in $work/artifacts/$t/" >&2
    else
        grep -E '^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' "$work/$t.log" |
            tr '\n' ' '
        echo
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: no crash in ${targets[*]}"
