#!/usr/bin/env python3
"""Prints the StepLib and activation ratios, each against its baseline, in one run:

  - step-info (the lookup inside activate) on a 3,700-version StepLib: ms per process, and the
    flatness ratio against a 40-version StepLib                        (target <= 10 ms, ~1.0x)
  - setup of a 3,700-version local StepLib (no git clone to subtract)  (target <= 1 s)
  - activate, cache hit, Go-sized step, into a fresh dir vs `cp -a`     (target <= 1.2x)
  - activate, cold, zip from a loopback HTTP server vs `curl` + `unzip` (target <= 1.2x)
  - ten processes activating one uncached step vs one activation       (target <= 1.3x, 1 download)

Every repetition uses fresh destinations (and, for cold runs, a fresh store holding only the
collection) so nothing is deleted and re-created on the measured path; medians are reported.
Cold activations are measured with the store's default durability (fsync) and with
STEPMAN_NO_FSYNC=1; `curl` + `unzip` never fsync, so the second is the like-for-like ratio.

usage: benches/steplib_ratios.py [--reps N] [--bin PATH]   (run from the repository root)
"""
import argparse
import http.server
import os
import shutil
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--reps", type=int, default=7)
ap.add_argument("--bin", default="target/release/stepman")
args = ap.parse_args()
ROOT = os.getcwd()
BIN = os.path.abspath(args.bin)
GEN = os.path.abspath("target/release/examples/gen_tree")
subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "stepman", "--example", "gen_tree"], check=True)
W = tempfile.mkdtemp(prefix="stepman-steplib-ratios.")
rows = []


def timed(cmd, env=None, **kw):
    subprocess.run(["sync"])
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t


def env_for(home, **extra):
    e = dict(os.environ, STEPMAN_HOME=home)
    e.update(extra)
    return e


def row(what, base_name, base, ours, target, kind="le"):
    ratio = ours / base if base else float("nan")
    ok = ratio <= target if kind == "le" else ratio >= target
    rows.append((what, base_name, base, ours, ratio, target, "PASS" if ok else "MISS"))


# --- the Go-sized step and its StepLib, served over loopback HTTP ---------------------------
tree = os.path.join(W, "tree")
subprocess.run([GEN, tree], check=True, stdout=subprocess.DEVNULL)
www = os.path.join(W, "www")
arch = os.path.join(www, "archives", "gostep", "1.0.0")
os.makedirs(arch)
subprocess.run(["zip", "-q", "-r", "-y", os.path.join(arch, "step.zip"), "."], cwd=tree, check=True)


class Quiet(http.server.SimpleHTTPRequestHandler):
    requests = 0

    def __init__(self, *a, **kw):
        super().__init__(*a, directory=www, **kw)

    def log_message(self, *a):
        if self.path.endswith("step.zip"):
            Quiet.requests += 1


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


srv = Server(("127.0.0.1", 0), Quiet)
port = srv.server_address[1]
threading.Thread(target=srv.serve_forever, daemon=True).start()
lib = os.path.join(W, "lib")
os.makedirs(os.path.join(lib, "steps", "gostep", "1.0.0"))
with open(os.path.join(lib, "steplib.yml"), "w") as f:
    f.write(f"format_version: 1.0.0\nsteplib_source: bench\ndownload_locations:\n"
            f"  - type: zip\n    src: http://127.0.0.1:{port}/archives/\n")
with open(os.path.join(lib, "steps", "gostep", "1.0.0", "step.yml"), "w") as f:
    f.write("title: Go step\nsource:\n  git: https://example.invalid/gostep.git\n  commit: \"0\"\n")


def fresh_store(tag):
    home = os.path.join(W, "homes", tag)
    subprocess.run([BIN, "setup", "-c", lib], env=env_for(home), check=True, stderr=subprocess.DEVNULL)
    return home


def activate(home, dest, **extra):
    return [BIN, "activate", "-c", lib, "-i", "gostep", "-v", "1.0.0", "-p", dest], env_for(home, **extra)


