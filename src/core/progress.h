/* One reporter per long operation: it fills ds_progress, keeps done
 * monotonic and total never below done, and turns a callback's "stop" into
 * DS_ERR_CANCELLED with a message that says how to resume. */
#ifndef DS_CORE_PROGRESS_H
#define DS_CORE_PROGRESS_H

#include <stddef.h>

#include "core/internal.h"

typedef struct ds__progress {
    ds_progress_fn fn; /* may be NULL: reporting is then free */
    void *ud;
    const char *operation;
    int64_t started_us;
    int64_t last_done; /* per item+phase, for the monotonic promise */
    char last_item[128]; /* copies: the caller's strings may not outlive */
    char last_phase[32]; /* the call                                    */
} ds__progress;

void ds__progress_init(ds__progress *p, const char *operation,
                       ds_progress_fn fn, void *ud);

/*
 * Reports `done` of `total` (-1: unknown) for `item` ("" or NULL: none) in
 * `phase`, counted in `unit`. DS_OK to go on; DS_ERR_CANCELLED (with
 * `err` filled: "<operation> cancelled by the progress callback ...
 * `resume`") when the callback returned non-zero.
 */
ds_status ds__progress_report(ds__progress *p, const char *item,
                              const char *phase, const char *unit,
                              int64_t done, int64_t total, const char *resume,
                              ds_error *err);

#endif
