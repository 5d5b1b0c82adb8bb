#!/usr/bin/env bash
set -euo pipefail
message="${greeting:-Hello}, world"
echo "$message"
if command -v envman >/dev/null 2>&1; then
  envman add --key HELLO_MESSAGE --value "$message"
fi
