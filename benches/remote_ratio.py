#!/usr/bin/env python3
"""The remote tier's ratio (issue 17): a remote hit of a Go-sized step against a cold activation
from the origin zip, both servers on loopback, so the ratio shows stepman's own overhead
(target <= 1.2x); and the requests each makes.

Method: a Go-sized tree (examples/gen_tree: ~900 files, ~13 MB) zipped and served by a loopback
origin (python's http.server, counting requests in its log); moto's S3 server on loopback as the
remote. Every repetition runs, back to back and alternating which goes first, (a) a cold
`activate` in a fresh home with no remote, and (b) a cold `activate` in a fresh home whose remote
already has the step (put there once before the repetitions by a seeding host). Medians with
q1-q3 and min-max; ratio = remote hit / origin cold. Requests: the origin's counted by its
server, the remote's from moto's request log (the seeding host's miss, and each hit).

Usage: benches/remote_ratio.py [--reps 9] [--bin target/release/stepman] [--gen PATH]
       [--moto /path/moto_server]   (moto: $STEPMAN_TEST_MOTO or moto_server on PATH)
"""
import argparse
import http.server
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)?(GET|PUT|DELETE|HEAD|POST) /bench')


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def spread(xs):
    xs = sorted(xs)
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return f"{statistics.median(xs):.2f}x (q1-q3 {q[0]:.2f}-{q[2]:.2f}, min-max {xs[0]:.2f}-{xs[-1]:.2f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--bin", default="target/release/stepman")
    ap.add_argument("--gen", default="target/release/examples/gen_tree")
    ap.add_argument("--moto", default=os.environ.get("STEPMAN_TEST_MOTO") or shutil.which("moto_server"))
    a = ap.parse_args()
    if not a.moto:
        sys.exit("remote_ratio.py: no moto_server (set STEPMAN_TEST_MOTO)")
    work = tempfile.mkdtemp(prefix="stepman-remote-bench-", dir=os.environ.get("BENCH_DIR", "/var/tmp"))
    procs = []
    try:
        tree = os.path.join(work, "tree")
        subprocess.run([a.gen, tree], check=True, stdout=subprocess.DEVNULL)
        served = os.path.join(work, "served", "steps", "go-step", "1.0.0")
        os.makedirs(served)
        subprocess.run(["zip", "-qr", os.path.join(served, "step.zip"), "."], cwd=tree, check=True)
        hits = []

        class H(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *x, **k):
                super().__init__(*x, directory=os.path.join(work, "served"), **k)

            def log_message(self, *x):
                hits.append(self.path)

        origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=origin.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{origin.server_address[1]}/steps/"
        lib = os.path.join(work, "lib")
        os.makedirs(os.path.join(lib, "steps", "go-step", "1.0.0"))
        with open(os.path.join(lib, "steplib.yml"), "w") as f:
            f.write(f"format_version: 1.0.0\nsteplib_source: bench\ndownload_locations:\n  - type: zip\n    src: \"{base}\"\n")
        with open(os.path.join(lib, "steps", "go-step", "1.0.0", "step.yml"), "w") as f:
            f.write("title: Go step\n")

        port = free_port()
        # moto's server logs one line per request: the remote requests are counted from it.
        motolog_path = os.path.join(work, "moto.log")
        motolog = open(motolog_path, "w")
        procs.append(subprocess.Popen([a.moto, "-H", "127.0.0.1", "-p", str(port)],
                                      stdout=motolog, stderr=subprocess.STDOUT))

        def remote_requests():
            with open(motolog_path) as f:
                # A 4xx line is coloured: an escape sequence before the method.
                return [m.group(1) for m in map(REQUEST.search, f) if m]
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(endpoint + "/")
                break
            except OSError:
                time.sleep(0.1)
        req = urllib.request.Request(endpoint + "/bench", method="PUT")
        urllib.request.urlopen(req)
        env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1", AWS_ALLOW_HTTP="true")
        with_remote = dict(env, STEPMAN_REMOTE="s3://bench/fleet")

        n = [0]

        def activate(e):
            n[0] += 1
            home = os.path.join(work, f"h{n[0]}")
            subprocess.run(["sync"])
            t = time.perf_counter()
            subprocess.run([a.bin, "--home", home, "-q", "activate", "-c", lib, "-i", "go-step",
                            "-v", "1.0.0", "-p", os.path.join(home, "step")], env=e, check=True)
            return time.perf_counter() - t

        before = len(hits)
        rbefore = len(remote_requests())
        activate(with_remote)  # the seeding host: origin download, then the upload
        seed_requests = len(hits) - before
        seed_remote = remote_requests()[rbefore:]
        cold, hit, ratios = [], [], []
        origin_during_hits = 0
        hit_remote = []
        for i in range(a.reps):
            order = [0, 1] if i % 2 == 0 else [1, 0]
            t = [0.0, 0.0]
            for which in order:
                before = len(hits)
                rbefore = len(remote_requests())
                t[which] = activate(env if which == 0 else with_remote)
                if which == 1:
                    origin_during_hits += len(hits) - before
                    hit_remote.append(len(remote_requests()) - rbefore)
            cold.append(t[0])
            hit.append(t[1])
            ratios.append(t[1] / t[0])
        print(f"remote hit vs cold from the origin zip (Go-sized, loopback): {spread(ratios)}; "
              f"medians {statistics.median(hit)*1000:.0f} ms vs {statistics.median(cold)*1000:.0f} ms; target <= 1.2x")
        print(f"origin requests: seeding host {seed_requests}, {a.reps} remote hits {origin_during_hits}")
        verbs = " ".join(seed_remote)
        print(f"remote requests: the seeding host (a miss) {len(seed_remote)} ({verbs}); "
              f"each remote hit {sorted(set(hit_remote))}")
    finally:
        for p in procs:
            p.kill()
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
