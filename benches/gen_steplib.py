#!/usr/bin/env python3
"""Generates a synthetic StepLib of the public StepLib's shape: GROUPS step groups and VERSIONS
versions in all, each step.yml a real one from ../shared/steplib-sample (or a built-in template
when the sample is absent), so YAML parsing costs what it costs on real data.

usage: gen_steplib.py OUT_DIR [VERSIONS=3700] [GROUPS=443]
"""
import os
import sys

out = sys.argv[1]
versions = int(sys.argv[2]) if len(sys.argv) > 2 else 3700
groups = int(sys.argv[3]) if len(sys.argv) > 3 else 443
here = os.path.dirname(os.path.abspath(__file__))
sample = os.path.join(here, "..", "..", "shared", "steplib-sample", "steps")

templates = []
if os.path.isdir(sample):
    for gid in sorted(os.listdir(sample)):
        gdir = os.path.join(sample, gid)
        for v in sorted(os.listdir(gdir)):
            p = os.path.join(gdir, v, "step.yml")
            if os.path.isfile(p):
                with open(p, encoding="utf-8") as f:
                    templates.append(f.read())
if not templates:
    templates.append(
        "title: Synthetic\nsummary: A synthetic step\ndescription: |\n" + "  text\n" * 100 +
        "website: https://example.invalid\nsource:\n  git: https://example.invalid/s.git\n"
        "  commit: 0000000000000000000000000000000000000000\ninputs:\n" +
        "".join(f"- input_{i}: value {i}\n  opts:\n    title: Input {i}\n" for i in range(40)))

os.makedirs(os.path.join(out, "steps"), exist_ok=True)
with open(os.path.join(out, "steplib.yml"), "w") as f:
    f.write("format_version: 1.0.0\nsteplib_source: https://example.invalid/steplib.git\n"
            "download_locations:\n  - type: zip\n    src: http://127.0.0.1:1/step-archives/\n")
n = 0
for g in range(groups):
    gid = f"step-{g:04d}"
    gdir = os.path.join(out, "steps", gid)
    os.makedirs(gdir, exist_ok=True)
    with open(os.path.join(gdir, "step-info.yml"), "w") as f:
        f.write("maintainer: bitrise\n")
    count = versions // groups + (1 if g < versions % groups else 0)
    for v in range(count):
        vdir = os.path.join(gdir, f"{1 + v // 10}.{v % 10}.0")
        os.makedirs(vdir, exist_ok=True)
        with open(os.path.join(vdir, "step.yml"), "w", encoding="utf-8") as f:
            f.write(templates[n % len(templates)])
        n += 1
print(f"{out}: {groups} groups, {n} versions")
