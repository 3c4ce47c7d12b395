/* The memory suites' shared fixtures: a migrated database per backend
 * with two users, seeded random and clustered vectors, and exact top-k by
 * brute force. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "memory_fixture.h"

/* ---- fixtures ------------------------------------------------------------ */

const char *backend_of(int i) { return i ? "pgvector" : "fallback"; }

ds_memory *open_mem(ds_pool *pool, const char *url, int exact_max) {
    ds_config *cfg = dt_config(url, 1, 4);
    ds_error err = {0};
    ds_status st = DS_OK;
    if (exact_max >= 0)
        st = ds_config_set_int(cfg, "vector_exact_max_rows", exact_max, &err);
    ck_assert_ds_ok(st, err);
    ds_memory *mem = NULL;
    st = ds_memory_open(pool, cfg, &mem, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    return mem;
}

/* A migrated database of `backend` with users alice and bob. Returns false
 * (the test then returns) when the backend cannot run here. */
bool fx_open(fx *f, const char *test, int backend) {
    memset(f, 0, sizeof *f);
    if (backend == 1 && dt_skip_without_pgvector(test))
        return false;
    f->url = dt_migrated_db_backend("mem", backend_of(backend));
    dt_sql(f->url, "INSERT INTO users (email) VALUES ('alice@example.org'), "
                   "('bob@example.org')");
    f->alice = dt_sql_int(f->url, "SELECT id FROM users WHERE email LIKE 'alice%'");
    f->bob = dt_sql_int(f->url, "SELECT id FROM users WHERE email LIKE 'bob%'");
    f->pool = dt_pool(f->url, 1, 4);
    f->mem = open_mem(f->pool, f->url, -1);
    ck_assert_int_eq(ds_memory_backend(f->mem),
                     backend ? DS_VECTOR_BACKEND_PGVECTOR
                             : DS_VECTOR_BACKEND_FALLBACK);
    return true;
}

void fx_close(fx *f) {
    ds_memory_close(f->mem);
    ds_pool_close(f->pool);
    if (f->url) {
        dt_drop_db(f->url);
        free(f->url);
    }
}

/* ---- vectors ------------------------------------------------------------- */

uint64_t rng_state;
uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
double uniform(void) { return (double)(rng() >> 11) / 9007199254740992.0; }
double gauss(void) {
    double u = uniform(), v = uniform();
    if (u < 1e-300)
        u = 1e-300;
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}
void normalize(float *v, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)v[i] * v[i];
    s = sqrt(s);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(v[i] / s);
}

/* A vector with the given leading components, zeros after. */
void vec3(float *v, float a, float b, float c) {
    memset(v, 0, DIM * sizeof *v);
    v[0] = a;
    v[1] = b;
    v[2] = c;
}

float centres[32][DIM];

void make_centres(int nc) {
    for (int c = 0; c < nc; c++) {
        for (int i = 0; i < DIM; i++)
            centres[c][i] = (float)gauss();
        normalize(centres[c], DIM);
    }
}

void clustered(float *out, int nc) {
    int c = (int)(rng() % (uint64_t)nc);
    for (int i = 0; i < DIM; i++)
        out[i] = centres[c][i] + (float)(gauss() * 0.051);
    normalize(out, DIM);
}

void dataset_make(dataset *d, size_t n, const int64_t *users,
                  size_t nusers, int nc) {
    d->n = n;
    d->v = malloc(n * DIM * sizeof *d->v);
    d->user = malloc(n * sizeof *d->user);
    d->id = calloc(n, sizeof *d->id);
    for (size_t i = 0; i < n; i++) {
        clustered(d->v + i * DIM, nc);
        d->user[i] = users[i % nusers];
    }
}

void dataset_free(dataset *d) {
    free(d->v);
    free(d->user);
    free(d->id);
}

void dataset_add(ds_memory *mem, dataset *d) {
    ds_memory_new_fact *batch = calloc(1000, sizeof *batch);
    char (*text)[48] = calloc(1000, sizeof *text);
    for (size_t start = 0; start < d->n; start += 1000) {
        size_t n = d->n - start < 1000 ? d->n - start : 1000;
        for (size_t i = 0; i < n; i++) {
            snprintf(text[i], sizeof text[i], "generated fact %zu", start + i);
            batch[i] = (ds_memory_new_fact){.size = sizeof(ds_memory_new_fact), .user_id = d->user[start + i],
                                            .content = text[i],
                                            .importance = 0.5,
                                            .embedding = d->v + (start + i) * DIM,
                                            .dim = DIM};
        }
        ds_error err = {0};
        ds_status st = ds_memory_add_batch(mem, batch, n, d->id + start, &err);
        ck_assert_ds_ok(st, err);
    }
    free(batch);
    free(text);
}

/* Exact top-k of `user` by brute force, as ids (best first). */
size_t brute_topk(const dataset *d, int64_t user, const float *q,
                  size_t k, int64_t *ids, double *scores) {
    size_t got = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (d->user[i] != user)
            continue;
        double s = 0;
        for (int j = 0; j < DIM; j++)
            s += (double)q[j] * d->v[i * DIM + j];
        size_t pos = got < k ? got++ : k;
        if (pos == k && s <= scores[k - 1])
            continue;
        if (pos == k)
            pos = k - 1;
        while (pos > 0 && scores[pos - 1] < s) {
            scores[pos] = scores[pos - 1];
            ids[pos] = ids[pos - 1];
            pos--;
        }
        scores[pos] = s;
        ids[pos] = d->id[i];
    }
    return got;
}

ds_memory_facts *search(ds_memory *mem, int64_t user, const float *q,
                        int k, const ds_memory_search_options *opts) {
    ds_memory_facts *out = NULL;
    ds_error err = {0};
    ds_status st = ds_memory_search(mem, user, q, DIM, k, opts, &out, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_ptr_nonnull(out);
    return out;
}

int64_t add(ds_memory *mem, int64_t user, const char *kind,
            const char *content, const float *v) {
    ds_memory_new_fact f = {.size = sizeof(ds_memory_new_fact), .user_id = user,
                            .kind = kind,
                            .content = content,
                            .importance = 0.5,
                            .embedding = v,
                            .dim = DIM};
    int64_t id = 0;
    ds_error err = {0};
    ds_status st = ds_memory_add(mem, &f, &id, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_gt(id, 0);
    return id;
}

long long count_facts(const char *url) {
    return dt_sql_int(url, "SELECT count(*) FROM memory_facts");
}