# --- step-info flatness and setup ----------------------------------------------------------
big, small = os.path.join(W, "big"), os.path.join(W, "small")
gen_lib = os.path.join(ROOT, "benches", "gen_steplib.py")
subprocess.run([sys.executable, gen_lib, big, "3700", "443"], check=True, stdout=subprocess.DEVNULL)
subprocess.run([sys.executable, gen_lib, small, "40", "5"], check=True, stdout=subprocess.DEVNULL)
setup_times = []
for i in range(max(3, args.reps // 2)):
    setup_times.append(timed([BIN, "setup", "-c", big], env=env_for(os.path.join(W, "setup", str(i))), stderr=subprocess.DEVNULL))
info_home = os.path.join(W, "setup", "0")
subprocess.run([BIN, "setup", "-c", small], env=env_for(info_home), check=True, stderr=subprocess.DEVNULL)
t_big, t_small = [], []
for i in range(args.reps * 5):
    t_small.append(timed([BIN, "step-info", "--library", small, "--id", "step-0002", "--version", "1", "--format", "json"], env=env_for(info_home)))
    t_big.append(timed([BIN, "step-info", "--library", big, "--id", "step-0042", "--version", "1", "--format", "json"], env=env_for(info_home)))
ms_big = statistics.median(t_big) * 1000
ms_small = statistics.median(t_small) * 1000

# --- cache-hit activation vs cp -a ------------------------------------------------------------
hit_home = fresh_store("hit")
subprocess.run(activate(hit_home, os.path.join(W, "warm"))[0], env=activate(hit_home, "x")[1], check=True, stderr=subprocess.DEVNULL)
cp_t, hit_t = [], []
for i in range(args.reps):
    cmd, env = activate(hit_home, os.path.join(W, "hit", str(i)))
    pair = [("cp", ["cp", "-a", tree, os.path.join(W, "cp", str(i))], None), ("hit", cmd, env)]
    os.makedirs(os.path.join(W, "cp"), exist_ok=True)
    for name, c, e in (pair if i % 2 == 0 else pair[::-1]):
        (cp_t if name == "cp" else hit_t).append(timed(c, env=e, stderr=subprocess.DEVNULL))
row("activate, cache hit (Go-sized)", "cp -a", statistics.median(cp_t), statistics.median(hit_t), 1.2)

# --- cold activation vs curl + unzip -------------------------------------------------------
url = f"http://127.0.0.1:{port}/archives/gostep/1.0.0/step.zip"
curl_t, cold_sync, cold_nosync = [], [], []
for i in range(args.reps):
    d = os.path.join(W, "curl", str(i))
    os.makedirs(d)
    base = ["sh", "-c", f"curl -sf -o {d}/step.zip {url} && unzip -q {d}/step.zip -d {d}/tree"]
    h1, h2 = fresh_store(f"cold-s{i}"), fresh_store(f"cold-n{i}")
    c1, e1 = activate(h1, os.path.join(W, "cold-s", str(i)))
    c2, e2 = activate(h2, os.path.join(W, "cold-n", str(i)), STEPMAN_NO_FSYNC="1")
    runs = [("curl", base, None), ("sync", c1, e1), ("nosync", c2, e2)]
    if i % 2:
        runs.reverse()
    for name, c, e in runs:
        {"curl": curl_t, "sync": cold_sync, "nosync": cold_nosync}[name].append(timed(c, env=e, stderr=subprocess.DEVNULL))
row("activate, cold, loopback zip (no fsync)", "curl+unzip", statistics.median(curl_t), statistics.median(cold_nosync), 1.2)
row("activate, cold, loopback zip (fsync, default)", "curl+unzip", statistics.median(curl_t), statistics.median(cold_sync), 1.2)

# --- ten concurrent cold activations vs one -----------------------------------------------
one_t, ten_t, downloads = [], [], []
for i in range(max(3, args.reps // 2)):
    h = fresh_store(f"one{i}")
    c, e = activate(h, os.path.join(W, "one", str(i)))
    one_t.append(timed(c, env=e, stderr=subprocess.DEVNULL))
    h = fresh_store(f"ten{i}")
    before = Quiet.requests
    subprocess.run(["sync"])
    t = time.perf_counter()
    procs = [subprocess.Popen(activate(h, os.path.join(W, "ten", str(i), str(k)))[0], env=activate(h, "x")[1],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for k in range(10)]
    codes = [p.wait() for p in procs]
    ten_t.append(time.perf_counter() - t)
    downloads.append(Quiet.requests - before)
    assert codes == [0] * 10, codes
row("ten concurrent cold activations", "one activation", statistics.median(one_t), statistics.median(ten_t), 1.3)
srv.shutdown()

print()
print(f"{'what':48} {'baseline':>14} {'base s':>8} {'stepman s':>10} {'ratio':>7} {'target':>8}")
for what, bn, b, o, r, tg, ok in rows:
    print(f"{what:48} {bn:>14} {b:8.3f} {o:10.3f} {r:6.2f}x {'<=' + str(tg):>8}  {ok}")
print(f"{'step-info, 3,700 versions (ms per process)':48} {'':>14} {'':>8} {ms_big:10.2f} {'':>7} {'<=10 ms':>8}  {'PASS' if ms_big <= 10 else 'MISS'}")
print(f"{'step-info flatness 3,700 / 40 versions':48} {'40 versions':>14} {ms_small/1000:8.4f} {ms_big/1000:10.4f} {ms_big/ms_small:6.2f}x {'~1.0':>8}")
print(f"{'setup, 3,700-version local StepLib (s)':48} {'':>14} {'':>8} {statistics.median(setup_times):10.3f} {'':>7} {'<=1 s':>8}  {'PASS' if statistics.median(setup_times) <= 1 else 'MISS'}")
print(f"downloads per ten concurrent cold activations: {downloads} (must all be 1)")
subprocess.run(["chmod", "-R", "u+w", W])
shutil.rmtree(W, ignore_errors=True)
