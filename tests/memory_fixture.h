/* Fixtures shared by the memory suites (check_memory.c,
 * check_memory_search.c, check_memory_upgrade.c). Loop tests run once per
 * backend: _i == 0 the fallback, _i == 1 pgvector. */
#ifndef DS_TEST_MEMORY_FIXTURE_H
#define DS_TEST_MEMORY_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>

#include "memory/memory_internal.h"
#include "test_util.h"

#define DIM 384

/* "fallback" for 0, "pgvector" for 1. */
const char *backend_of(int i);

typedef struct fx {
    char *url;
    ds_pool *pool;
    ds_memory *mem;
    int64_t alice, bob;
} fx;

/* A memory handle on `pool`; exact_max >= 0 sets vector_exact_max_rows. */
ds_memory *open_mem(ds_pool *pool, const char *url, int exact_max);
/* A migrated database of `backend` with users alice and bob. Returns false
 * (the test then returns) when the backend cannot run here. */
bool fx_open(fx *f, const char *test, int backend);
void fx_close(fx *f);

/* Seeded random numbers: a test sets rng_state before it draws. */
extern uint64_t rng_state;
uint64_t rng(void);
double uniform(void);
double gauss(void);
void normalize(float *v, size_t n);
/* A vector with the given leading components, zeros after. */
void vec3(float *v, float a, float b, float c);

/* Clustered unit vectors: `nc` centres, each point a centre plus noise
 * (cosine about 0.7 to its centre). */
typedef struct dataset {
    size_t n;
    float *v;       /* n x DIM, unit */
    int64_t *user;  /* owner of each */
    int64_t *id;    /* filled when added */
} dataset;

extern float centres[32][DIM];
void make_centres(int nc);
void clustered(float *out, int nc);
void dataset_make(dataset *d, size_t n, const int64_t *users, size_t nusers,
                  int nc);
void dataset_free(dataset *d);
void dataset_add(ds_memory *mem, dataset *d);
/* Exact top-k of `user` by brute force, as ids (best first). */
size_t brute_topk(const dataset *d, int64_t user, const float *q, size_t k,
                  int64_t *ids, double *scores);

/* ds_memory_search / ds_memory_add that fail the test on error. */
ds_memory_facts *search(ds_memory *mem, int64_t user, const float *q, int k,
                        const ds_memory_search_options *opts);
int64_t add(ds_memory *mem, int64_t user, const char *kind,
            const char *content, const float *v);
long long count_facts(const char *url);

#endif
