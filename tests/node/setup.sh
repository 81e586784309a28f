#!/usr/bin/env bash
# Prepares what tests/adoption.rs needs from npm, and a browser, from a fresh clone,
# without prompting:
#   tests/node/node_modules/   @grpc/grpc-js and @grpc/proto-loader (the Node client
#                              check), @bufbuild/buf (buf lint / buf format of proto/), and
#                              for the browser check protoc-gen-es, @bufbuild/protobuf,
#                              @connectrpc/connect(-web), esbuild and playwright-core,
#                              exactly as pinned in package-lock.json (`npm ci`)
#   /usr/bin/chromium          Debian's chromium, which the browser check drives through
#                              playwright-core (it never downloads a browser of its own)
# Reinstalled only when package-lock.json or the Node version changes. Installs Node and
# npm, and chromium, with apt-get when they are missing and this runs as root (as CI
# does); otherwise says how to get them. Needs network access to the npm registry and
# Debian's mirrors the first time.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
stamp="$here/node_modules/.lock-stamp"

say() { printf 'tests/node/setup.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "node or npm is missing: installing nodejs and npm with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq nodejs npm </dev/null
  else
    die "node and npm are not installed. Install Node.js 18 or newer with npm, e.g. \`sudo apt-get install nodejs npm\` (Debian/Ubuntu) or \`brew install node\` (macOS), then rerun."
  fi
fi
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' \
  || die "node is $(node --version); @grpc/grpc-js needs Node.js 18 or newer."

want="$( (cat package-lock.json; node --version) | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x node_modules/.bin/buf ]]; then
  say "packages are up to date (package-lock.json unchanged)"
else
  say "installing the packages pinned in tests/node/package-lock.json (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error \
    || die "npm ci failed (is the npm registry reachable? a proxy can be set with HTTPS_PROXY or npm_config_registry)"
  printf '%s\n' "$want" >"$stamp"
fi

node -e 'require("@grpc/grpc-js"); require("@grpc/proto-loader")' \
  || die "@grpc/grpc-js or @grpc/proto-loader does not load"
node -e 'require("playwright-core"); require("esbuild")' \
  || die "playwright-core or esbuild does not load"

chromium="${BATCHGATE_CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
  if [[ "$chromium" == /usr/bin/chromium ]] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "chromium is missing: installing Debian's chromium with apt-get (the browser check of tests/adoption.rs drives it)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium </dev/null
  else
    die "$chromium is missing. Install Chromium, e.g. \`sudo apt-get install chromium\` (Debian), or point BATCHGATE_CHROMIUM at a Chromium or Chrome binary, then rerun."
  fi
fi
say "ready: node $(node --version), buf $(node_modules/.bin/buf --version), $("$chromium" --version 2>/dev/null | head -n 1)"
