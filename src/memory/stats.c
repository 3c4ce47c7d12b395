/* ds_memory_stats: the counters the memory calls keep (memory.c, search.c). */
#include "memory/memory_internal.h"

DS_EXPORT void ds_memory_stats_init(ds_memory_stats *stats) {
    if (!stats)
        return;
    memset(stats, 0, sizeof *stats);
    stats->size = sizeof *stats;
}

DS_EXPORT ds_status ds_memory_stats_get(const ds_memory *mem,
                                        ds_memory_stats *out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    /* the first release is the whole struct; later ones only append */
    DS_CHECK_ARG(err, out->size == sizeof *out,
                 "out->size is not sizeof (ds_memory_stats): call "
                 "ds_memory_stats_init() first");
    ds_memory_stats_init(out);
    DS_CHECK_ARG(err, mem, "mem is NULL");
    ds_memory *m = (ds_memory *)mem; /* atomics are read, never written */
    out->searches = atomic_load(&m->searches);
    out->hybrid_searches = atomic_load(&m->hybrid_searches);
    out->pgvector_searches = atomic_load(&m->pgvector_searches);
    out->fallback_searches = atomic_load(&m->fallback_searches);
    out->rows_scanned = atomic_load(&m->rows_scanned);
    out->rows_rescored = atomic_load(&m->rows_rescored);
    out->search_time_us = atomic_load(&m->search_time_us);
    out->facts_added = atomic_load(&m->facts_added);
    out->errors = atomic_load(&m->errors);
    return DS_OK;
}
