/*
 * libFuzzer target for ds-migrate lint (`make fuzz`): any bytes as a
 * migration file. The linter must either refuse the file (DS_ERR_MIGRATION:
 * it cannot be split, or holds a NUL byte) or report findings that are
 * consistent: every finding names a rule, a line inside the file (bodies
 * of DO blocks and strings included), and the counts add up.
 */
#include <stdlib.h>
#include <string.h>

#include "migrate/migrate_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            __builtin_trap();                                                  \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ds_migrate_lint_report *r = calloc(1, sizeof *r);
    if (!r)
        return 0;
    ds_error err = {0};
    ds_status st = ds__lint_sql(r, "f.up.sql", (const char *)data, size, &err);
    CHECK(st == DS_OK || st == DS_ERR_MIGRATION || st == DS_ERR_NOMEM);
    if (st == DS_OK) {
        int lines = 1;
        for (size_t k = 0; k < size; k++)
            lines += data[k] == '\n';
        size_t errors = 0, warnings = 0, waived = 0;
        for (size_t k = 0; k < r->count; k++) {
            const ds_migrate_lint_finding *f = &r->items[k];
            CHECK(f->rule && f->rule[0] && f->message && f->why && f->fix);
            CHECK(f->line >= 1 && f->line <= lines + 1);
            CHECK(!f->waiver || f->waived);
            if (f->waived)
                waived++;
            else if (f->level == DS_MIGRATE_LINT_ERROR)
                errors++;
            else
                warnings++;
        }
        CHECK(errors == r->errors && warnings == r->warnings &&
              waived == r->waived && r->files == 1);
    } else {
        CHECK(err.message[0] != '\0');
    }
    ds_migrate_lint_report_free(r);
    return 0;
}
