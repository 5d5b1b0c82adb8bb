#!/usr/bin/env python3
"""Prints issue 14's StepLib and activation rows, each against its baseline, in one run, on a
real-shaped StepLib (benches/gen_steplib.py: 440 groups, 3,697 versions, groups of up to 170
versions, 5.2 KB step.ymls) committed to a git repository and served by `git daemon` on loopback:

  - step-info cache hit, the biggest group (xcode-archive, 170 versions) and a median-sized one
    (3 versions): ms per process (target <= 2 ms median), `stepman version` (process start) beside
    it; flatness: 170 versions / 3 versions, and the 3,697-version StepLib / a 40-version one
    (target <= 1.2x: flat)
  - update with nothing new upstream vs `git fetch` in a kept clone of the same repository and vs
    `git ls-remote` of its URL (target <= 0.42 s = 0.15x the old tool's 2.8 s; <= 20 ms beyond the
    ls-remote round trip)
  - setup of the git StepLib: seconds beyond `git clone --depth 1` of the same URL (target <= 0.5 s),
    peak RSS (/usr/bin/time -f %M, the largest process of the command's tree; target <= 32 MB);
    setup of the same StepLib as a local path (no clone: target <= 0.5 s)
  - activate, cold, Go-sized zip from a loopback HTTP server, durable (default) and
    STEPMAN_NO_FSYNC=1, vs `curl -o f && unzip` (target <= 1.0x)
  - ten concurrent cold activations vs one cold activation followed by nine concurrent cache-hit
    activations of the same step, both in each repetition (target <= 1.1x; exactly one download)
  - activate, cache hit, Go-sized step into a fresh dir vs `cp -a` (target <= 0.6x)
  - the StepLib published as an API tree (`export-spec --export-type api`) and served over loopback
    HTTP, set up as an API collection: a cache-hit step-info of the biggest group within the
    documents' TTL (target <= 2 ms, no request; beside it the git collection's), and the requests
    of its setup and of a cold lookup (target <= 4 in all)

Every repetition uses fresh destinations (and, for cold runs and setups, a fresh store) so nothing
is deleted and re-created on the measured path; the baseline and stepman run back to back in an
order that alternates between repetitions, after a `sync` (not measured). Medians are reported;
the spread is the quartiles (q1-q3) and the range (min-max) over the repetitions of the per-
repetition ratio (or difference, or value, for rows with an absolute target).

usage: benches/steplib_ratios.py [--reps N] [--bin PATH] [--activation-only] [--old-bin PATH]
       (run from the repository root)
"""
import argparse
import http.server
import os
import shutil
import socket
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
ap.add_argument("--activation-only", action="store_true",
                help="only the activation rows (no StepLib generation, setup, step-info or update)")
ap.add_argument("--old-bin", help="another build (e.g. before a change): its cold durable activation is "
                "measured in the same interleaved repetitions, as a row against the same baseline")
