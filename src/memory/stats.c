/* ds_memory_stats: the counters the memory calls keep (memory.c, search.c). */
#include "core/growable.h"
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
    ds_status st = DS__OUT_CHECK(out, ds_memory_stats, err);
    if (st != DS_OK)
        return st;
    DS_CHECK_ARG(err, mem, "mem is NULL");
    ds_memory *m = (ds_memory *)mem; /* atomics are read, never written */
    ds_memory_stats local = DS_MEMORY_STATS_INIT;
    local.searches = atomic_load(&m->searches);
    local.hybrid_searches = atomic_load(&m->hybrid_searches);
    local.pgvector_searches = atomic_load(&m->pgvector_searches);
    local.fallback_searches = atomic_load(&m->fallback_searches);
    local.rows_scanned = atomic_load(&m->rows_scanned);
    local.rows_rescored = atomic_load(&m->rows_rescored);
    local.search_time_us = atomic_load(&m->search_time_us);
    local.facts_added = atomic_load(&m->facts_added);
    local.errors = atomic_load(&m->errors);
    ds__growable_out(out, &local, sizeof local);
    return DS_OK;
}
