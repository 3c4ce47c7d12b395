#!/usr/bin/env bash
# Every public header compiles on its own, included twice (include guard),
# as strict C99 and as C++11, with warnings as errors: a user may include any
# one of them first, from C or from C++. The compilers are first shown a
# header with a known fault, so a check that cannot fail is caught too.
set -uo pipefail
cd "$(dirname "$0")/.."
CC_C=${HEADER_CC:-gcc}
CC_CXX=${HEADER_CXX:-g++}
jansson=$(pkg-config --cflags jansson 2>/dev/null)
c_flags=(-std=c99 -pedantic-errors -Wall -Wextra -Wstrict-prototypes -Werror)
cxx_flags=(-std=c++11 -pedantic-errors -Wall -Wextra -Werror)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# compile LANG FILE: 0 when FILE compiles in LANG (c or c++) with the flags above.
compile() {
    if [[ $1 == c ]]; then
        # shellcheck disable=SC2086
        "$CC_C" "${c_flags[@]}" -Iinclude -I"$tmp" $jansson -fsyntax-only -x c "$2"
    else
        # shellcheck disable=SC2086
        "$CC_CXX" "${cxx_flags[@]}" -Iinclude -I"$tmp" $jansson -fsyntax-only -x c++ "$2"
    fi
}

status=0
# The fault pool.h once had: a typedef declared twice (C11 allows it, C99 not).
printf 'typedef struct ds_x ds_x;\ntypedef struct ds_x ds_x;\n' >"$tmp/faulty.h"
printf '#include "faulty.h"\n' >"$tmp/faulty.c"
if compile c "$tmp/faulty.c" 2>/dev/null; then
    echo "the C99 check accepts a typedef declared twice"; status=1
fi
# Valid C, not C++: a void pointer converted implicitly.
printf 'static inline int *ds_x(void *p) { return p; }\n' >"$tmp/cish.h"
printf '#include "cish.h"\n' >"$tmp/cish.cc"
if compile c++ "$tmp/cish.cc" 2>/dev/null; then
    echo "the C++ check accepts C-only code"; status=1
fi

headers=(include/datastore/*.h)
if ((${#headers[@]} < 2)); then
    echo "no public headers found"; exit 1
fi
for h in "${headers[@]}"; do
    name=$(basename "$h")
    printf '#include <datastore/%s>\n#include <datastore/%s>\n' "$name" "$name" >"$tmp/one.c"
    for lang in c c++; do
        if ! compile "$lang" "$tmp/one.c" 2>"$tmp/err"; then
            echo "$name does not compile alone as $lang:"
            sed 's/^/  /' "$tmp/err" | head -20
            status=1
        fi
    done
done

# Every growable struct's initialiser works in both languages, with every
# warning on: a caller declares `ds_x o = DS_X_INIT;` and sets what it needs.
inits=0
for h in "${headers[@]}"; do
    name=$(basename "$h")
    while read -r macro type; do
        [[ -n $macro ]] || continue
        printf '#include <datastore/%s>\nint main(void) {\n    %s v = %s;\n    return v.size == sizeof v ? 0 : 1;\n}\n' \
            "$name" "$type" "$macro" >"$tmp/init.c"
        for lang in c c++; do
            if ! compile "$lang" "$tmp/init.c" 2>"$tmp/err"; then
                echo "$macro does not compile as $lang:"
                sed 's/^/  /' "$tmp/err" | head -10
                status=1
            fi
        done
        inits=$((inits + 1))
    done < <(sed -n 's/^#define \(DS_[A-Z0-9_]*_INIT\) DS_SIZED_INIT(\(ds_[a-z0-9_]*\))$/\1 \2/p' "$h")
done
if ((inits < 20)); then
    echo "only $inits growable-struct initialisers found"; status=1
fi
echo "${#headers[@]} public headers and $inits initialisers checked as C99 and C++11"
exit $status
