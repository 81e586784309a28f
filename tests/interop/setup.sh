#!/usr/bin/env bash
# Prepares what tests/interop.rs needs, from a fresh clone, without prompting:
#   .venv-interop/      a Python venv with the pinned packages of requirements.txt
#                       (reinstalled only when that file or the Python changes)
#   target/interop-py/  Python protobuf + grpcio stubs generated from proto/
# Safe to run again and again. Needs python3 (>= 3.10) with the venv module,
# and network access to PyPI the first time.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

venv="$repo/.venv-interop"
requirements="$repo/tests/interop/requirements.txt"
stubs="$repo/target/interop-py"

say() { printf 'tests/interop/setup.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# shellcheck source=tests/venv.sh
source "$repo/tests/venv.sh"
ensure_venv "$venv" "$requirements"

# --- stubs from proto/ (cheap, so always regenerated; built aside, then swapped in) --
protos=(batchgate/sutro/v1/jobs.proto batchgate/xai/v1/batches.proto)
for p in "${protos[@]}"; do
  [[ -f "proto/$p" ]] || die "proto/$p is missing"
done
mkdir -p "$repo/target"
tmp="$(mktemp -d "$repo/target/interop-py.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# grpc_tools adds its bundled google/protobuf/*.proto (struct, timestamp) to the
# include path itself.
"$py" -m grpc_tools.protoc -I proto \
  --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" "${protos[@]}" \
  || die "generating the Python stubs from proto/ failed"
# Generated modules import each other as `batchgate.<pkg>.v1...`: make every
# directory a regular package.
find "$tmp" -type d -exec touch {}/__init__.py \;
rm -f "$tmp/__init__.py"
rm -rf "$stubs.old"
if [[ -e "$stubs" ]]; then mv "$stubs" "$stubs.old"; fi
mv "$tmp" "$stubs"
rm -rf "$stubs.old"
trap - EXIT

PYTHONPATH="$stubs" "$py" - <<'PY' || die "the venv or the stubs do not import"
import importlib.metadata as md
import grpc, google.protobuf  # noqa: F401
from batchgate.sutro.v1 import jobs_pb2, jobs_pb2_grpc  # noqa: F401
from batchgate.xai.v1 import batches_pb2, batches_pb2_grpc  # noqa: F401
# `import sutro` is left to the check itself: it builds a client at import time.
assert md.version("sutro") == "0.1.67", md.version("sutro")
PY
say "ready: $py, stubs in ${stubs#"$repo/"}"
