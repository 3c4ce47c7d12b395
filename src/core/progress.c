/* The shared progress reporter (see progress.h). */
#include <stdio.h>
#include <string.h>

#include "core/progress.h"

void ds__progress_init(ds__progress *p, const char *operation,
                       ds_progress_fn fn, void *ud) {
    memset(p, 0, sizeof *p);
    p->fn = fn;
    p->ud = ud;
    p->operation = operation;
    p->started_us = ds__now_us();
}

ds_status ds__progress_report(ds__progress *p, const char *item,
                              const char *phase, const char *unit,
                              int64_t done, int64_t total, const char *resume,
                              ds_error *err) {
    if (!p || !p->fn)
        return DS_OK;
    if (!item)
        item = "";
    /* A step that went back (a retried batch, a recount) must not show
     * the caller a smaller number for the same thing. */
    if (!phase)
        phase = "";
    if (!strncmp(item, p->last_item, sizeof p->last_item - 1) &&
        !strncmp(phase, p->last_phase, sizeof p->last_phase - 1) &&
        done < p->last_done)
        done = p->last_done;
    snprintf(p->last_item, sizeof p->last_item, "%s", item);
    snprintf(p->last_phase, sizeof p->last_phase, "%s", phase);
    p->last_done = done;
    if (total >= 0 && total < done)
        total = done;
    ds_progress ev = {p->operation,
                      item,
                      phase,
                      unit ? unit : "",
                      done,
                      total < 0 ? -1 : total,
                      (ds__now_us() - p->started_us) / 1000};
    if (p->fn(p->ud, &ev) == 0)
        return DS_OK;
    return ds__error_set(err, DS_ERR_CANCELLED,
                         "%s cancelled by the progress callback after %lld "
                         "%s; what is done is committed%s%s",
                         p->operation, (long long)done, ev.unit,
                         resume ? ": " : "", resume ? resume : "");
}
