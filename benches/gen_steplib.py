#!/usr/bin/env python3
"""Generates a synthetic StepLib with the shape of the public one (issue 14): by default 440 step
groups and 3,697 versions, versions per group median 3 with the biggest groups of 170, 154, 139,
113 and 90 versions (named after the real ids: xcode-archive, activate-build-cache-for-gradle,
project-scanner, xcode-test, git-clone), step.yml files of 5.2 KB on average (19.4 MB in all),
~201 groups whose latest version has `toolkit: go`, ~144 `toolkit: bash`, 178 versions with
precompiled `executables`.

Each step.yml copies the STRUCTURE of a real one from ../shared/steplib-sample (its fields in
their order, the number and shape of its inputs and outputs and their opts, value_options, the
number and length of the lines of every description, source/commit, deps, tags, even the bare
`=` scalar that trips strict YAML parsers), but none of its text: every string is synthesized
from a seeded generator, line for line at the same length (scaled so that the mean file size is
the real StepLib's). When the sample (or PyYAML, needed to read it) is missing, built-in
structure parameters drawn from that sample are used instead, and stderr says so. The output is
deterministic: the same arguments write the same bytes (and, with --git, the same commit id).

usage: gen_steplib.py OUT_DIR [VERSIONS=3697] [GROUPS=440] [--git] [--seed N] [--sample DIR]
  --git     make OUT_DIR a git repository holding the StepLib in one commit (branch master,
            fixed author and dates), for setup/update benchmarks over git
Other VERSIONS/GROUPS scale the shape: the five big groups in proportion (only when GROUPS >= 20),
the rest long-tailed, the toolkit and executables counts in proportion.
"""
import argparse
import json
import os
import random
import math
import re
import statistics
import subprocess
import sys

REAL_VERSIONS, REAL_GROUPS = 3697, 440
BIG = [("xcode-archive", 170), ("activate-build-cache-for-gradle", 154), ("project-scanner", 139),
       ("xcode-test", 113), ("git-clone", 90)]
REAL_MEDIAN = 3
REAL_GO_LATEST, REAL_BASH_LATEST, REAL_EXECUTABLES = 201, 144, 178
REAL_BYTES = 19_400_000
PLATFORMS = ["darwin-amd64", "darwin-arm64", "linux-amd64", "linux-arm64"]
# Vocabularies for the tag lists (the StepLib's categories are a fixed set, not prose).
TYPE_TAGS = ["build", "test", "deploy", "utility", "code-sign", "notification", "artifact-info",
             "installer", "dependency", "access-control"]
PROJECT_TAGS = ["ios", "android", "macos", "flutter", "react-native", "cordova", "ionic", "xamarin"]
HOST_TAGS = ["osx-10.10", "ubuntu-16.04", "ubuntu"]
KEEP_SCALARS = {"yes", "no", "true", "false", "", "Yes", "No", "true", "False", "True"}

ap = argparse.ArgumentParser(usage=__doc__.split("usage: ")[1].split("\n")[0])
ap.add_argument("out")
ap.add_argument("versions", nargs="?", type=int, default=REAL_VERSIONS)
ap.add_argument("groups", nargs="?", type=int, default=REAL_GROUPS)
ap.add_argument("--git", action="store_true")
ap.add_argument("--seed", type=int, default=14)
here = os.path.dirname(os.path.abspath(__file__))
ap.add_argument("--sample", default=os.path.join(here, "..", "..", "shared", "steplib-sample"))
args = ap.parse_args()
if args.groups < 1 or args.versions < args.groups:
    sys.exit("gen_steplib.py: need 1 <= GROUPS <= VERSIONS")


# ---- skeletons: a step.yml's structure with every text replaced by its line lengths ----------
class Prose:
    """Text: the lengths of its lines, and whether it ends with a newline."""

    def __init__(self, lines, nl=False, memo=None, fixed=False):
        self.lines, self.nl, self.memo, self.fixed = lines, nl, memo, fixed  # memo: same text, same words


