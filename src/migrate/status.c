/* ds_migrate_status and ds_migrate_verify: the files and the record,
 * read without the migration lock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/runner.h"

#define MODULE "migrate"

/* ---- status and verify ---------------------------------------------------- */

DS_EXPORT const char *ds_migrate_state_str(ds_migration_state state) {
    switch (state) {
    case DS_MIGRATION_PENDING: return "pending";
    case DS_MIGRATION_APPLIED: return "applied";
    case DS_MIGRATION_CHANGED: return "changed";
    case DS_MIGRATION_MISSING: return "missing";
    case DS_MIGRATION_OUT_OF_ORDER: return "out-of-order";
    }
    return "unknown";
}

DS_EXPORT void ds_migrate_list_free(ds_migration_list *list) {
    if (!list)
        return;
    for (size_t k = 0; k < list->count; k++)
        ds__free((char *)list->items[k].name);
    ds__free(list->items);
    ds__free(list);
}

static ds_status build_list(const ds__migration_set *set,
                            const ds__applied_list *applied,
                            ds_migration_list **out, ds_error *err) {
    ds_migration_list *l = ds__calloc(1, sizeof *l);
    size_t cap = set->count + applied->count;
    if (l)
        l->items = ds__calloc(cap ? cap : 1, sizeof *l->items);
    if (!l || !l->items) {
        ds__free(l);
        return ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    }
    l->current_version = ds__migrate_current_version(applied);
    l->latest_version = set->count ? set->files[set->count - 1].version : 0;
    l->consistent = true;
    size_t i = 0, j = 0;
    while (i < set->count || j < applied->count) {
        const ds__migration_file *f = i < set->count ? &set->files[i] : NULL;
        const ds__applied *a = j < applied->count ? &applied->rows[j] : NULL;
        ds_migration *m = &l->items[l->count];
        const char *name;
        if (f && (!a || f->version <= a->version)) {
            bool same = a && a->version == f->version;
            m->version = f->version;
            name = f->name;
            m->no_transaction = f->up_no_tx;
            memcpy(m->checksum, f->checksum, sizeof m->checksum);
            if (same) {
                m->state = ds__migration_checksum_matches(f, a->name,
                                                          a->checksum)
                               ? DS_MIGRATION_APPLIED
                               : DS_MIGRATION_CHANGED;
                m->applied_at_us = a->applied_at_us;
                m->duration_ms = a->duration_ms;
                memcpy(m->applied_checksum, a->checksum,
                       sizeof m->applied_checksum);
                j++;
            } else {
                m->state = f->version < l->current_version
                               ? DS_MIGRATION_OUT_OF_ORDER
                               : DS_MIGRATION_PENDING;
            }
            i++;
        } else {
            m->version = a->version;
            name = a->name;
            m->state = DS_MIGRATION_MISSING;
            m->no_transaction = a->no_transaction;
            m->applied_at_us = a->applied_at_us;
            m->duration_ms = a->duration_ms;
            memcpy(m->applied_checksum, a->checksum,
                   sizeof m->applied_checksum);
            j++;
        }
        m->name = ds__strdup(name);
        if (!m->name) {
            ds_migrate_list_free(l);
            return ds__error_set(err, DS_ERR_NOMEM,
                                 "migrations: out of memory");
        }
        l->count++;
        if (m->state == DS_MIGRATION_PENDING)
            l->pending++;
        else if (m->state != DS_MIGRATION_APPLIED)
            l->consistent = false;
    }
    *out = l;
    return DS_OK;
}

/* Files and record, read without a lock. */
static ds_status read_state(ds_pool *pool, const ds_migrate_options *opts,
                            ds__runner *r, ds__applied_list *applied,
                            ds_error *err) {
    static const ds_migrate_options defaults = DS_MIGRATE_OPTIONS_INIT;
    ds_status st = ds__migrate_runner_open(r, pool, opts, &defaults, err);
    if (st == DS_OK)
        st = ds__migrate_lease(r, false, err);
    if (st == DS_OK)
        st = ds__migrate_read_applied(r->conn, true, applied, err);
    return st;
}

DS_EXPORT ds_status ds_migrate_status(ds_pool *pool,
                                      const ds_migrate_options *opts,
                                      ds_migration_list **out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    ds__runner r;
    ds__applied_list applied = {0};
    ds_status st = read_state(pool, opts, &r, &applied, err);
    if (st == DS_OK)
        st = build_list(r.set, &applied, out, err);
    ds__applied_list_clear(&applied);
    ds__migrate_runner_close(&r);
    return st;
}

DS_EXPORT ds_status ds_migrate_verify(ds_pool *pool,
                                      const ds_migrate_options *opts,
                                      ds_error *err) {
    DS_CHECK_ARG(err, pool, "pool is NULL");
    ds__runner r;
    ds__applied_list applied = {0};
    ds_status st = read_state(pool, opts, &r, &applied, err);
    if (st == DS_OK)
        st = ds__migrate_verify_history(r.set, &applied, err);
    ds__applied_list_clear(&applied);
    ds__migrate_runner_close(&r);
    return st;
}

