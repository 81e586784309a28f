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
stamp="$venv/.requirements-stamp"
py="$venv/bin/python"

say() { printf 'tests/tools/setup.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

command -v python3 >/dev/null 2>&1 \
  || die "python3 is not installed. Install Python 3.10 or newer, e.g. \`sudo apt-get install python3 python3-venv\` (Debian/Ubuntu), \`brew install python\` (macOS)."
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "python3 is $(python3 -V 2>&1); kubernetes-validate needs Python 3.10 or newer."

if [[ -e "$venv" ]] && ! "$py" -c 'import sys' >/dev/null 2>&1; then
  say "$venv is broken; recreating it"
  rm -rf "$venv"
fi
if [[ ! -x "$py" ]]; then
  say "creating $venv"
  if ! python3 -m venv "$venv"; then
    rm -rf "$venv"
    die "\`python3 -m venv\` failed: the venv module (with ensurepip) is missing. Install it, e.g. \`sudo apt-get install python3-venv\`, then rerun."
  fi
fi

want="$("$py" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read() + sys.version.encode()).hexdigest())' "$requirements")"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  say "packages are up to date ($(basename "$requirements") unchanged)"
else
  say "installing pinned packages from tests/tools/requirements.txt"
  rm -f "$stamp"
  "$py" -m pip install --quiet --no-input -r "$requirements" \
    || die "pip install failed (is PyPI reachable? a proxy can be set with HTTPS_PROXY / PIP_INDEX_URL)"
  printf '%s\n' "$want" >"$stamp"
fi
"$venv/bin/kubernetes-validate" --version >/dev/null \
  || die "kubernetes-validate does not run from $venv"
say "ready: $venv/bin/kubernetes-validate $("$venv/bin/kubernetes-validate" --version)"
