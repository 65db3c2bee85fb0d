#!/usr/bin/env bash
# Create .venv and install deepmia with pinned versions (constraints.txt pins torch==2.13.0, the CPU build).
# Usage: bash scripts/install.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip wheel setuptools
.venv/bin/python -m pip install -q -c constraints.txt -e ".${extras}"
