#!/usr/bin/env bash
# Rebuilds the example step archives from ../steps (run after changing a step's files).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/archives/hello-world/1.0.0/step.zip"
rm -f "$out"
(cd "$here/../steps/hello-world" && TZ=UTC zip -q -X -D "$out" step.sh step.yml)
echo "wrote $out"
