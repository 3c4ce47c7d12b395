#!/usr/bin/env bash
# tests/interop/drizzle-check.sh BUILD: the Drizzle schema of a freshly
# migrated database, from scripts/drizzle-schema, compiles with tsc and
# answers one query per table (tests/interop/node/query.ts).
#
# Needs DATABASE_URL (scripts/run-tests exports it), node and npm; the npm
# packages pinned in tests/interop/node/package-lock.json are installed
# once into BUILD/interop/node (npm-install.sh).
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/../.." && pwd)
"$root/tests/interop/npm-install.sh" "$build"
work=$build/interop/node

db=dt_drizzle_$$
base=${DATABASE_URL%%\?*}
query=${DATABASE_URL#"$base"}
url=${base%/*}/$db$query
psql "$DATABASE_URL" -Xqc "CREATE DATABASE $db"
trap 'psql "$DATABASE_URL" -Xqc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
DATABASE_URL=$url "$build/bin/ds-migrate" up >/dev/null
# a user whose id only BigInt holds exactly
psql "$url" -Xqc "INSERT INTO users (id, email) OVERRIDING SYSTEM VALUE
                  VALUES (9007199254740993, 'big@example.com')"
/usr/bin/python3 "$root/scripts/drizzle-schema" "$url" > "$work/schema.ts"
(cd "$work" && ./node_modules/.bin/tsc -p .)
node "$work/dist/query.js" "$url"
