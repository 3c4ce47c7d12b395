/*
 * quickstart: open a pool from the environment and run a query.
 *
 *   DATABASE_URL=postgresql://user:pass@host/db ./quickstart
 *
 * Every call returns a ds_status; on failure `err.message` says why (and
 * never contains the password).
 */
#include <datastore/datastore.h>
#include <stdio.h>

int main(void) {
    ds_error err = {0};
    ds_config *cfg = NULL;
    ds_pool *pool = NULL;
    ds_sql_result *res = NULL;
    int rc = 1;

    if (ds_config_from_env(&cfg, &err) != DS_OK)
        goto fail;
    if (ds_pool_open(cfg, &pool, &err) != DS_OK)
        goto fail;

    ds_sql_param params[] = {ds_sql_param_text("world")};
    if (ds_sql_exec_pool(pool, "SELECT 'hello, ' || $1, version()", params, 1, &res,
                     &err) != DS_OK)
        goto fail;
    const char *greeting, *version;
    if (ds_sql_result_text(res, 0, 0, &greeting, NULL, &err) != DS_OK ||
        ds_sql_result_text(res, 0, 1, &version, NULL, &err) != DS_OK)
        goto fail;
    printf("%s from libdatastore %s\nserver: %.40s...\n", greeting,
           ds_version(), version);
    rc = 0;

fail:
    if (rc != 0)
        fprintf(stderr, "quickstart: %s: %s\n", ds_status_str(err.code),
                err.message);
    ds_sql_result_free(res);
    ds_pool_close(pool);
    ds_config_free(cfg);
    return rc;
}
