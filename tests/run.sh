#!/usr/bin/env bash
# The whole test suite, from a fresh clone: sets up what the tests need (a Python venv
# for the interop clients), checks formatting and lints, then runs every test.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

step() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
  echo "tests/run.sh: cargo is not installed; install Rust from https://rustup.rs" >&2
  exit 1
fi

step "Python interop environment (tests/interop/setup.sh)"
bash tests/interop/setup.sh
export BATCHGATE_INTEROP_PYTHON="$repo/.venv-interop/bin/python"
export BATCHGATE_PY_STUBS="$repo/target/interop-py"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

# Benchmarks are not tests (clippy above still compiles them): `--all-targets` would
# run benches/gateway.rs, a harness-less binary, as if it were a test.
step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --lib --bins --tests --no-fail-fast
else
  cargo test --lib --bins --tests --no-fail-fast
fi
