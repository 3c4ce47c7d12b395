/*
 * The memory handle and its detection of the database's backend: reads
 * memory_vector_settings and the catalog, checks them against the
 * configuration, and notices a conversion made by another process.
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/config_internal.h"
#include "memory/memory_internal.h"

#define MODULE "memory"

/* ---- detection -------------------------------------------------------------- */

static void parse_version(const char *v, int out[3]) {
    out[0] = out[1] = out[2] = 0;
    sscanf(v, "%d.%d.%d", &out[0], &out[1], &out[2]);
}

typedef struct db_record {
    size_t dim;
    ds__memory_state state;
    bool available; /* the server could install pgvector */
} db_record;

ds_status ds__memory_settings(ds_conn *c, PGresult **out, ds_error *err) {
    *out = NULL;
    PGresult *r =
        ds__memory_exec(c, &ds__memory_stmts[M_SETTINGS], NULL, err);
    if (!r)
        return err->code;
    if (PQntuples(r) != 1) {
        ds_status st = ds__error_set(err, DS_ERR_SCHEMA,
                                     "memory_vector_settings must hold one "
                                     "row, it holds %d",
                                     PQntuples(r));
        PQclear(r);
        return st;
    }
    *out = r;
    return DS_OK;
}

/* Reads memory_vector_settings and the catalog, and checks that the
 * embedding column is what the record says. */
static ds_status read_record(ds_conn *c, db_record *rec, ds_error *err) {
    memset(rec, 0, sizeof *rec);
    ds_error local = {0};
    PGresult *r;
    ds_status st = ds__memory_settings(c, &r, &local);
    if (st != DS_OK) {
        if (strcmp(local.sqlstate, "42P01") == 0) {
            local.code = DS_ERR_SCHEMA;
            ds__error_prefix(&local, "the memory schema is missing (run the "
                                     "migrations: sql/0003_memory_embeddings)");
        }
        return ds__memory_fail(&local, err);
    }
    rec->dim = ds__get_be32(PQgetvalue(r, 0, 0));
    const char *backend = PQgetvalue(r, 0, 1);
    bool has_ext = !PQgetisnull(r, 0, 2);
    const char *coltype = PQgetisnull(r, 0, 3) ? "" : PQgetvalue(r, 0, 3);
    rec->state.hnsw = PQgetvalue(r, 0, 4)[0] != 0;
    rec->available = PQgetvalue(r, 0, 5)[0] != 0;
    if (has_ext)
        snprintf(rec->state.pgvector_version,
                 sizeof rec->state.pgvector_version, "%s",
                 PQgetvalue(r, 0, 2));
    int ver[3];
    parse_version(rec->state.pgvector_version, ver);
    rec->state.iterative = ver[0] > 0 || ver[1] >= 8;
    char want_type[32];
    if (strcmp(backend, "pgvector") == 0) {
        rec->state.backend = DS_VECTOR_BACKEND_PGVECTOR;
        snprintf(want_type, sizeof want_type, "vector(%zu)", rec->dim);
        if (!has_ext)
            st = ds__error_set(err, DS_ERR_SCHEMA,
                               "the database records the pgvector backend "
                               "but the extension is not installed");
    } else {
        rec->state.backend = DS_VECTOR_BACKEND_FALLBACK;
        snprintf(want_type, sizeof want_type, "bytea");
    }
    if (st == DS_OK && strcmp(coltype, want_type) != 0)
        st = ds__error_set(err, DS_ERR_SCHEMA,
                           "memory_facts.embedding is '%s' but the database "
                           "records the %s backend (%s)",
                           coltype[0] ? coltype : "missing", backend,
                           want_type);
    PQclear(r);
    return st;
}

static const char *backend_name(ds_vector_backend b) {
    return b == DS_VECTOR_BACKEND_PGVECTOR ? "pgvector" : "fallback";
}

ds__memory_state ds__memory_state_get(ds_memory *mem) {
    pthread_mutex_lock(&mem->mu);
    ds__memory_state s = mem->state;
    pthread_mutex_unlock(&mem->mu);
    return s;
}

bool ds__memory_state_changed(ds_memory *mem, const ds_error *failure) {
    /* What a statement of the old backend meets after a conversion: a
     * dropped column, an operator on the wrong type, a cached plan whose
     * result type changed. */
    static const char *const states[] = {"42703", "42883", "42804", "0A000",
                                         "42P01"};
    bool match = false;
    for (size_t i = 0; failure && i < sizeof states / sizeof states[0]; i++)
        match |= strcmp(failure->sqlstate, states[i]) == 0;
    if (!match)
        return false;
    ds_conn *c;
    if (ds_pool_acquire(mem->pool, &c, NULL) != DS_OK)
        return false;
    db_record rec;
    ds_status st = read_record(c, &rec, NULL);
    ds_pool_release(c);
    if (st != DS_OK || rec.dim != mem->dim)
        return false;
    pthread_mutex_lock(&mem->mu);
    bool changed = rec.state.backend != mem->state.backend ||
                   rec.state.hnsw != mem->state.hnsw;
    if (changed)
        mem->state = rec.state;
    pthread_mutex_unlock(&mem->mu);
    if (changed)
        ds__log(DS_LOG_INFO, MODULE, "the database now uses the %s backend",
                backend_name(rec.state.backend));
    return changed;
}

