#!/usr/bin/env bash
# tests/interop/crosslang.sh BUILD: one platform, three languages, the data
# of docs/formats.md in between:
#   1. C (examples/interop, linked with the library) makes a user, a session
#      token, a cache entry, a message and an event;
#   2. Node (tests/interop/node/crosslang.js) reads the cache entry,
#      validates the session token and enqueues a job;
#   3. the C worker (examples/interop work) processes that job;
#   4. Python (tests/interop/crosslang.py) reads the message and the event
#      with exact types.
# Needs DATABASE_URL and REDIS_URL (scripts/run-tests exports them), node,
# npm, python3-psycopg2; npm packages as for drizzle-check.sh.
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/../.." && pwd)
"$root/tests/interop/npm-install.sh" "$build"
work=$build/interop/node

db=dt_crosslang_$$
base=${DATABASE_URL%%\?*}
query=${DATABASE_URL#"$base"}
export DATABASE_URL=${base%/*}/$db$query
admin=$base$query
psql "$admin" -Xqc "CREATE DATABASE $db"
handoff=$(mktemp)
export DS_REDIS_PREFIX="dt:crosslang:$$:"
cleanup() {
    rm -f "$handoff"
    psql "$admin" -Xqc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    redis-cli -u "$REDIS_URL" --no-auth-warning --scan --pattern "$DS_REDIS_PREFIX*" |
        while read -r k; do redis-cli -u "$REDIS_URL" --no-auth-warning DEL "$k" >/dev/null; done
}
trap cleanup EXIT
"$build/bin/ds-migrate" up >/dev/null
# a ring of this run, shared by the C and Node sides
key=$(head -c 32 /dev/urandom | base64)
export DS_TOKEN_KEYS="crosslang:$key"

"$build/examples/interop" prepare "$handoff"
node "$work/crosslang.js" "$handoff"
"$build/examples/interop" work
/usr/bin/python3 "$root/tests/interop/crosslang.py" "$handoff"
