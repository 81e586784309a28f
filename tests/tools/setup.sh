#!/usr/bin/env bash
# Prepares the Python tools tests/adoption.rs runs, from a fresh clone, without prompting:
#   .venv-tools/   a venv with the pinned packages of tests/tools/requirements.txt
#                  (kubernetes-validate, for deploy/kubernetes/), reinstalled only when
#                  that file or the Python changes
# Safe to run again and again. Needs python3 (>= 3.10) with the venv module, and
# network access to PyPI the first time. (buf comes from npm: tests/node/setup.sh.)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/.venv-tools"
requirements="$repo/tests/tools/requirements.txt"

say() { printf 'tests/tools/setup.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# shellcheck source=tests/venv.sh
source "$repo/tests/venv.sh"
ensure_venv "$venv" "$requirements"
"$venv/bin/kubernetes-validate" --version >/dev/null \
  || die "kubernetes-validate does not run from $venv"
say "ready: $venv/bin/kubernetes-validate $("$venv/bin/kubernetes-validate" --version)"