class Kind:
    """A value made from the generated names (kind: hex40, sha256, stamp, url, env, ident...)."""

    def __init__(self, kind, n=0, memo=None):
        self.kind, self.n, self.memo = kind, n, memo


class Raw:
    """Emitted as written (the bare `=` of the real data)."""

    def __init__(self, text):
        self.text = text


def prose_of(s, memo=None, fixed=False):
    nl = s.endswith("\n")
    body = s[:-1] if nl else s
    # A markdown prefix (a list bullet, a heading) is structure; keep its shape, not its words.
    return Prose([(m.group(1) if (m := re.match(r"(\s*(?:[-*]|#+|\d+\.)\s)", ln)) else "", len(ln))
                  for ln in body.split("\n")], nl, memo, fixed)


def skeleton(doc):
    """The structure of a parsed step.yml; none of its text survives."""
    memo = {}

    def enum(s):  # one synthesized word per distinct value in the file: defaults stay options
        if s in KEEP_SCALARS:
            return s
        return Kind("enum", len(s), memo.setdefault(("enum", s), len(memo)))

    def value(v, path):
        if isinstance(v, bool) or v is None or isinstance(v, (int, float)):
            return v
        if isinstance(v, list):
            return [value(x, path + "[]") for x in v]
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if path in ("inputs[]", "outputs[]") and k != "opts":
                    key = Kind("env_key" if path == "inputs[]" else "ENV_KEY", len(str(k)))
                    out[key] = default(x)
                else:
                    out[k] = value(x, f"{path}.{k}" if path else k)
            return out
        if not isinstance(v, str):  # a timestamp PyYAML parsed
            return Kind("stamp")
        if v == "=":
            return Raw("=")
        last = path.rsplit(".", 1)[-1]
        if path == "source.commit":
            return Kind("hex40")
        if path.startswith("executables."):
            return Kind("sha256") if last == "hash" else Kind("storage_uri", memo=path.split(".")[1])
        if last in ("website", "source_code_url", "support_url"):
            return Kind("url", memo=last)
        if path == "source.git":
            return Kind("git")
        if path == "toolkit.go.package_name":
            return Kind("package")
        if path == "toolkit.bash.entry_file":
            return v if v == "step.sh" else Kind("ident", len(v))
        if path.endswith("_tags[]"):
            return Kind(path.split("_")[0], memo=len(memo) + 1)
        if path.startswith("deps.") or path.startswith("dependencies[]."):
            return v if last == "manager" else Kind("ident", len(v))
        if path == "run_if":
            return v if v == ".IsCI" else Kind("run_if", len(v))
        if last == "value_options[]":
            return enum(v)
        if last == "category":
            return prose_of(v, memo.setdefault(("cat", v), len(memo)), fixed=True)
        return prose_of(v, fixed=last == "title")

    def default(v):
        if isinstance(v, str):
            if v.startswith("$"):
                return Kind("env", len(v), memo.setdefault(("env", v), len(memo)))
            if v == "=":
                return Raw("=")
            # A script or a long default is text; a short one may be one of the value_options.
            return prose_of(v) if "\n" in v or len(v) > 40 else enum(v)
        return value(v, "default")

    return value(doc, "")


