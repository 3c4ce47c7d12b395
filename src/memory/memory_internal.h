/* The memory store's private structures, its vector arithmetic and the
 * helpers its files share. Never installed. */
#ifndef DS_MEMORY_INTERNAL_H
#define DS_MEMORY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "datastore/memory.h"
#include "pool/stmt.h"

/* What the database uses; re-read when a statement shows that it changed
 * (ds_memory_upgrade_to_pgvector() in another process). */
typedef struct ds__memory_state {
    ds_vector_backend backend;  /* PGVECTOR or FALLBACK */
    bool hnsw;                  /* pgvector: the HNSW index exists          */
    bool iterative;             /* pgvector >= 0.8.0: hnsw.iterative_scan    */
    char pgvector_version[16];  /* "" when the extension is not installed   */
} ds__memory_state;

#define DS_SMALL_HINTS 256

struct ds_memory {
    ds_pool *pool;
    size_t dim;
    int ef_search;
    int exact_max_rows;
    int code_crossover;         /* memory_code_crossover (codes.c)   */
    pthread_mutex_t mu;         /* guards state */
    ds__memory_state state;
    /* Users last seen small (no lists, at most ds__code_exact_max_facts
     * facts whatever their kind), one slot per user_id % DS_SMALL_HINTS:
     * their hybrid searches run the text statement prepared, so that it
     * may settle on a generic plan (search.c). A hint only: a stale one
     * costs a plan, never an answer. */
    atomic_int_fast64_t small_hint[DS_SMALL_HINTS];
    /* ds_memory_stats (stats.c) */
    atomic_uint_fast64_t searches, hybrid_searches, pgvector_searches,
        fallback_searches, rows_scanned, rows_rescored, search_time_us,
        facts_added, errors;
};

