#!/usr/bin/env bash
# The whole test suite, from a fresh clone: sets up what the tests need (redis-server, a
# Python venv for the interop clients, Node packages, buf and chromium,
# kubernetes-validate), checks formatting and lints, then runs every test.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

step() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
  echo "tests/run.sh: cargo is not installed; install Rust from https://rustup.rs" >&2
  exit 1
fi

step "redis-server and redis-cli (the Redis tests start their own, on free ports)"
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "redis-server or redis-cli is missing: installing redis-server and redis-tools with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq redis-server redis-tools </dev/null
    # The package starts a system Redis on 6379; the tests never use it, so stop it.
    service redis-server stop >/dev/null 2>&1 || true
  else
    echo "tests/run.sh: redis-server is not installed; install it (apt-get install redis-server redis-tools, brew install redis)" >&2
    exit 1
  fi
fi
redis-server --version

step "prlimit (the accept back-off test runs the gateway with few file descriptors)"
if ! command -v prlimit >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "prlimit is missing: installing util-linux with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq util-linux </dev/null
  else
    echo "tests/run.sh: prlimit is not installed; install util-linux" >&2
    exit 1
  fi
fi

step "Python interop environment (tests/interop/setup.sh)"
bash tests/interop/setup.sh
export BATCHGATE_INTEROP_PYTHON="$repo/.venv-interop/bin/python"
export BATCHGATE_PY_STUBS="$repo/target/interop-py"

step "Node packages, buf and chromium for tests/adoption.rs (tests/node/setup.sh; installs nodejs, npm and chromium if missing)"
bash tests/node/setup.sh

step "kubernetes-validate for tests/adoption.rs (tests/tools/setup.sh)"
bash tests/tools/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

# Benchmarks are not tests (clippy above still compiles them): `--all-targets` would
# run benches/gateway.rs, a harness-less binary, as if it were a test.
# nextest runs each test in its own process, which tests/otlp.rs needs: each of its
# tests installs the process's one global tracing subscriber.
step "tests"
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest is missing: installing it with cargo install (a few minutes, once)"
  cargo install cargo-nextest --locked
fi
cargo nextest run --lib --bins --tests --no-fail-fast