def builtin_templates(rng):
    """Skeletons drawn from parameters measured on the sample (266 step.ymls): ~10 inputs each,
    62% of them described, 21% with value_options; ~3.5 outputs; 45% with deps."""
    groups = []
    for g in range(36):
        versions = []
        n_in, n_out = rng.randint(1, 22), rng.choice([0, 0, 1, 2, 3, 4, 6, 9])
        desc = [rng.choice([0, 40, 80, 120, 160]) for _ in range(rng.randint(2, 28))]
        cats = [rng.randint(8, 24) for _ in range(rng.randint(0, 4))]
        for _ in range(rng.choice([1, 1, 2, 3, 3, 4, 5, 8, 12, 21])):
            d = {"title": Prose([("", rng.randint(10, 40))]),
                 "summary": Prose([("", rng.randint(30, 110))]),
                 "description": Prose([("", n) for n in desc], True),
                 "website": Kind("url", memo="website"), "source_code_url": Kind("url", memo="source_code_url"),
                 "support_url": Kind("url", memo="support_url"), "published_at": Kind("stamp"),
                 "source": {"git": Kind("git"), "commit": Kind("hex40")},
                 "host_os_tags": [Kind("host", memo=1)] if rng.random() < 0.6 else None,
                 "project_type_tags": [Kind("project", memo=i) for i in range(rng.randint(1, 3))],
                 "type_tags": [Kind("type", memo=1)],
                 "toolkit": {"go": {"package_name": Kind("package")}},
                 "deps": {"brew": [{"name": Kind("ident", 6)}], "apt_get": [{"name": Kind("ident", 6)}]}
                 if rng.random() < 0.45 else None,
                 "is_requires_admin_user": False, "is_always_run": False, "is_skippable": False,
                 "run_if": ".IsCI" if rng.random() < 0.7 else None, "inputs": [], "outputs": []}
            for i in range(n_in):
                opts = {"title": Prose([("", rng.randint(8, 50))])}
                if cats and rng.random() < 0.58:
                    c = rng.randrange(len(cats))
                    opts["category"] = Prose([("", cats[c])], memo=("cat", c))
                if rng.random() < 0.62:
                    opts["description"] = Prose([("", rng.choice([0, 60, 100, 140])) for _ in range(rng.randint(1, 7))])
                if rng.random() < 0.36:
                    opts["summary"] = Prose([("", rng.randint(20, 90))])
                opts["is_required"] = rng.random() < 0.38
                if rng.random() < 0.21:
                    opts["value_options"] = [Kind("enum", 5, memo=(i, k)) for k in range(rng.randint(2, 4))]
                d["inputs"].append({Kind("env_key", rng.randint(6, 24)): Kind("env", 14, memo=i), "opts": opts})
            for i in range(n_out):
                d["outputs"].append({Kind("ENV_KEY", rng.randint(10, 30)): None,
                                     "opts": {"title": Prose([("", rng.randint(8, 40))]),
                                              "description": Prose([("", rng.randint(20, 120))])}})
            versions.append({k: v for k, v in d.items() if v not in (None, [])})
        groups.append(("community" if g % 2 else "bitrise", None, versions, False))
    return groups


def load_sample(root):
    """[(maintainer, deprecation (notes, removal) or None, [skeleton per version, oldest first],
    has_assets)] per sample group, or None when the sample cannot be read."""
    steps = os.path.join(root, "steps")
    if not os.path.isdir(steps):
        print(f"gen_steplib.py: no sample at {root}: using built-in structure parameters", file=sys.stderr)
        return None
    try:
        import yaml
    except ImportError:
        print("gen_steplib.py: PyYAML is not installed (pip install pyyaml), so the sample cannot be "
              "read: using built-in structure parameters", file=sys.stderr)
        return None

    class Loader(yaml.SafeLoader):
        pass

    # The real data has a bare `=`, which PyYAML reads as its "value" tag: a string here.
    Loader.add_constructor("tag:yaml.org,2002:value", lambda ld, node: ld.construct_scalar(node))
    groups = []
    for gid in sorted(os.listdir(steps)):
        gdir = os.path.join(steps, gid)
        vers = sorted((v for v in os.listdir(gdir) if os.path.isfile(os.path.join(gdir, v, "step.yml"))),
                      key=lambda v: [int(x) if x.isdigit() else 0 for x in re.split(r"[.-]", v)])
        skels = []
        for v in vers:
            with open(os.path.join(gdir, v, "step.yml"), encoding="utf-8") as f:
                try:
                    doc = yaml.load(f, Loader)
                except yaml.YAMLError:
                    continue
            if isinstance(doc, dict):
                skels.append(skeleton(doc))
        if not skels:
            continue
        info = {}
        p = os.path.join(gdir, "step-info.yml")
        if os.path.isfile(p):
            with open(p, encoding="utf-8") as f:
                info = yaml.load(f, Loader) or {}
        dep = None
        if info.get("deprecate_notes"):
            dep = (prose_of(str(info["deprecate_notes"])), bool(info.get("removal_date")))
        groups.append((str(info.get("maintainer", "community")), dep, skels,
                       os.path.isdir(os.path.join(gdir, "assets"))))
    if not groups:
        print(f"gen_steplib.py: no readable step.yml under {steps}: using built-in structure parameters",
              file=sys.stderr)
        return None
    return groups


