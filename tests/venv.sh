#!/usr/bin/env bash
# Sourced by tests/interop/setup.sh and tests/tools/setup.sh: one Python venv with a
# pinned requirements file, made without prompting and reinstalled only when that file
# or the Python changes. Usage: ensure_venv <venv dir> <requirements.txt>; it needs the
# caller's `say` and `die`, and sets `py` to the venv's interpreter.

ensure_venv() {
  local venv="$1" requirements="$2"
  local stamp="$venv/.requirements-stamp"
  py="$venv/bin/python"
  export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

  command -v python3 >/dev/null 2>&1 \
    || die "python3 is not installed. Install Python 3.10 or newer, e.g. \`sudo apt-get install python3 python3-venv\` (Debian/Ubuntu), \`brew install python\` (macOS)."
  python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || die "python3 is $(python3 -V 2>&1); the tools these tests run need Python 3.10 or newer."

  # A venv whose interpreter no longer runs (Python upgraded or removed) is rebuilt.
  if [[ -e "$venv" ]] && ! "$py" -c 'import sys' >/dev/null 2>&1; then
    say "$venv is broken; recreating it"
    rm -rf "$venv"
  fi
  if [[ ! -x "$py" ]]; then
    say "creating $venv"
    if ! python3 -m venv "$venv"; then
      rm -rf "$venv"
      die "\`python3 -m venv\` failed: the venv module (with ensurepip) is missing. Install it, e.g. \`sudo apt-get install python3-venv\` (Debian/Ubuntu; for a versioned python use python3.X-venv) or \`sudo dnf install python3\` (Fedora), then rerun."
    fi
  fi

  local want
  want="$("$py" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read() + sys.version.encode()).hexdigest())' "$requirements")"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    say "packages are up to date ($(basename "$requirements") unchanged)"
  else
    say "installing pinned packages from ${requirements#"$repo/"}"
    rm -f "$stamp"
    "$py" -m pip install --quiet --no-input --upgrade-strategy only-if-needed -r "$requirements" \
      || die "pip install failed (is PyPI reachable? a proxy can be set with HTTPS_PROXY / PIP_INDEX_URL)"
    printf '%s\n' "$want" >"$stamp"
  fi
}
