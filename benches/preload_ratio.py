#!/usr/bin/env python3
"""Prints the preload ratio of issue 4 in one run: preload of 100 Go-sized steps (about 900 files
and 13 MB each, all different) from a loopback HTTP server, with the default --jobs against
--jobs 1. A ratio below 1.0 is the speed-up of parallel preloading.

Each repetition runs both, in alternating order, into fresh stores (holding only the collection),
with the store's default durability (fsync). It also checks that each step was downloaded exactly
once per preload and that every step was reported.

usage: benches/preload_ratio.py [--reps N] [--steps N] [--bin PATH]   (from the repository root)
"""
import argparse
import http.server
import json
import os
import shutil
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

ap = argparse.ArgumentParser()
ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--steps", type=int, default=100)
ap.add_argument("--bin", default="target/release/stepman")
args = ap.parse_args()
# `stepman activate`/`preload` refuse to run without --prepare when STEPMAN_GO is set (clap's
# `requires` counts the env var): keep it out of the commands' environment (passed as --go where needed).
os.environ.pop("STEPMAN_GO", None)
BIN = os.path.abspath(args.bin)
GEN = os.path.abspath("target/release/examples/gen_tree")
subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "stepman", "--example", "gen_tree"], check=True)
W = tempfile.mkdtemp(prefix="stepman-preload-ratio.")

# --- 100 different Go-sized step zips, served over loopback ----------------------------------
tree = os.path.join(W, "tree")
subprocess.run([GEN, tree], check=True, stdout=subprocess.DEVNULL)
base = os.path.join(W, "base.zip")
subprocess.run(["zip", "-q", "-r", "-y", base, "."], cwd=tree, check=True)
www = os.path.join(W, "www")
lib = os.path.join(W, "lib")
ids = [f"go-step-{i:03}" for i in range(args.steps)]
for sid in ids:
    d = os.path.join(www, "archives", sid, "1.0.0")
    os.makedirs(d)
    z = os.path.join(d, "step.zip")
    shutil.copyfile(base, z)
    # One file of its own, so that every step is a different object (nothing is deduplicated).
    with zipfile.ZipFile(z, "a") as f:
        f.writestr("STEP_ID", sid + "\n")
    sd = os.path.join(lib, "steps", sid, "1.0.0")
    os.makedirs(sd)
    with open(os.path.join(sd, "step.yml"), "w") as f:
        f.write(f"title: {sid}\nsource:\n  git: https://example.invalid/{sid}.git\n  commit: \"0\"\n")


class Quiet(http.server.SimpleHTTPRequestHandler):
    counts = {}
    lock = threading.Lock()

    def __init__(self, *a, **kw):
        super().__init__(*a, directory=www, **kw)

    def log_message(self, *a):
        with Quiet.lock:
            Quiet.counts[self.path] = Quiet.counts.get(self.path, 0) + 1


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 64


srv = Server(("127.0.0.1", 0), Quiet)
port = srv.server_address[1]
threading.Thread(target=srv.serve_forever, daemon=True).start()
with open(os.path.join(lib, "steplib.yml"), "w") as f:
    f.write(f"format_version: 1.0.0\nsteplib_source: bench\ndownload_locations:\n"
            f"  - type: zip\n    src: http://127.0.0.1:{port}/archives/\n")
step_list = os.path.join(W, "steps.txt")
with open(step_list, "w") as f:
    f.write("\n".join(ids) + "\n")


def preload(tag, jobs):
    home = os.path.join(W, "homes", tag)
    env = dict(os.environ, STEPMAN_HOME=home)
    subprocess.run([BIN, "setup", "-c", lib], env=env, check=True, stderr=subprocess.DEVNULL)
    cmd = [BIN, "preload", "-c", lib, "--from-file", step_list, "--json"]
    if jobs:
        cmd += ["--jobs", str(jobs)]
    with Quiet.lock:
        Quiet.counts.clear()
    subprocess.run(["sync"])
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    took = time.perf_counter() - t
    report = json.loads(out.stdout)
    statuses = [s["status"] for s in report["steps"]]
    assert statuses == ["downloaded"] * len(ids), statuses
    with Quiet.lock:
        got = {p: n for p, n in Quiet.counts.items() if p.endswith("step.zip")}
    assert len(got) == len(ids) and set(got.values()) == {1}, got
    return took


one, dflt = [], []
for i in range(args.reps):
    order = [("one", 1), ("default", None)]
    for name, jobs in (order if i % 2 == 0 else order[::-1]):
        (one if name == "one" else dflt).append(preload(f"{name}-{i}", jobs))
        print(f"  rep {i}: {name:7} {(one if name == 'one' else dflt)[-1]:.2f}s", file=sys.stderr)

cores = os.cpu_count() or 2
m1, md = statistics.median(one), statistics.median(dflt)
size = os.path.getsize(os.path.join(www, "archives", ids[0], "1.0.0", "step.zip"))
print(f"{'what':52} {'baseline':>10} {'ours':>8} {'ratio':>7}")
print(f"{'preload ' + str(len(ids)) + ' Go-sized steps, default --jobs (' + str(min(cores * 4, 16)) + ')':52} "
      f"{'--jobs 1':>10} {md:7.2f}s {md / m1:6.2f}x   (--jobs 1: {m1:.2f}s; medians of {args.reps})")
print(f"each step {size / 1e6:.1f} MB zipped; every step downloaded exactly once per preload; "
      f"{len(ids) * size / md / 1e6:.0f} MB/s with the default jobs")
shutil.rmtree(W, ignore_errors=True)