# ---- the shape: versions per group -----------------------------------------------------------
def group_sizes(versions, groups):
    """Sizes, biggest first: the five big groups (scaled), then a long tail whose median is the
    real one (scaled), summing to `versions`."""
    scale = versions / REAL_VERSIONS
    big = [max(1, round(n * scale)) for _, n in BIG] if groups >= 20 else []
    rest_g, rest_v = groups - len(big), versions - sum(big)
    med = max(1, round(REAL_MEDIAN * (versions / groups) / (REAL_VERSIONS / REAL_GROUPS)))

    cap = big[-1] - 1 if big else rest_v
    nd = statistics.NormalDist()

    def tail(sigma):  # log-normal quantiles around the median: many groups of 1, a long tail
        return [min(cap, max(1, round(med * math.exp(sigma * nd.inv_cdf(1 - (r + 0.5) / rest_g)))))
                for r in range(rest_g)]

    lo, hi = 0.0, 4.0
    for _ in range(60):  # the spread that makes the tail sum to rest_v
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sum(tail(mid)) < rest_v else (lo, mid)
    sizes = tail(lo)
    # Rounding leaves the sum a little off: take from / give to the groups just above the median.
    i, step = 0, (1 if sum(sizes) < rest_v else -1)
    while sum(sizes) != rest_v:
        j = rest_g // 3 - 1 - i % max(1, rest_g // 3)
        if sizes[j] + step >= max(1, med) and sizes[j] + step <= cap:
            sizes[j] += step
        i += 1
        if i > 100 * rest_g:
            sizes[-1] += rest_v - sum(sizes)
    return big + sorted(sizes, reverse=True)


# ---- text synthesis --------------------------------------------------------------------------
class Words:
    def __init__(self, rng):
        syl = ["ba", "ke", "lo", "mi", "nu", "ra", "se", "ti", "vo", "za", "den", "fir", "gal", "hum",
               "jor", "kes", "lin", "mar", "nop", "qui", "ros", "tal", "ung", "ver", "wis", "xen", "yol"]
        self.vocab = sorted({"".join(rng.choice(syl) for _ in range(rng.choice([1, 1, 2, 2, 2, 3, 3, 4])))
                             for _ in range(3000)})
        self.rng = rng

    def line(self, n, prefix=""):
        """`n` characters of sentences (exactly, but for a word never cut mid-way at the end)."""
        out, start = prefix, True
        while len(out) < n:
            w = self.rng.choice(self.vocab)
            if start:
                w = w.capitalize()
            sep = "" if out == prefix else " "
            room = n - len(out) - len(sep)
            if room <= 0:
                break
            w = w[:room]
            start = self.rng.random() < 0.12 and room > len(w) + 2
            out += sep + w + ("." if start else "")
        return out[:n] if n else ""


