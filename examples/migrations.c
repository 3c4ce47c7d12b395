/*
 * migrations: what a service does at start-up with the migrations built
 * into libdatastore: bring the schema up to date, show where it stands,
 * verify the history, keep the analytics partitions ahead, and refuse to
 * start when the database does not match this build (ds_migrate_check_schema).
 *
 *   DATABASE_URL=... ./migrations
 *
 * In production a deploy step usually runs `ds-migrate up` and the service
 * only calls ds_migrate_check_schema(); calling ds_migrate_up() from the service is
 * just as safe (runners serialise on a database lock).
 */
#include <datastore/datastore.h>
#include <stdio.h>

static void on_event(void *ud, const ds_migrate_event *p) {
    (void)ud;
    if (p->kind == DS_MIGRATE_EVENT_APPLIED)
        printf("  applied %04lld_%s (%lld ms)\n", (long long)p->version,
               p->name, (long long)(p->elapsed_us / 1000));
    else if (p->kind == DS_MIGRATE_EVENT_WAITING)
        printf("  another instance is migrating; waiting\n");
}

/* Long work (here: rows moved out of the default partition) reports its
 * progress; returning non-zero would stop it with DS_ERR_CANCELLED, and the
 * next run would continue. */
static int on_work(void *ud, const ds_progress *p) {
    (void)ud;
    if (p->total >= 0)
        printf("  %s %s: %lld of %lld %s\n", p->operation, p->item,
               (long long)p->done, (long long)p->total, p->unit);
    return 0;
}

int main(void) {
    ds_error err = {0};
    ds_config *cfg = NULL;
    ds_pool *pool = NULL;
    ds_migration_list *list = NULL;
    int rc = 1;

    if (ds_config_from_env(&cfg, &err) != DS_OK ||
        ds_pool_open(cfg, &pool, &err) != DS_OK)
        goto out;

    /* 1. Apply whatever is pending (nothing when already up to date). */
    ds_migrate_options opts = DS_MIGRATE_OPTIONS_INIT; /* embedded migrations, default timeouts */
    opts.on_event = on_event;
    int applied = 0;
    if (ds_migrate_up(pool, &opts, &applied, &err) != DS_OK)
        goto out;
    printf("up: %d migration(s) applied\n", applied);

    /* 2. Where the database stands. */
    if (ds_migrate_status(pool, NULL, &list, &err) != DS_OK)
        goto out;
    for (size_t i = 0; i < list->count; i++) {
        const ds_migration *m = &list->items[i];
        printf("  %04lld %-24s %s\n", (long long)m->version, m->name,
               ds_migrate_state_str(m->state));
    }
    printf("status: version %lld of %lld, %zu pending\n",
           (long long)list->current_version, (long long)list->latest_version,
           list->pending);

    /* 3. The applied files are the ones this build carries, unedited. */
    if (ds_migrate_verify(pool, NULL, &err) != DS_OK)
        goto out;
    printf("verify: the history matches\n");

    /* 4. Monthly analytics partitions for this month and the next three
     * (also safe from cron: `ds-migrate maintain`). */
    int created = 0;
    ds_migrate_options work = DS_MIGRATE_OPTIONS_INIT;
    work.on_progress = on_work;
    if (ds_migrate_maintain(pool, &work, 3, &created, &err) != DS_OK)
        goto out;
    printf("maintain: %d partition(s) created\n", created);

    /* 5. The start-up gate: schema version and every statement's types. */
    if (ds_migrate_check_schema(pool, &err) != DS_OK)
        goto out;
    printf("schema check: the database matches schema version %d\n",
           DS_SCHEMA_VERSION);
    rc = 0;

out:
    if (rc != 0)
        fprintf(stderr, "migrations: %s: %s\n", ds_status_str(err.code),
                err.message);
    ds_migrate_list_free(list);
    ds_pool_close(pool);
    ds_config_free(cfg);
    return rc;
}