ds_status ds__memory_active_table(ds_conn *conn, const char **module,
                                  ds_error *err) {
    *module = NULL;
    db_record rec;
    ds_status st = read_record(conn, &rec, err);
    if (st == DS_OK)
        *module = rec.state.backend == DS_VECTOR_BACKEND_PGVECTOR
                      ? "memory.pgvector"
                      : "memory.fallback";
    return st;
}

size_t ds__memory_migration_settings(int64_t embedding_dim,
                                     int64_t vector_backend,
                                     ds__migration_setting out[2]) {
    static const char *const names[] = {"auto", "pgvector", "fallback"};
    out[0].name = "ds.embedding_dim";
    snprintf(out[0].value, sizeof out[0].value, "%lld",
             (long long)embedding_dim);
    out[1].name = "ds.vector_backend";
    int64_t b = vector_backend;
    snprintf(out[1].value, sizeof out[1].value, "%s",
             names[b >= 0 && b <= 2 ? b : 0]);
    return 2;
}

/* ---- the handle ---------------------------------------------------------------- */

DS_EXPORT ds_status ds_memory_open(ds_pool *pool, const ds_config *cfg,
                                   ds_memory **out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    ds_config *defaults = NULL;
    if (!cfg) {
        ds_status st = ds_config_new(&defaults, err);
        if (st != DS_OK)
            return st;
        cfg = defaults;
    }
    size_t want_dim = (size_t)cfg->embedding_dim;
    ds_vector_backend wanted = (ds_vector_backend)cfg->vector_backend;
    int ef_search = (int)cfg->hnsw_ef_search;
    int exact_max = (int)cfg->vector_exact_max_rows;
    int code_crossover = (int)cfg->memory_code_crossover;
    ds_config_free(defaults);

    ds_conn *c;
    ds_status st = ds_pool_acquire(pool, &c, err);
    if (st != DS_OK)
        return st;
    db_record rec;
    st = read_record(c, &rec, err);
    ds_pool_release(c);
    if (st != DS_OK)
        return st;

    if (rec.dim != want_dim)
        return ds__error_set(err, DS_ERR_SCHEMA,
                             "DS_EMBEDDING_DIM is %zu but the database stores "
                             "%zu-dimension embeddings (chosen when it was "
                             "migrated; set DS_EMBEDDING_DIM=%zu)",
                             want_dim, rec.dim, rec.dim);
    if (wanted == DS_VECTOR_BACKEND_PGVECTOR &&
        rec.state.backend == DS_VECTOR_BACKEND_FALLBACK) {
        if (!rec.available)
            return ds__error_set(err, DS_ERR_UNSUPPORTED,
                                 "DS_VECTOR_BACKEND is pgvector but this "
                                 "server has no pgvector extension");
        return ds__error_set(err, DS_ERR_SCHEMA,
                             "DS_VECTOR_BACKEND is pgvector but the database "
                             "uses the fallback: convert it with "
                             "ds_memory_upgrade_to_pgvector()");
    }
    if (wanted == DS_VECTOR_BACKEND_FALLBACK &&
        rec.state.backend == DS_VECTOR_BACKEND_PGVECTOR)
        return ds__error_set(err, DS_ERR_SCHEMA,
                             "DS_VECTOR_BACKEND is fallback but the database "
                             "was migrated with pgvector (set it to auto or "
                             "pgvector)");
    if (rec.state.backend == DS_VECTOR_BACKEND_FALLBACK && rec.available)
        ds__log(DS_LOG_INFO, MODULE,
                "pgvector is available on this server; "
                "ds_memory_upgrade_to_pgvector() converts the database");
    if (rec.state.backend == DS_VECTOR_BACKEND_PGVECTOR && rec.state.hnsw &&
        !rec.state.iterative)
        ds__log(DS_LOG_WARN, MODULE,
                "pgvector %s has no iterative index scans (0.8.0+): every "
                "search is an exact scan",
                rec.state.pgvector_version);

    ds_memory *mem = ds__calloc(1, sizeof *mem);
    if (!mem)
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    pthread_mutex_init(&mem->mu, NULL);
    mem->pool = pool;
    mem->dim = rec.dim;
    mem->ef_search = ef_search;
    mem->exact_max_rows = exact_max;
    mem->code_crossover = code_crossover;
    mem->state = rec.state;
    ds__log(DS_LOG_INFO, MODULE, "memory store open: %s backend%s%s, %zu "
            "dimensions",
            backend_name(rec.state.backend),
            rec.state.pgvector_version[0] ? " " : "",
            rec.state.pgvector_version, rec.dim);
    *out = mem;
    return DS_OK;
}

DS_EXPORT void ds_memory_close(ds_memory *mem) {
    if (!mem)
        return;
    pthread_mutex_destroy(&mem->mu);
    ds__free(mem);
}

DS_EXPORT ds_vector_backend ds_memory_backend(const ds_memory *mem) {
    if (!mem)
        return DS_VECTOR_BACKEND_AUTO;
    return ds__memory_state_get((ds_memory *)mem).backend;
}

DS_EXPORT size_t ds_memory_dim(const ds_memory *mem) {
    return mem ? mem->dim : 0;
}