args = ap.parse_args()
# `stepman activate`/`preload` refuse to run without --prepare when STEPMAN_GO is set (clap's
# `requires` counts the env var): keep it out of the commands' environment (passed as --go where needed).
os.environ.pop("STEPMAN_GO", None)
ROOT = os.getcwd()
BIN = os.path.abspath(args.bin)
GEN = os.path.abspath("target/release/examples/gen_tree")
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "stepman", "--example", "gen_tree"], check=True)
BENCH_DIR = os.environ.get("BENCH_DIR") or ("/var/tmp" if os.path.isdir("/var/tmp") else None)
W = tempfile.mkdtemp(prefix="stepman-steplib-ratios.", dir=BENCH_DIR)
REPS = args.reps
FEW = max(3, REPS // 2)  # for the slow rows (setup, ten at once)
rows = []
DAEMON = None


def run(cmd, env=None, **kw):
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    if p.returncode != 0:
        sys.exit(f"steplib_ratios.py: failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.decode(errors='replace')}")


def timed(cmd, env=None, **kw):
    subprocess.run(["sync"])
    t = time.perf_counter()
    run(cmd, env=env, **kw)
    return time.perf_counter() - t


def timed_rss(cmd, env=None):
    """(seconds, peak RSS in MB or None) of `cmd`, measured under /usr/bin/time."""
    if not TIME:
        return timed(cmd, env=env), None
    out = os.path.join(W, "rss")
    t = timed([TIME, "-f", "%M", "-o", out] + cmd, env=env)
    with open(out) as f:
        return t, int(f.read().split()[-1]) / 1024


def env_for(home, **extra):
    e = dict(os.environ, STEPMAN_HOME=home)
    e.update(extra)
    return e


def quart(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[(n + 3) // 4 - 1], xs[(3 * n + 1) // 4 - 1], xs[0], xs[-1]


def row(what, base_name, base, ours, kind, target, unit="ms"):
    """base, ours: samples (paired by index when both are given). kind: "ratio" (ours/base <=
    target), "abs" (median of ours <= target, in `unit`), "delta" (ours - base <= target) or
    "info" (a ratio without a target)."""
    scale = 1000 if unit == "ms" else (1 if unit == "s" else 1)
    mb = statistics.median(base) if base else None
    mo = statistics.median(ours)
    if kind in ("ratio", "info"):
        per = [o / b for b, o in zip(base, ours)]
        value, shown = mo / mb, f"{mo / mb:.2f}x"
        spread = "%.2f-%.2f [%.2f-%.2f]" % quart(per)
        tgt = f"<= {target}x" if kind == "ratio" else "-"
    elif kind == "delta":
        per = [(o - b) * scale for b, o in zip(base, ours)]
        value, shown = (mo - mb) * scale, f"+{(mo - mb) * scale:.0f} {unit}" if unit == "ms" else f"+{(mo - mb):.2f} s"
        spread = ("%.0f-%.0f [%.0f-%.0f]" if unit == "ms" else "%.2f-%.2f [%.2f-%.2f]") % quart(per)
        tgt = f"<= +{target} {unit}" if target is not None else "-"
    else:
        per = [o * scale for o in ours]
        value = mo * scale
        fmt = "%.2f" if unit == "ms" else ("%.0f" if unit == "MB" else "%.2f")
        shown = (fmt % value) + f" {unit}"
        spread = f"{fmt}-{fmt} [{fmt}-{fmt}]" % quart(per)
        tgt = f"<= {target} {unit}"
    verdict = "info" if kind == "info" or target is None else ("PASS" if value <= target else "MISS")

    def fmt_t(samples):
        if samples is None:
            return "-"
        m = statistics.median(samples)
        return f"{m:.0f} MB" if unit == "MB" else (f"{m * 1000:.1f} ms" if m < 1 else f"{m:.2f} s")
    rows.append((what, base_name or "-", fmt_t(base), fmt_t(ours), shown, spread, tgt, verdict))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


try:
    if not args.activation_only:
        # --- the real-shaped StepLib, in git, served by git daemon --------------------------------
        gen_lib = os.path.join(ROOT, "benches", "gen_steplib.py")
        gitroot = os.path.join(W, "git")
        big = os.path.join(gitroot, "steplib")
        gen = subprocess.run([sys.executable, gen_lib, big, "--git"], check=True, capture_output=True, text=True)
        gen_info = gen.stdout.strip().splitlines()[0].split(": ", 1)[1]
        small = os.path.join(W, "small")
        subprocess.run([sys.executable, gen_lib, small, "40", "5"], check=True, capture_output=True)
        port = free_port()
        DAEMON = subprocess.Popen(["git", "daemon", "--export-all", f"--base-path={gitroot}", "--listen=127.0.0.1",
                                   f"--port={port}", "--reuseaddr", gitroot],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"git://127.0.0.1:{port}/steplib"
        for _ in range(100):
            if subprocess.run(["git", "ls-remote", url, "HEAD"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)  # waiting for the daemon to listen, not part of any measurement
        else:
            sys.exit("steplib_ratios.py: git daemon did not start")

        # A median-sized group (3 versions) and the biggest (170), named by the generator.
        steps_dir = os.path.join(big, "steps")

        def versions(gid):
            return sorted((v for v in os.listdir(os.path.join(steps_dir, gid)) if v[0].isdigit()),
                          key=lambda v: [int(x) for x in v.split(".")])

        mid_gid = next(g for g in sorted(os.listdir(steps_dir)) if len(versions(g)) == 3)
        big_gid = "xcode-archive"
        big_v, mid_v = versions(big_gid)[-1], versions(mid_gid)[-1]
        big_n, mid_n = len(versions(big_gid)), len(versions(mid_gid))  # before the update rows add some
        small_gid = sorted(os.listdir(os.path.join(small, "steps")))[1]
        small_v = sorted(v for v in os.listdir(os.path.join(small, "steps", small_gid)) if v[0].isdigit())[-1]

        # --- setup of the git StepLib vs git clone --depth 1; local-path setup -----------------------
        clone_t, setup_t, setup_rss, local_t, local_rss = [], [], [], [], []
        for i in range(FEW):
            home = os.path.join(W, "setup", str(i))
            pair = [("clone", ["git", "clone", "-q", "--depth", "1", url, os.path.join(W, "clone", str(i))], None),
                    ("setup", [BIN, "setup", "-c", url], env_for(home))]
            for name, c, e in (pair if i % 2 == 0 else pair[::-1]):
                if name == "clone":
                    clone_t.append(timed(c))
                else:
                    t, r = timed_rss(c, e)
                    setup_t.append(t)
                    setup_rss.append(r)
            t, r = timed_rss([BIN, "setup", "-c", big], env_for(os.path.join(W, "setup-local", str(i))))
            local_t.append(t)
            local_rss.append(r)
        home = os.path.join(W, "setup", "0")  # set up from git: step-info and update use it
        run([BIN, "setup", "-c", small], env=env_for(home))

        # --- step-info cache hits ---------------------------------------------------------------------
        def info(lib, gid, v):
            return [BIN, "step-info", "--library", lib, "--id", gid, "--version", v, "--format", "json"]

        cmds = {"version": [BIN, "version"], "big": info(url, big_gid, big_v), "mid": info(url, mid_gid, mid_v),
                "small": info(small, small_gid, small_v)}
        t_info = {k: [] for k in cmds}
        for i in range(REPS * 5):
            names = list(cmds)
            for k in names[i % len(names):] + names[:i % len(names)]:
                t_info[k].append(timed(cmds[k], env=env_for(home)))

        # --- the same StepLib published as an API tree, served over loopback HTTP (issue 16) --------
        api_out = os.path.join(W, "api-www", "api")
        run([BIN, "export-spec", "--steplib", url, "--export-type", "api", "--output", api_out], env=env_for(home))

        class ApiHandler(http.server.SimpleHTTPRequestHandler):
            requests = []

            def __init__(self, *a, **kw):
                super().__init__(*a, directory=os.path.join(W, "api-www"), **kw)

            def log_message(self, *a):
                ApiHandler.requests.append(self.path)

        class ApiServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        api_srv = ApiServer(("127.0.0.1", 0), ApiHandler)
        threading.Thread(target=api_srv.serve_forever, daemon=True).start()
        api_url = f"http://127.0.0.1:{api_srv.server_address[1]}/api"
        api_home = os.path.join(W, "api-home")
        run([BIN, "setup", "-c", api_url], env=env_for(api_home))
        api_setup_requests = len(ApiHandler.requests)
        before = len(ApiHandler.requests)
        run(info(api_url, big_gid, big_v), env=env_for(api_home))  # the cold lookup: its documents
        api_cold_requests = len(ApiHandler.requests) - before
        api_cmds = {"git": (info(url, big_gid, big_v), env_for(home)),
                    "api": (info(api_url, big_gid, big_v), env_for(api_home))}
        t_api = {k: [] for k in api_cmds}
        before = len(ApiHandler.requests)
        for i in range(REPS * 5):
            for k in (["git", "api"] if i % 2 == 0 else ["api", "git"]):
                t_api[k].append(timed(api_cmds[k][0], env=api_cmds[k][1]))
        api_hit_requests = len(ApiHandler.requests) - before
        api_srv.shutdown()

        # --- update with nothing new vs git fetch and git ls-remote ---------------------------------
        kept = os.path.join(W, "kept")
        run(["git", "clone", "-q", url, kept])
        run([BIN, "update", "-c", url], env=env_for(home))  # once, not measured
        upd = {"update": ([BIN, "update", "-c", url], env_for(home)), "fetch": (["git", "-C", kept, "fetch", "-q"], None),
               "ls-remote": (["git", "ls-remote", url, "HEAD"], None)}
        t_upd = {k: [] for k in upd}
        for i in range(REPS):
            names = list(upd)
            for k in names[i % 3:] + names[:i % 3]:
                t_upd[k].append(timed(upd[k][0], env=upd[k][1]))

        # --- update after one new commit that touches one group, vs git fetch of it in a kept clone
        # (stepman fetches into its kept mirror and parses only that group).
        t_upd1 = {"update": [], "fetch": []}
        ident = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
        for i in range(REPS):
            d = os.path.join(steps_dir, mid_gid, f"9.{i}.0")
            os.makedirs(d)
            shutil.copy(os.path.join(steps_dir, mid_gid, mid_v, "step.yml"), os.path.join(d, "step.yml"))
            run(["git", "-C", big, "add", "-A"])
            run(["git", "-C", big, *ident, "commit", "-q", "-m", f"release {i}"])
            pair = [("update", [BIN, "update", "-c", url], env_for(home)),
                    ("fetch", ["git", "-C", kept, "fetch", "-q"], None)]
            for k, c, e in (pair if i % 2 == 0 else pair[::-1]):
                t_upd1[k].append(timed(c, env=e))

    # --- the Go-sized step and its StepLib, served over loopback HTTP ---------------------------
    tree = os.path.join(W, "tree")
    run([GEN, tree])
    www = os.path.join(W, "www")
    arch = os.path.join(www, "archives", "gostep", "1.0.0")
    os.makedirs(arch)
    run(["zip", "-q", "-r", "-y", os.path.join(arch, "step.zip"), "."], cwd=tree)

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
    hport = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    lib = os.path.join(W, "lib")
    os.makedirs(os.path.join(lib, "steps", "gostep", "1.0.0"))
    with open(os.path.join(lib, "steplib.yml"), "w") as f:
        f.write(f"format_version: 1.0.0\nsteplib_source: bench\ndownload_locations:\n"
                f"  - type: zip\n    src: http://127.0.0.1:{hport}/archives/\n")
    with open(os.path.join(lib, "steps", "gostep", "1.0.0", "step.yml"), "w") as f:
        f.write("title: Go step\nsource:\n  git: https://example.invalid/gostep.git\n  commit: \"0\"\n")

    def fresh_store(tag):
        h = os.path.join(W, "homes", tag)
        run([BIN, "setup", "-c", lib], env=env_for(h))
        return h

    def activate(h, dest, **extra):
        return [BIN, "activate", "-c", lib, "-i", "gostep", "-v", "1.0.0", "-p", dest], env_for(h, **extra)

    def concurrently(cmds_envs):
        subprocess.run(["sync"])
        t = time.perf_counter()
        procs = [subprocess.Popen(c, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c, e in cmds_envs]
        codes = [p.wait() for p in procs]
        if codes != [0] * len(codes):
            sys.exit(f"steplib_ratios.py: concurrent activations failed: {codes}")
        return time.perf_counter() - t

    # --- cache-hit activation vs cp -a ------------------------------------------------------------
    hit_home = fresh_store("hit")
    run(*activate(hit_home, os.path.join(W, "warm")))
    cp_t, hit_t = [], []
    os.makedirs(os.path.join(W, "cp"))
    for i in range(REPS):
        pair = [("cp", ["cp", "-a", tree, os.path.join(W, "cp", str(i))], None),
                ("hit",) + activate(hit_home, os.path.join(W, "hit", str(i)))]
        for name, c, e in (pair if i % 2 == 0 else pair[::-1]):
            (cp_t if name == "cp" else hit_t).append(timed(c, env=e))

    # --- cold activation vs curl + unzip -------------------------------------------------------
    zurl = f"http://127.0.0.1:{hport}/archives/gostep/1.0.0/step.zip"
    curl_t, cold_sync, cold_nosync, cold_old = [], [], [], []
    for i in range(REPS):
        d = os.path.join(W, "curl", str(i))
        os.makedirs(d)
        base = ["sh", "-c", f"curl -sf -o {d}/step.zip {zurl} && unzip -q {d}/step.zip -d {d}/tree"]
        h1, h2 = fresh_store(f"cold-s{i}"), fresh_store(f"cold-n{i}")
        runs = [("curl", base, None), ("sync",) + activate(h1, os.path.join(W, "cold-s", str(i))),
                ("nosync",) + activate(h2, os.path.join(W, "cold-n", str(i)), STEPMAN_NO_FSYNC="1")]
        if args.old_bin:
            h3 = fresh_store(f"cold-o{i}")
            c, e = activate(h3, os.path.join(W, "cold-o", str(i)))
            runs.append(("old", [os.path.abspath(args.old_bin)] + c[1:], e))
        # Rotate the order, so that no command always runs first or after the same one.
        k = i % len(runs)
        for name, c, e in runs[k:] + runs[:k]:
            {"curl": curl_t, "sync": cold_sync, "nosync": cold_nosync, "old": cold_old}[name].append(timed(c, env=e))

    # --- ten concurrent cold activations vs one cold + nine concurrent cache hits ---------------
    one_t, one9_t, ten_t, downloads = [], [], [], []
    for i in range(FEW):
        def one_plus_nine():
            h = fresh_store(f"one{i}")
            t1 = timed(*activate(h, os.path.join(W, "one", str(i), "0")))
            t9 = concurrently([activate(h, os.path.join(W, "one", str(i), str(k))) for k in range(1, 10)])
            one_t.append(t1)
            one9_t.append(t1 + t9)

        def ten():
            h = fresh_store(f"ten{i}")
            before = Quiet.requests
            ten_t.append(concurrently([activate(h, os.path.join(W, "ten", str(i), str(k))) for k in range(10)]))
            downloads.append(Quiet.requests - before)

        for f in ((one_plus_nine, ten) if i % 2 == 0 else (ten, one_plus_nine)):
            f()
    srv.shutdown()
finally:
    if DAEMON:
        DAEMON.terminate()
        DAEMON.wait()

if not args.activation_only:
    row(f"step-info hit, {big_gid} ({big_n} versions)", "stepman version", t_info["version"], t_info["big"], "abs", 2)
    row(f"step-info hit, median group ({mid_n} versions)", "stepman version", t_info["version"], t_info["mid"], "abs", 2)
    row("step-info flat: 170 versions / 3", "3-version group", t_info["mid"], t_info["big"], "ratio", 1.2)
    row("step-info flat: 3,697-version lib / 40", "40-version StepLib", t_info["small"], t_info["mid"], "ratio", 1.2)
    row(f"API collection: step-info hit, {big_gid}", "git collection", t_api["git"], t_api["api"], "info", None)
    row(f"API collection: step-info hit, {big_gid}", "stepman version", t_info["version"], t_api["api"], "abs", 2)
    row("update, nothing new (0.15x old tool's 2.8 s)", "git fetch (kept clone)", t_upd["fetch"], t_upd["update"], "abs", 420)
    row("update, nothing new upstream, vs git fetch", "git fetch (kept clone)", t_upd["fetch"], t_upd["update"], "info", None)
    row("update, nothing new upstream", "git ls-remote", t_upd["ls-remote"], t_upd["update"], "delta", 20)
    row("update, one new commit, one group", "git fetch (kept clone)", t_upd1["fetch"], t_upd1["update"], "info", None)
    row("update, one new commit, one group", "git fetch (kept clone)", t_upd1["fetch"], t_upd1["update"], "delta", None)
    row("setup, git StepLib", "git clone --depth 1", clone_t, setup_t, "delta", 0.5, unit="s")
    if TIME:
        row("setup, git StepLib: peak RSS", None, None, setup_rss, "abs", 32, unit="MB")
    row("setup, local path (no clone)", None, None, local_t, "abs", 0.5, unit="s")
    if TIME:
        row("setup, local path: peak RSS", None, None, local_rss, "abs", 32, unit="MB")
row("activate, cold, zip, durable (default)", "curl -o f && unzip", curl_t, cold_sync, "ratio", 1.0)
row("activate, cold, zip, STEPMAN_NO_FSYNC=1", "curl -o f && unzip", curl_t, cold_nosync, "ratio", 1.0)
if args.old_bin:
    row("activate, cold, zip, durable: --old-bin", "curl -o f && unzip", curl_t, cold_old, "info", None)
    row("activate, cold, zip, durable: this / old", "--old-bin", cold_old, cold_sync, "info", None)
row("ten concurrent cold activations", "1 cold + 9 hits at once", one9_t, ten_t, "ratio", 1.1)
row("ten concurrent cold activations", "one cold activation", one_t, ten_t, "info", None)
row("activate, cache hit (Go-sized)", "cp -a", cp_t, hit_t, "ratio", 0.6)

print()
if not args.activation_only:
    print(f"StepLib: {gen_info}; served by git daemon on loopback")
print(f"medians of {REPS * 5} (step-info), {REPS} (update, activate), {FEW} (setup, ten at once) interleaved runs; "
      f"spread: q1-q3 [min-max] over repetitions")
hdr = ("what", "baseline", "base med", "stepman", "result", "spread", "target", "")
widths = (44, 24, 9, 9, 9, 24, 11, 4)
line = lambda r: " ".join(f"{c:<{w}}" if j < 2 else f"{c:>{w}}" for j, (c, w) in enumerate(zip(r, widths))).rstrip()
print(line(hdr))
print("-" * 136)
for r in rows:
    print(line(r))
misses = sum(1 for r in rows if r[-1] == "MISS")
ok = all(d == 1 for d in downloads)
if not args.activation_only:
    print(f"API collection requests: setup {api_setup_requests} (meta.json), cold step-info {api_cold_requests} "
          f"(target <= 3 more: versions, step-info, step.json), {REPS * 5} cache-hit step-infos within the TTL "
          f"{api_hit_requests} (target 0)")
    misses += (api_setup_requests + api_cold_requests > 4) + (api_hit_requests != 0)
print(f"downloads per ten concurrent cold activations: {downloads} ({'each exactly one' if ok else 'MISS: must all be 1'})")
print(f"{misses + (0 if ok else 1)} target(s) missed")
if os.environ.get("KEEP") == "1":
    print(f"work dir kept: {W}", file=sys.stderr)
else:
    subprocess.run(["chmod", "-R", "u+w", W])
    shutil.rmtree(W, ignore_errors=True)
