#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for SECONDS (default 30). Exits non-zero when a
# target crashes (or the build fails); the crashing input is left in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh 60            # every target, 60 s each
#   fuzz/run.sh 10 ingest_zip # one target
#
# The seed corpora in fuzz/corpus/<target>/ are read, never written: new inputs go to a scratch
# directory ($FUZZ_WORK, default a temp dir) so a run leaves the work tree clean.
#
# Needs cargo-fuzz (installed from crates.io if missing) and a nightly toolchain; without one, the
# stable toolchain is used with RUSTC_BOOTSTRAP=1 (its sanitizer runtimes ship with rust-std).
set -euo pipefail

secs=${1:-30}
shift || true
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

toolchain=()
if cargo +nightly --version >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    echo "fuzz/run.sh: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi

if [ ${#targets[@]} -eq 1 ]; then
    cargo "${toolchain[@]}" fuzz build "${targets[0]}"
else
    cargo "${toolchain[@]}" fuzz build
fi

work=${FUZZ_WORK:-$(mktemp -d -t stepman-fuzz-XXXXXX)}
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/$t" "corpus/$t"
    echo "== $t: ${secs}s" >&2
    log="$work/$t.log"
    if cargo "${toolchain[@]}" fuzz run "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "$log" | tail -2 >&2 || true
    else
        tail -40 "$log" >&2
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/run.sh: crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz/run.sh: ${#targets[@]} targets, ${secs}s each, no crash" >&2