static inline void ds__memory_count(atomic_uint_fast64_t *c, uint64_t n) {
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* ---- statements ---------------------------------------------------------- */


/* Indices into the statement tables below (statements.c). */
enum {
    M_SETTINGS, M_BEGIN, M_BEGIN_READ, M_COMMIT, M_ROWS, M_LIST, M_LIST_KIND,
    M_SET_IMPORTANCE, M_TOUCH, M_DELETE, M_TEXT_CANDIDATES, M_SKETCHES,
    M_SKETCHES_WIDE, M_CODES, M_SKETCHES_BY_ID, M_SET_CODES, M_SMALL_SKETCHES,
    M_COUNT_
};
enum { F_INSERT_MANY, F_GET, F_EMBEDDINGS, F_UNCODED, F_CANDIDATES,
       F_COUNT_ };
enum { P_INSERT_MANY, P_GET, P_EMBEDDINGS, P_UNSKETCHED, P_UNCODED,
       P_SET_SKETCHES, P_CANDIDATES, P_COUNT_ };
enum { U_TIMEOUT, U_EXTENSION, U_PREPARE, U_READ, U_WRITE, U_LOCK, U_SWAP,
       U_COUNT_ };

/* Sketches of up to this many dimensions are in the covering index
 * memory_facts_embedding_sketch_idx (sql/0005_memory_exact_search); wider
 * ones are read from the table. */
#define DS_SKETCH_INDEX_MAX_DIM 2000

extern const ds__stmt_def ds__memory_stmts[M_COUNT_];
extern const ds__stmt_def ds__memory_fallback_stmts[F_COUNT_];
extern const ds__stmt_def ds__memory_pgvector_stmts[P_COUNT_];
extern const ds__stmt_def ds__memory_upgrade_stmts[U_COUNT_];

/* Registered in src/schema/registry.c. "memory.pgvector" and
 * "memory.fallback" are the two backends' variants: only the one the
 * database uses can be prepared there (ds__memory_active_table() says
 * which). "memory.upgrade" runs inside ds_memory_upgrade_to_pgvector() only
 * (it uses a column that exists only there), so a schema check skips it. */
size_t ds__stmts_memory(const ds__stmt_def **defs);
size_t ds__stmts_memory_pgvector(const ds__stmt_def **defs);
size_t ds__stmts_memory_fallback(const ds__stmt_def **defs);
size_t ds__stmts_memory_upgrade(const ds__stmt_def **defs);

/* For a schema check: the backend statement table ("memory.pgvector" or
 * "memory.fallback") that applies to the database on `conn`. */
ds_status ds__memory_active_table(ds_conn *conn, const char **module,
                                  ds_error *err);

/* The custom settings sql/0003_memory_embeddings reads, from the
 * embedding_dim and vector_backend settings: the migration runner applies
 * them with set_config(name, value, local) before every migration. */
typedef struct ds__migration_setting {
    const char *name;
    char value[16];
} ds__migration_setting;
size_t ds__memory_migration_settings(int64_t embedding_dim,
                                     int64_t vector_backend,
                                     ds__migration_setting out[2]);

/* qsort comparator for int64_t. */
int ds__int64_cmp(const void *a, const void *b);

/* Copies a local error out and returns its code. */
ds_status ds__memory_fail(const ds_error *local, ds_error *err);

/* Runs def with the bound parameters (binary results). */
/* Keeps the `cap` largest values pushed in the min-heap h[0..*len), so
 * h[0] is the cap-th largest once *len == cap (topn.c). */
void ds__topn_push(float *h, size_t *len, size_t cap, float v);

PGresult *ds__memory_exec(ds_conn *c, const ds__stmt_def *def,
                          const ds__bind *p, ds_error *err);

/* ---- binary results --------------------------------------------------- */

int64_t ds__memory_int8(const PGresult *r, int row, int col);
double ds__memory_float(const PGresult *r, int row, int col); /* float4/8 */
/* 0 for NULL */
int64_t ds__memory_ts(const PGresult *r, int row, int col);

/* The fact columns every row statement returns first, in this order:
 * id, user_id, kind, content, metadata, importance, created_at,
 * updated_at, last_accessed_at. */
#define DS_MEMORY_ROW_COLS 9
ds_status ds__memory_decode_fact(const PGresult *r, int row,
                                 ds_memory_fact **out, ds_error *err);

/* ---- vectors (vec.c) ------------------------------------------------- */

/* Checks dimension and values and writes the unit vector to `unit`
 * (dim floats). DS_ERR_INVALID names `what` and the first bad index. */
ds_status ds__vec_normalize(const float *v, size_t dim, size_t want_dim,
                            const char *what, float *unit, ds_error *err);

/* Dot product with eight independent accumulators. */
float ds__vec_dot(const float *a, const float *b, size_t dim);
/* Dot product of a query with `dim` little-endian float32 values at an
 * unaligned address (a bytea). */
float ds__vec_dot_le(const float *q, const unsigned char *le, size_t dim);

/* Little-endian float32 bytes of `unit` (4*dim bytes). */
void ds__vec_to_le(const float *unit, size_t dim, unsigned char *out);
void ds__vec_from_le(const unsigned char *le, size_t dim, float *out);

/* The sketch: float32 step, float32 error bound, dim int8 values
 * (DS_SKETCH_BYTES(dim) bytes, little-endian). For a unit query q,
 * |dot(q, v) - approx| <= bound + ds__sketch_slack(dim). */
#define DS_SKETCH_BYTES(dim) ((dim) + 8)
void ds__sketch_build(const float *unit, size_t dim, unsigned char *out);
/* The approximate dot product and the sketch's error bound. */
float ds__sketch_dot(const float *q, const unsigned char *sketch, size_t dim,
                     float *bound);
/* Whether the sketch's step and bound are ones ds__sketch_build can write
 * for a unit vector (a sketch edited or damaged in the table is not). */
bool ds__sketch_plausible(const unsigned char *sketch, size_t dim);
/* Rounding of the float arithmetic on both sides, with a margin. */
float ds__sketch_slack(size_t dim);

/* The coarse code (codes.c): two float32 levels, then 2 bits a dimension
 * (DS_CODE_BYTES(dim) bytes). Written for up to DS_CODE_MAX_DIM dimensions,
 * which keeps it inside memory_facts_embedding_code_idx. */
#define DS_CODE_BYTES(dim) (8 + ((dim) + 3) / 4)
#define DS_CODE_MAX_DIM 8000
void ds__code_build(const float *unit, size_t dim, unsigned char *out);
/* Whether the levels are ones ds__code_build can write and the padding
 * bits are clear. */
bool ds__code_plausible(const unsigned char *code, size_t dim);
/* The per-query table ds__code_dot reads (ds__free it). */
ds_status ds__code_table_new(const float *q, size_t dim, float **out,
                             ds_error *err);
/* The approximate dot product of the query of `table` with a code. */
float ds__code_dot(const float *table, const unsigned char *code, size_t dim);

/* The most facts (that pass the kind filter) a user may have and still be
 * scanned exactly rather than through the codes, for `n` results: the
 * memory_code_crossover setting times the candidates the codes would keep. */
size_t ds__code_exact_max_facts(const ds_memory *mem, size_t n);

/* A large user's candidates, chosen by their codes in one index-only scan:
 * the facts whose approximate similarity to `q` ranks among the best
 * thousand or more (codes.c says how many), plus every fact without a
 * usable code, bound to `next` (initialised by the caller) as the
 * parameters of M_SKETCHES_BY_ID. *everyone is set instead, and nothing
 * bound, when the user has too few facts (that pass `kind`) for the codes
 * to pay: the caller then scans them exactly. */
ds_status ds__code_candidates(ds_memory *mem, ds_conn *c, int64_t user_id,
                              const float *q, const char *kind, size_t n,
                              ds__bind *next, bool *everyone, ds_error *err);

/* How many candidates the codes keep out of `rows` facts for `n`
 * results (codes.c has the measurements); users with at most
 * mem->code_crossover times that many facts are scanned exactly. */
size_t ds__code_keep(size_t rows, size_t n);
/* The value that `k` (0-based) of the n values would hold sorted in
 * descending order (Wirth's selection); reorders v. */
float ds__select_desc(float *v, size_t n, size_t k);

/* ---- packed codes (blocks.c) ------------------------------------------ */

size_t ds__stmts_memory_blocks(const ds__stmt_def **defs);

/* A large user's code stage: the candidates' (id, sketch) rows as
 * M_SKETCHES_BY_ID returns them, chosen from the user's packed codes
 * (sql/0009) when it has them, else by ds__code_candidates. *everyone set,
 * and *out NULL, when the exact scan should decide instead. */
ds_status ds__code_stage(ds_memory *mem, ds_conn *c, int64_t user_id,
                         const float *q, const char *kind, size_t n,
                         PGresult **out, bool *everyone, ds_error *err);

/* ds_memory_maintain's packing: packs the codes of users (user_id, or 0:
 * every user) that the code stage serves (memory_code_crossover times
 * 1,000 facts, 4,000 by default) whose blocks are missing or stale, drops
 * those of users below half of it; *packed_users counts the users
 * packed. */
ds_status ds__blocks_maintain(ds_memory *mem, ds_conn *c, int64_t user_id,
                              size_t *packed_users, ds_error *err);

/* ---- sketch bounds (bounds.c) and hybrid fusion (fusion.c) ------------- */

/* Each fact's bounds on its cosine to the query, from its sketch: lo[i] <=
 * the exact score of ids[i] <= hi[i]; -INFINITY and INFINITY for a fact
 * without a usable sketch. */
typedef struct ds__fact_bounds {
    int64_t *ids;
    float *lo, *hi;
    size_t n;
} ds__fact_bounds;

/* The bounds of the (id, sketch) rows of `r` (memory.*sketches*); counts
 * them in rows_scanned and clears `r`. DS_ERR_SCHEMA for a sketch of the
 * wrong length. */
ds_status ds__sketch_bounds(ds_memory *mem, PGresult *r, const float *q,
                            ds__fact_bounds *out, ds_error *err);
void ds__fact_bounds_free(ds__fact_bounds *b);

/* One row of such a result (fact `id`, its sketch in column 1): *lo and
 * *hi as above. DS_ERR_SCHEMA for a sketch of the wrong length. */
ds_status ds__sketch_row_bounds(ds_memory *mem, const PGresult *r, int row,
                                int64_t id, const float *q, float *lo,
                                float *hi, ds_error *err);

/* A fused hit: its reciprocal-rank-fusion score and its ranks in the
 * vector list and the text list (0: not in it). */
typedef struct ds__ranked {
    int64_t id;
    double score;
    int vector_rank;
    int text_rank;
} ds__ranked;

#define DS_RRF_K 60.0 /* the constant of reciprocal rank fusion */

/* The fused score of a fact at these ranks (0: not in that list), added up
 * in one order everywhere, so that equal ranks give equal scores. */
double ds__rrf_fused(int vector_rank, int text_rank);

/* qsort order of ds__ranked: best fused score first, then by id. */
int ds__ranked_by_score(const void *a, const void *b);

/* A small user's hybrid search, planned from its sketch bounds and its
 * text list before any exact vector is read. Fusion depends only on ranks,
 * so a fact needs its exact vector only when the fused top k could
 * contain it (then its vector rank must be exact) or when its score could
 * fall on either side of such a fact's. The answer is the one the exact
 * vector list of the n best would give. */
typedef struct ds__fusion {
    const ds__fact_bounds *b; /* borrowed: lives as long as the plan */
    size_t n;                 /* vector list length */
    int k;
    int *text_rank;           /* per fact of b, 0 when not a text match */
    bool *vec_chance;         /* per fact of b: may be in the vector list */
    bool *exact;              /* per fact of b: its exact vector is read */
    size_t *maybe;            /* facts of b the fused top k may hold */
    size_t nmaybe;
    ds__ranked *extra;        /* text matches without bounds: text only */
    size_t nextra;
    bool by_slots;            /* the k-th fused score is surely rrf(k)+ */
    double vec_floor;         /* k-th best lower bound in the vector list */
} ds__fusion;

/* Plans the search: text_ids are the text list, best first. */
ds_status ds__fusion_plan(ds__fusion *f, const ds__fact_bounds *b,
                          const int64_t *text_ids, size_t ntext, size_t n,
                          int k, bool use_min, double min_sim, ds_error *err);
/* The ids whose exact vectors (and rows) to read, and those whose rows
 * only; both sorted, NULL when empty (ds__free them). */
ds_status ds__fusion_ids(const ds__fusion *f, int64_t **exact,
                         size_t *nexact, int64_t **rows, size_t *nrows,
                         ds_error *err);
/* The fused top k, best first, from the exact scores of the facts read
 * (ids[i] scored scores[i]; those below min_similarity or without a
 * vector left out). *hits holds *count entries (ds__free it). */
ds_status ds__fusion_rank(const ds__fusion *f, const int64_t *ids,
                          const double *scores, size_t nscored,
                          ds__ranked **hits, size_t *count, ds_error *err);
void ds__fusion_free(ds__fusion *f);

/* ---- large users' lists (ivf.c) ------------------------------------ */

size_t ds__stmts_memory_ivf(const ds__stmt_def **defs);

/* A clustered user's first stage: the sketches of the lists nearest `q`
 * (ivf.c has the rule) bound each fact, and the ids of those that may be
 * among the `n` best (and reach min_sim) go to *ids (ds__free; NULL when
 * none). *used is false, and nothing else set, when the user has no lists
 * or the query lies outside them (the caller then runs the full search);
 * *best_centroid is the similarity of the nearest centroid: the caller
 * trusts the answer only when it is at least the n-th exact score. */
ds_status ds__ivf_candidates(ds_memory *mem, ds_conn *c, int64_t user_id,
                             const float *q, const char *kind, bool use_min,
                             double min_sim, size_t n, int64_t **ids,
                             size_t *ncand, float *best_centroid, bool *used,
                             ds_error *err);

/* After an insert: each new fact of a clustered user (ids[i] of facts[i])
 * to its nearest list, in one statement on `c`. */
ds_status ds__ivf_assign_new(ds_memory *mem, ds_conn *c,
                             const ds_memory_new_fact *facts, size_t count,
                             const int64_t *ids, ds_error *err);

/* Decodes a binary one-dimensional float4[] of exactly `dim` values. */
bool ds__vec_from_array(const char *data, int len, size_t dim, float *out);

/* Decodes pgvector's binary form of a `dim`-dimension vector, as
 * vector_send() returns it in a bytea. */
bool ds__vec_from_pgvector(const char *data, int len, size_t dim,
                           float *out);

/* ---- shared by the memory files ------------------------------------ */

/* The one row of memory_vector_settings and the catalog facts beside it
 * (statement M_SETTINGS); DS_ERR_SCHEMA when the table holds no row or
 * several. `err` must not be NULL. */
ds_status ds__memory_settings(ds_conn *c, PGresult **out, ds_error *err);

/* A consistent copy of the state. */
ds__memory_state ds__memory_state_get(ds_memory *mem);
/* Re-reads the database's backend after a statement failed in a way that
 * a conversion by another process explains; true when it changed (the
 * caller then retries once). */
bool ds__memory_state_changed(ds_memory *mem, const ds_error *failure);

/* DS_ERR_INVALID unless `kind` is NULL or [a-z0-9_]{1,64}. */
ds_status ds__memory_check_kind(const char *kind, ds_error *err);

/* Validates a fact for insertion; `unit` receives the normalised vector. */
ds_status ds__memory_check_fact(const ds_memory *mem,
                                const ds_memory_new_fact *f, float *unit,
                                ds_error *err);

/* Whether the working buffers of a batch of `n` facts of `dim` dimensions
 * (n * dim floats, n times a few bytes per dimension) have sizes a size_t
 * holds: a batch that does not is DS_ERR_INVALID, never a wrapped size. */
bool ds__memory_batch_fits(size_t n, size_t dim);

ds_status ds__memory_list_new(size_t cap, ds_memory_facts **out,
                              ds_error *err);

#endif
