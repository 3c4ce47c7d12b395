#!/usr/bin/env bash
# tests/interop/npm-install.sh BUILD: the npm packages pinned in
# tests/interop/node/package-lock.json, installed once into
# BUILD/interop/node together with the Node sources.
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/../.." && pwd)
src=$root/tests/interop/node
work=$build/interop/node
mkdir -p "$work"
cp "$src"/package.json "$src"/package-lock.json "$src"/tsconfig.json \
    "$src"/query.ts "$src"/crosslang.js "$work/"
if [[ ! -e $work/node_modules/.installed ]] ||
    [[ $src/package-lock.json -nt $work/node_modules/.installed ]]; then
    (cd "$work" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$work/node_modules/.installed"
fi
