#!/usr/bin/env bash
# make install into a fresh prefix, then build examples/quickstart.c using
# nothing but `pkg-config --cflags --libs datastore` and run it.
set -euo pipefail
build=${1:-build}
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
make -s install BUILD="$build" PREFIX="$prefix" >/dev/null
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
flags=$(pkg-config --cflags --libs datastore)
# shellcheck disable=SC2086 # word splitting of the flags is intended
cc -std=c11 -Wall -Wextra -Werror examples/quickstart.c -o "$prefix/quickstart" $flags
LD_LIBRARY_PATH=$prefix/lib "$prefix/quickstart" >/dev/null
test -x "$prefix/lib/libdatastore.so.0" -o -L "$prefix/lib/libdatastore.so.0"
test -f "$prefix/lib/libdatastore.a"
test -f "$prefix/include/datastore/datastore.h"
echo "installed to a temporary prefix; quickstart built with: $flags"
