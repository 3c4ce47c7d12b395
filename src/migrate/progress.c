/* What the runner and partition maintenance report to the options'
 * on_progress callback (see ds_progress in core.h). */
#include <stdio.h>

#include "migrate/migrate_internal.h"

void ds__migrate_progress_init(ds__progress *p, const char *operation,
                               const ds_migrate_options *opts) {
    ds__progress_init(p, operation, opts ? opts->on_progress : NULL,
                      opts ? opts->on_progress_ud : NULL);
}

int64_t ds__migrate_planned(const ds__migration_set *set,
                            const ds__applied_list *applied, int64_t target) {
    int64_t n = 0;
    for (size_t k = 0; k < applied->count; k++)
        n += applied->rows[k].version > target; /* to revert */
    for (size_t k = 0; k < set->count; k++) {
        const ds__migration_file *f = &set->files[k];
        if (f->version > target)
            break;
        bool done = false;
        for (size_t j = 0; j < applied->count && !done; j++)
            done = applied->rows[j].version == f->version;
        n += !done; /* to apply */
    }
    return n;
}

ds_status ds__migrate_report_statement(ds__progress *p, const char *file,
                                       bool no_tx, int done, int total,
                                       ds_error *err) {
    char resume[400];
    snprintf(resume, sizeof resume,
             no_tx ? "the statements of %s that ran stay (it runs outside a "
                     "transaction and is written to run again); run the "
                     "migrations again to finish it"
                   : "%s was rolled back; run the migrations again",
             file);
    return ds__progress_report(p, file, "statement", "statements", done, total,
                               resume, err);
}

ds_status ds__migrate_report_file(ds__progress *p, int64_t done,
                                  int64_t total, ds_error *err) {
    return ds__progress_report(p, "", "files", "files", done, total,
                               "the migrations applied so far stay; run the "
                               "migrations again to apply the rest",
                               err);
}
