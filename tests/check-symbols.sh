#!/usr/bin/env bash
# The shared library exports exactly the functions the public headers
# declare with DS_EXPORT: nothing internal (ds__*), nothing missing.
set -euo pipefail
build=${1:-build}
lib="$build/lib/libdatastore.so"
declared=$(grep -h 'DS_EXPORT' include/datastore/*.h | grep -v '#define' |
    grep -oE '\bds_[a-z0-9_]+\(' | tr -d '(' | sort -u)
exported=$(nm -D --defined-only "$lib" | awk '$2 == "T" || $2 == "D" || $2 == "B" {print $3}' |
    sed 's/@.*//' | sort -u)
missing=$(comm -23 <(echo "$declared") <(echo "$exported"))
extra=$(comm -13 <(echo "$declared") <(echo "$exported"))
status=0
if [[ -n $missing ]]; then
    echo "declared but not exported:"; echo "$missing" | sed 's/^/  /'; status=1
fi
if [[ -n $extra ]]; then
    echo "exported but not declared public:"; echo "$extra" | sed 's/^/  /'; status=1
fi
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
if [[ $soname != libdatastore.so.0 ]]; then
    echo "unexpected soname: $soname"; status=1
fi
echo "$(echo "$declared" | wc -l) public functions exported, soname $soname"
exit $status
