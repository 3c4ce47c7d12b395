#!/usr/bin/env bash
# Every public function lives in the header its prefix names (docs/abi.md,
# "Names"): ds_<module>_* in datastore/<module>.h, where <module> is the
# header's name or, for a header named after rows in the plural, their
# singular (users.h: ds_user_*); datastore/core.h holds the library-wide
# names (ds_init, ds_version*, ds_free, ds_status_*, ds_error_*, ds_log_*).
# Types are not checked: some are shared by several headers (ds_status,
# ds_conn, ds_read_token). Prints each misplaced name; fails if any.
set -u
cd "$(dirname "$0")/.."
status=0
count=0
for h in include/datastore/*.h; do
    module=$(basename "$h" .h)
    [[ $module = datastore ]] && continue
    case $module in
    core) allowed='ds_(init|version|version_number|free|status_[a-z_]+|error_[a-z_]+|log_[a-z_]+)' ;;
    *) allowed="ds_(${module}|${module%s})(_[a-z0-9_]+)?" ;;
    esac
    names=$( (grep -h 'DS_EXPORT' "$h" | grep -v '#define' |
        grep -oE '\bds_[a-z0-9_]+\(' | tr -d '('
        grep -oE '^static inline [a-z_ ]+\*?\s*\bds_[a-z0-9_]+\(' "$h" |
        grep -oE 'ds_[a-z0-9_]+\(' | tr -d '(') | sort -u)
    for n in $names; do
        count=$((count + 1))
        if ! [[ $n =~ ^${allowed}$ ]]; then
            echo "$h: $n does not start with its header's prefix"; status=1
        fi
    done
done
echo "$count public functions checked against their headers"
exit $status