class Synth:
    """Turns skeletons into documents for one generated version."""

    def __init__(self, rng, words, gid, version, scale, dry):
        self.rng, self.words, self.gid, self.version, self.scale, self.dry = rng, words, gid, version, scale, dry
        self.memo = {}

    def text(self, p):
        if p.memo is not None and ("p", p.memo) in self.memo:
            return self.memo[("p", p.memo)]
        lines = []
        for prefix, n in p.lines:
            n = round(n * self.scale) if n > len(prefix) and not p.fixed else n
            lines.append("x" * n if self.dry else self.words.line(n, prefix))
        s = "\n".join(lines) + ("\n" if p.nl else "")
        if p.memo is not None:
            self.memo[("p", p.memo)] = s
        return s

    def word(self, n, sep="_"):
        out = ""
        while len(out) < n:
            out += (sep if out else "") + self.rng.choice(self.words.vocab)
        return out[:max(n, 1)].rstrip(sep) or "x"

    def kind(self, k):
        rng, key = self.rng, (k.kind, k.memo)
        if k.memo is not None and key in self.memo:
            return self.memo[key]
        if k.kind == "hex40":
            s = "%040x" % rng.getrandbits(160)
        elif k.kind == "sha256":
            s = "sha256-%064x" % rng.getrandbits(256)
        elif k.kind == "stamp":
            s = Raw("20%02d-%02d-%02dT%02d:%02d:%02d.%07dZ" % (rng.randint(15, 26), rng.randint(1, 12), rng.randint(1, 28),
                                                             rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59),
                                                             rng.randrange(10**7)))
        elif k.kind == "url":
            s = f"https://example.invalid/steps/{self.gid}" + ("/issues" if k.memo == "support_url" else "")
        elif k.kind == "git":
            s = f"https://example.invalid/steps/{self.gid}.git"
        elif k.kind == "package":
            s = f"example.invalid/steps/{self.gid}"
        elif k.kind == "storage_uri":
            s = f"steps/{self.gid}/{self.version}/bin/{self.gid}-{k.memo}"
        elif k.kind in ("type", "project", "host"):
            vocab = {"type": TYPE_TAGS, "project": PROJECT_TAGS, "host": HOST_TAGS}[k.kind]
            s = vocab[(hash_str(self.gid) + k.memo) % len(vocab)]
        elif k.kind == "env":
            s = "$" + self.word(k.n - 1).upper()
        elif k.kind == "env_key":
            s = self.word(k.n)
        elif k.kind == "ENV_KEY":
            s = self.word(k.n).upper()
        elif k.kind == "run_if":
            s = '{{getenv "%s" | eq "true"}}' % self.word(max(4, k.n - 24)).upper()
        elif k.kind == "enum":
            s = self.word(k.n, "-")
        else:  # ident
            s = self.word(k.n, "-")
        if k.memo is not None:
            self.memo[key] = s
        return s

    def doc(self, v):
        if isinstance(v, dict):
            return {(self.kind(k) if isinstance(k, Kind) else k): self.doc(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self.doc(x) for x in v]
        if isinstance(v, Prose):
            return self.text(v)
        if isinstance(v, Kind):
            return self.kind(v)
        return v


def hash_str(s):
    h = 0
    for c in s.encode():
        h = (h * 131 + c) % 1_000_003
    return h


# ---- a small YAML emitter (block style, the real files' layout) ------------------------------
PLAIN = re.compile(r"[A-Za-z0-9$.][A-Za-z0-9 _./()$,'+:-]*")
NUMBERISH = re.compile(r"[-+]?[0-9][0-9_:.eExXoObB+-]*")
RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def scalar(v):
    if isinstance(v, Raw):
        return v.text
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if (PLAIN.fullmatch(v) and not NUMBERISH.fullmatch(v) and v.lower() not in RESERVED
            and not v.endswith((" ", ":")) and ": " not in v):
        return v
    return json.dumps(v, ensure_ascii=False)


def emit(v, ind=""):
    out = []
    if isinstance(v, dict):
        for k, x in v.items():
            out.append(entry(scalar(k), x, ind))
    return "".join(out)


def entry(head, x, ind, first_prefix=None):
    pre = first_prefix if first_prefix is not None else ind
    if isinstance(x, dict) and x:
        return f"{pre}{head}:\n" + emit(x, ind + "  ")
    if isinstance(x, list) and x:
        return f"{pre}{head}:\n" + "".join(item(y, ind) for y in x)
    if isinstance(x, str) and "\n" in x:
        body = x[:-1] if x.endswith("\n") else x
        lines = "".join((ind + "  " + ln if ln else "") + "\n" for ln in body.split("\n"))
        return f"{pre}{head}: |{'' if x.endswith(chr(10)) else '-'}\n" + lines
    if isinstance(x, (dict, list)):
        return f"{pre}{head}: {'{}' if isinstance(x, dict) else '[]'}\n"
    return f"{pre}{head}: {scalar(x)}\n"


def item(y, ind):
    if isinstance(y, dict) and y:
        ks = list(y.items())
        s = entry(scalar(ks[0][0]), ks[0][1], ind + "  ", first_prefix=ind + "- ")
        return s + "".join(entry(scalar(k), x, ind + "  ") for k, x in ks[1:])
    return f"{ind}- {scalar(y)}\n"


# ---- the StepLib -----------------------------------------------------------------------------
rng = random.Random(args.seed)
templates = load_sample(os.path.abspath(args.sample))
if templates is None:
    templates = builtin_templates(random.Random(args.seed))
sizes = group_sizes(args.versions, args.groups)
scale_n = args.versions / REAL_VERSIONS
gids = [n for n, _ in BIG] if args.groups >= 20 else []
n_big = len(gids)
gids += [f"step-{g:04d}" for g in range(len(gids), args.groups)]
# The big groups take the sample's biggest groups' structure; the rest cycle through the sample.
# The sample's groups are not the StepLib's mix of sizes (its mean step.yml is 3.2 KB per group,
# the StepLib's 5.2 KB: its big groups are the long, well-documented steps). So the big groups take
# the structure of the sample groups with the most bytes, and the rest draw groups weighted by
# their step.yml size; the text scale below makes up the remaining difference.
_w = Words(random.Random(0))
weight = [len(emit(Synth(random.Random(0), _w, "g", "1.0.0", 1.0, True).doc(t[2][-1]))) for t in templates]
by_bytes = sorted(range(len(templates)), key=lambda i: (-weight[i] * len(templates[i][2]), i))
tmpl_of = [by_bytes[i % len(by_bytes)] for i in range(n_big)]
tmpl_of += random.Random(args.seed + 1).choices(range(len(templates)), weights=weight, k=args.groups - n_big)
# Toolkits of each group's versions (the latest's counted: ~201 go, ~144 bash), and executables in
# the newest versions of the biggest Go groups (178 versions).
n_go = round(REAL_GO_LATEST * args.groups / REAL_GROUPS)
n_bash = round(REAL_BASH_LATEST * args.groups / REAL_GROUPS)
kinds = ["go"] * n_go + ["bash"] * n_bash + [None] * (args.groups - n_go - n_bash)
random.Random(args.seed + 2).shuffle(kinds)
for i in range(n_big):  # the real big groups are Go steps
    if kinds[i] != "go":
        j = kinds.index("go", n_big)
        kinds[i], kinds[j] = kinds[j], kinds[i]
exec_left = round(REAL_EXECUTABLES * scale_n)
executables = [0] * args.groups
for g in sorted(range(args.groups), key=lambda g: -sizes[g]):
    if kinds[g] == "go" and exec_left > 0:
        executables[g] = min(exec_left, sizes[g], 6)
        exec_left -= executables[g]


def version_name(v):
    return f"{1 + v // 10}.{v % 10}.0"


def step_doc(skel, kind, with_exec):
    d = {k: v for k, v in skel.items() if k not in ("toolkit", "executables")}
    tk = {"go": {"go": {"package_name": Kind("package")}}, "bash": {"bash": {"entry_file": "step.sh"}}}.get(kind)
    out = {}
    for k, v in d.items():
        out[k] = v
        if k == "source" and with_exec:
            out["executables"] = {p: {"storage_uri": Kind("storage_uri", memo=p), "hash": Kind("sha256")}
                                  for p in PLATFORMS}
        if k == "type_tags" and tk:
            out["toolkit"] = tk
    if tk and "toolkit" not in out:
        out["toolkit"] = tk
    return out


def versions_of(g):
    maint, dep, skels, assets = templates[tmpl_of[g]]
    n = sizes[g]
    for v in range(n):
        skel = skels[v * len(skels) // n]
        yield v, step_doc(skel, kinds[g], v >= n - executables[g])


def generate(scale, out_dir=None):
    """Total bytes of the step.ymls at this text scale (written when out_dir is given)."""
    dry = out_dir is None
    words = Words(random.Random(args.seed + 3))
    total = 0
    for g, gid in enumerate(gids):
        grng = random.Random(f"{args.seed}/{gid}")
        maint, dep, _, assets = templates[tmpl_of[g]]
        gdir = os.path.join(out_dir, "steps", gid) if out_dir else None
        for v, d in versions_of(g):
            synth = Synth(random.Random(f"{args.seed}/{gid}/{v}"), words, gid, version_name(v), scale, dry)
            text = emit(synth.doc(d))
            total += len(text.encode())
            if gdir:
                os.makedirs(os.path.join(gdir, version_name(v)), exist_ok=True)
                with open(os.path.join(gdir, version_name(v), "step.yml"), "w", encoding="utf-8") as f:
                    f.write(text)
        if gdir:
            info = {"maintainer": maint}
            if dep:
                info["deprecate_notes"] = Synth(grng, words, gid, "", 1.0, False).text(dep[0])
                if dep[1]:
                    info["removal_date"] = "20%02d-%02d-%02d" % (grng.randint(20, 27), grng.randint(1, 12), grng.randint(1, 28))
            with open(os.path.join(gdir, "step-info.yml"), "w", encoding="utf-8") as f:
                f.write(emit(info))
            if assets:
                os.makedirs(os.path.join(gdir, "assets"), exist_ok=True)
                pts = " ".join(f"L{grng.randint(0, 999)} {grng.randint(0, 999)}" for _ in range(grng.randint(20, 400)))
                with open(os.path.join(gdir, "assets", "icon.svg"), "w") as f:
                    f.write(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1000 1000"><path d="M0 0 {pts}Z"/></svg>\n')
    return total


# File sizes are linear in the text scale: two dry runs give the scale of the real mean size.
target = REAL_BYTES * scale_n
t1, t2 = generate(1.0), generate(2.0)
scale = max(0.05, 1.0 + (target - t1) / (t2 - t1)) if t2 != t1 else 1.0
out = args.out
os.makedirs(os.path.join(out, "steps"), exist_ok=True)
with open(os.path.join(out, "steplib.yml"), "w") as f:
    f.write("format_version: 1.0.0\nsteplib_source: https://example.invalid/steplib.git\n"
            "assets_download_base_uri: http://127.0.0.1:1/steps\n"
            "download_locations:\n  - type: zip\n    src: http://127.0.0.1:1/step-archives/\n"
            "  - type: git\n    src: source/git\n")
total = generate(scale, out)
n = sum(sizes)
latest = {"go": kinds.count("go"), "bash": kinds.count("bash")}
print(f"text scale {scale:.2f}", file=sys.stderr)
print(f"{out}: {args.groups} groups, {n} versions (biggest {', '.join(map(str, sizes[:5]))}; median "
      f"{sorted(sizes)[len(sizes) // 2]}), step.yml {total / 1e6:.1f} MB ({total / n / 1000:.1f} KB mean), "
      f"latest toolkit go {latest['go']}, bash {latest['bash']}; {sum(executables)} with executables")
if args.git:
    env = dict(os.environ, GIT_AUTHOR_NAME="gen_steplib", GIT_AUTHOR_EMAIL="gen@example.invalid",
               GIT_COMMITTER_NAME="gen_steplib", GIT_COMMITTER_EMAIL="gen@example.invalid",
               GIT_AUTHOR_DATE="2026-01-01T00:00:00Z", GIT_COMMITTER_DATE="2026-01-01T00:00:00Z")
    git = ["git", "-C", out, "-c", "commit.gpgsign=false", "-c", "core.autocrlf=false"]
    subprocess.run(["git", "init", "-q", "-b", "master", out], check=True, env=env)
    subprocess.run(git + ["add", "-A"], check=True, env=env)
    subprocess.run(git + ["commit", "-q", "-m", "generated StepLib"], check=True, env=env)
    head = subprocess.run(git + ["rev-parse", "HEAD"], check=True, env=env, capture_output=True, text=True).stdout.strip()
    print(f"{out}: git repository, master at {head}")
