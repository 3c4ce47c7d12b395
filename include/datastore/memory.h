/*
 * datastore/memory.h — a user's memory facts, with semantic search over
 * their embeddings, full-text search, and hybrid search fusing both.
 *
 * The caller computes embeddings (the library never calls a model). Every
 * fact belongs to one user, and every call takes that user's id: a fact of
 * another user is never read, returned, changed or deleted ("not found").
 *
 * Two backends, one API, the same answers. The database records which one
 * it uses (chosen by the migration sql/0003_memory_embeddings, see below):
 *
 *   pgvector  the server has the pgvector extension: embeddings are
 *             vector(D).
 *   fallback  any PostgreSQL: embeddings are bytea (little-endian float32).
 *
 * Searches are the same on both backends: memory never searches across
 * users, so a search scans one user's facts. Each fact also stores an 8-bit
 * sketch of its embedding with an error bound; a search reads the user's
 * sketches through an index-only scan, keeps the facts whose upper bound
 * can still reach the top k, and rescores those with the exact vectors (a
 * quarter of the bytes of a brute-force scan, the same result). Users with
 * many facts are first narrowed, by coarse codes and, once
 * ds_memory_maintain() has clustered them, by per-user lists: their recall
 * is measured (1.0 on clustered data), not proven. There is no global
 * approximate index: filtered by user, an HNSW index lost recall where
 * memories grow and slowed inserts tenfold (docs/memory.md has the
 * measurements and the latency at each user size).
 *
 * Embeddings are stored unit-length (cosine similarity is scale-invariant),
 * so ds_memory_get() returns the normalised vector. An embedding of the
 * wrong dimension, with NaN or infinity, or of length zero is refused with
 * DS_ERR_INVALID and nothing is written.
 *
 * Dimension and backend: the migration reads the custom settings
 * ds.embedding_dim (DS_EMBEDDING_DIM, default 384) and ds.vector_backend
 * (DS_VECTOR_BACKEND: auto, pgvector, fallback) when it runs, and records
 * them in memory_vector_settings. ds_memory_open() checks the configuration
 * against that record. A fallback database moves to pgvector, keeping every
 * row, with ds_memory_upgrade_to_pgvector().
 *
 * Thread-safety: a ds_memory is safe to share between threads. Facts and
 * lists returned to the caller are owned by the caller and immutable.
 */
#ifndef DATASTORE_MEMORY_H
#define DATASTORE_MEMORY_H

#include <jansson.h>

#include "config.h"
#include "core.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_memory ds_memory;

/* The setting vector_backend; a database uses PGVECTOR or FALLBACK. */
typedef enum ds_vector_backend {
    DS_VECTOR_BACKEND_AUTO = 0,     /* whatever the database was migrated to */
    DS_VECTOR_BACKEND_PGVECTOR = 1,
    DS_VECTOR_BACKEND_FALLBACK = 2
} ds_vector_backend;

#define DS_MEMORY_KIND_MAX 64
#define DS_MEMORY_CONTENT_MAX 100000 /* characters */
#define DS_MEMORY_K_MAX 1000

/*
 * A fact as the library returns it. Allocated by the library (fields may be
 * appended in later versions); free with ds_memory_fact_free() or with its
 * list.
 */
typedef struct ds_memory_fact {
    int64_t id;
    int64_t user_id;
    char *kind;                   /* [a-z0-9_]{1,64}, e.g. "fact"          */
    char *content;
    json_t *metadata;             /* a JSON object, owned by the fact       */
    double importance;            /* 0 to 1                                 */
    int64_t created_at_us;        /* microseconds since 1970-01-01 UTC      */
    int64_t updated_at_us;
    int64_t last_accessed_at_us;  /* 0: never                               */
    /* search: cosine similarity to the query (-1 to 1);
     * hybrid: the fused reciprocal-rank score; get/list: 0. */
    double score;
    int vector_rank;              /* 1-based rank by similarity; 0: not ranked */
    int text_rank;                /* hybrid: 1-based full-text rank; 0: none  */
    float *embedding;             /* ds_memory_get only: `dim` floats, unit length */
    size_t dim;
} ds_memory_fact;

/* A list of facts, best first for searches, by id for ds_memory_list(). */
typedef struct ds_memory_facts {
    size_t count;
    ds_memory_fact **items;
} ds_memory_facts;

/* A new fact for ds_memory_add(). Zero-initialise, then fill. */
typedef struct ds_memory_new_fact {
    size_t size; /* growable, caller-allocated: set by DS_MEMORY_NEW_FACT_INIT */
    int64_t user_id;              /* an existing user (DS_ERR_NOT_FOUND else) */
    const char *kind;             /* NULL: "fact"                           */
    const char *content;          /* UTF-8, 1 to 100000 characters          */
    const json_t *metadata;       /* a JSON object; NULL: {}                */
    double importance;            /* 0 to 1 (0.5 is neutral)                */
    const float *embedding;       /* `dim` finite floats, not all zero      */
    size_t dim;                   /* must equal the database's dimension    */
} ds_memory_new_fact;
#define DS_MEMORY_NEW_FACT_INIT DS_SIZED_INIT(ds_memory_new_fact)

/* Options of a search; NULL means all defaults. Zero-initialise. */
typedef struct ds_memory_search_options {
    size_t size; /* growable, caller-allocated: set by DS_MEMORY_SEARCH_OPTIONS_INIT */
    const char *kind;             /* only facts of this kind; NULL: all     */
    bool use_min_similarity;      /* apply min_similarity                   */
    double min_similarity;        /* drop facts less similar (-1 to 1)      */
    int ef_search;                /* 0 to 1000, checked but without effect
                                   * since searches are exact (kept for
                                   * source compatibility)                  */
    bool touch;                   /* set last_accessed_at of the results    */
    bool read_primary;            /* read from the primary, not a replica:
                                   * sees facts added a moment ago          */
} ds_memory_search_options;
#define DS_MEMORY_SEARCH_OPTIONS_INIT DS_SIZED_INIT(ds_memory_search_options)

/*
 * Opens the memory store on `pool` (borrowed: it must outlive the handle).
 * Reads the database's record of dimension and backend and checks it against
 * `cfg` (embedding_dim, vector_backend; NULL: the defaults). Detects pgvector
 * and its version. hnsw_ef_search and vector_exact_max_rows are still
 * accepted and checked, and have no effect: every search is exact.
 * Errors: DS_ERR_SCHEMA (not migrated, or the configuration disagrees with
 * the database: the message says which way and what to do),
 * DS_ERR_UNSUPPORTED (vector_backend is pgvector and the server has none),
 * DS_ERR_INVALID, DS_ERR_NOMEM, connection errors.
 */
DS_EXPORT DS_NODISCARD ds_status ds_memory_open(ds_pool *pool,
                                                const ds_config *cfg,
                                                ds_memory **out,
                                                ds_error *err);

/* Frees the handle (not the pool). NULL is a no-op. */
DS_EXPORT void ds_memory_close(ds_memory *mem);

/* The backend in use: DS_VECTOR_BACKEND_PGVECTOR or _FALLBACK (AUTO for a
 * NULL handle). It changes after ds_memory_upgrade_to_pgvector(). */
DS_EXPORT ds_vector_backend ds_memory_backend(const ds_memory *mem);

/* The embedding dimension the database stores (0 for NULL). */
DS_EXPORT size_t ds_memory_dim(const ds_memory *mem);

/*
 * Adds a fact and writes its id to *id (may be NULL). The embedding is
 * normalised before it is stored.
 * Errors: DS_ERR_INVALID (dimension, NaN/infinity, zero vector, kind,
 * content, metadata or importance out of range: nothing is written),
 * DS_ERR_NOT_FOUND (no such user), DS_ERR_NOMEM, connection/database errors.
 */
DS_EXPORT DS_NODISCARD ds_status ds_memory_add(ds_memory *mem,
                                               const ds_memory_new_fact *fact,
                                               int64_t *id, ds_error *err);

/*
 * Adds `count` facts (1 to 10000) in one transaction: all or none. `ids`
 * may be NULL, else receives `count` ids in order (all 0 on failure).
 * Errors as ds_memory_add; the message names the index of the first bad
 * fact.
 */
DS_EXPORT DS_NODISCARD ds_status ds_memory_add_batch(
    ds_memory *mem, const ds_memory_new_fact *facts, size_t count,
    int64_t *ids, ds_error *err);

/*
 * One fact of `user_id`, with its (unit-length) embedding.
 * *out is freed with ds_memory_fact_free().
 * Errors: DS_ERR_NOT_FOUND (no such fact for this user), DS_ERR_INVALID.
 */
DS_EXPORT DS_NODISCARD ds_status ds_memory_get(ds_memory *mem,
                                               int64_t user_id, int64_t id,
                                               ds_memory_fact **out,
                                               ds_error *err);

/*
 * Up to `limit` (1 to 1000) facts of `user_id` with id > after_id, by id;
 * pass the last id of a page as after_id for the next one (0 to start).
 * `kind` NULL: every kind. Embeddings are not included.
 */
DS_EXPORT DS_NODISCARD ds_status ds_memory_list(ds_memory *mem,
                                                int64_t user_id,
                                                const char *kind,
                                                int64_t after_id, int limit,
                                                ds_memory_facts **out,
                                                ds_error *err);

/* Sets a fact's importance (0 to 1) and updated_at.
 * Errors: DS_ERR_NOT_FOUND, DS_ERR_INVALID. */
DS_EXPORT DS_NODISCARD ds_status ds_memory_set_importance(ds_memory *mem,
                                                          int64_t user_id,
                                                          int64_t id,
                                                          double importance,
                                                          ds_error *err);

/*
 * Sets last_accessed_at = now() on those of `ids` (count 1 to 10000) that
 * belong to `user_id`; *touched (may be NULL) says how many did.
 */
DS_EXPORT DS_NODISCARD ds_status ds_memory_touch(ds_memory *mem,
                                                 int64_t user_id,
                                                 const int64_t *ids,
                                                 size_t count, size_t *touched,
                                                 ds_error *err);

/* Deletes a fact. Errors: DS_ERR_NOT_FOUND, DS_ERR_INVALID. */
DS_EXPORT DS_NODISCARD ds_status ds_memory_delete(ds_memory *mem,
                                                  int64_t user_id, int64_t id,
                                                  ds_error *err);

/*
 * The `k` (1 to 1000) facts of `user_id` most similar to `query` (`dim`
 * floats, normalised here), best first, each with its cosine similarity in
 * `score`. The same on both backends (see the top of this header): exact
 * for small users, measured recall for large ones; the list always holds
 * min(k, the user's facts that pass the filters). Reads go to a
 * replica when
 * the pool has one (ds_pool_acquire_read), where a fact added a moment ago
 * may not be yet; opts->read_primary reads from the primary, and
 * ds_memory_search_read_token() from a replica that has the caller's
 * writes.
 * *out is freed with ds_memory_facts_free(); it may hold fewer than k facts.
 * The search prunes with a per-fact sketch written with the embedding; a
 * sketch no unit vector could have (edited or damaged in the table), or a
 * missing one (rows a pgvector database held before sketches were kept
 * there), is ignored and the fact scored exactly.
 * Errors: DS_ERR_INVALID (as for ds_memory_add, or k/opts out of range),
 * DS_ERR_SCHEMA (a stored embedding or sketch of the wrong length, or an
 * embedding holding NaN or infinity, among the facts scored; the message
 * names the fact).
 */
DS_EXPORT DS_NODISCARD ds_status ds_memory_search(
    ds_memory *mem, int64_t user_id, const float *query, size_t dim, int k,
    const ds_memory_search_options *opts, ds_memory_facts **out, ds_error *err);

/*
 * ds_memory_search() that reads its own writes: `token` is taken with
 * ds_pool_read_token() after the facts were added, and the search runs on
 * a replica that has replayed it, else (after waiting up to max_wait_ms,
 * 0 to 60000) on the primary (see ds_pool_acquire_read_token). A NULL
 * token is ds_memory_search(). Errors as ds_memory_search().
 */
DS_EXPORT DS_NODISCARD ds_status ds_memory_search_read_token(
    ds_memory *mem, int64_t user_id, const float *query, size_t dim, int k,
    const ds_memory_search_options *opts, const ds_read_token *token,
    int max_wait_ms, ds_memory_facts **out, ds_error *err);

/*
 * Hybrid search: the top facts by similarity to `query` and by PostgreSQL
 * full-text rank of `text` (websearch syntax, English stemming), fused by
 * reciprocal rank fusion, score = sum over both lists of 1 / (60 + rank).
 * Each list contributes up to max(4k, 40) candidates; min_similarity and
 * kind filter the vector list and kind the text list. `score` holds the
 * fused score, `vector_rank` and `text_rank` the ranks in each list.
 * Errors: as ds_memory_search, and DS_ERR_INVALID for text that is NULL,
 * empty or not UTF-8.
 */
DS_EXPORT DS_NODISCARD ds_status ds_memory_search_hybrid(
    ds_memory *mem, int64_t user_id, const char *text, const float *query,
    size_t dim, int k, const ds_memory_search_options *opts,
    ds_memory_facts **out, ds_error *err);

/*
 * ds_memory_search_hybrid() that reads its own writes, as
 * ds_memory_search_read_token() does for the vector search: the search
 * runs on a replica that has replayed `token` (from ds_pool_read_token()
 * after the writes), else, after waiting up to max_wait_ms (0 to 60000),
 * on the primary. A NULL token is ds_memory_search_hybrid(). Errors as
 * ds_memory_search_hybrid().
 */
DS_EXPORT DS_NODISCARD ds_status ds_memory_search_hybrid_read_token(
    ds_memory *mem, int64_t user_id, const char *text, const float *query,
    size_t dim, int k, const ds_memory_search_options *opts,
    const ds_read_token *token, int max_wait_ms, ds_memory_facts **out,
    ds_error *err);

/* Frees a fact. NULL is a no-op. */
DS_EXPORT void ds_memory_fact_free(ds_memory_fact *fact);

/* Frees a list and its facts. NULL is a no-op. */
DS_EXPORT void ds_memory_facts_free(ds_memory_facts *list);

/*
 * Gives every fact that has an embedding but no sketch its sketch, and
 * writes to *filled (may be NULL) how many it did. Such facts are always
 * rescored by a search, so they are exact but slow: on a pgvector database
 * they are the rows written before sql/0005_memory_exact_search. Run it once
 * after that migration, against the primary; it works in batches of 1000
 * facts, each its own short statement (reads and writes go on; stopping it
 * loses no work). DS_OK at once on the fallback, which always has them.
 * Errors: DS_ERR_INVALID, DS_ERR_SCHEMA (a stored embedding of the wrong
 * dimension), connection/database errors.
 */
DS_EXPORT DS_NODISCARD ds_status ds_memory_fill_sketches(ds_memory *mem,
                                                         size_t *filled,
                                                         ds_error *err);

/* Options of the upgrade. A growable struct (docs/abi.md): start from
 * DS_MEMORY_UPGRADE_OPTIONS_INIT or ds_memory_upgrade_options_init(). */
typedef struct ds_memory_upgrade_options {
    size_t size;             /* sizeof (ds_memory_upgrade_options), set by
                                the initialiser                          */
    ds_progress_fn progress; /* may be NULL: operation "memory_upgrade",
                                item "memory_facts", phase "convert", unit
                                "rows", after each batch converted       */
    void *progress_ud;
} ds_memory_upgrade_options;
#define DS_MEMORY_UPGRADE_OPTIONS_INIT DS_SIZED_INIT(ds_memory_upgrade_options)

/* Sets every member to its default (zero) and `size`. */
DS_EXPORT void ds_memory_upgrade_options_init(ds_memory_upgrade_options *opts);

/*
 * Converts a fallback database to pgvector once the server has the
 * extension: creates the extension and converts every embedding to
 * vector(D) while readers and writers go on: batches of short
 * transactions, then one short swap under ACCESS EXCLUSIVE (waiting at most
 * lock_timeout, retried after a jittered pause). The sketches searches read
 * first stay. Nothing is lost; a run that failed or stopped half-way
 * continues on the next call.
 * Idempotent: DS_OK at once when the database already uses pgvector.
 * Handles opened before switch to pgvector on their next call. Run it like
 * a migration, against the primary's direct URL (not through a transaction
 * pooler).
 * `opts` may be NULL (defaults). A progress callback runs after each batch;
 * a non-zero return stops with DS_ERR_CANCELLED, and the database then
 * stays on the fallback with the batches converted so far kept: running
 * the upgrade again continues.
 * Errors: DS_ERR_UNSUPPORTED (the server has no pgvector), DS_ERR_SCHEMA
 * (not migrated), DS_ERR_DB (e.g. 42501: this role may not create the
 * extension), DS_ERR_CANCELLED, DS_ERR_INVALID (NULL pool, a bad
 * opts->size), connection errors.
 */
DS_EXPORT DS_NODISCARD ds_status ds_memory_upgrade_to_pgvector(
    ds_pool *pool, const ds_memory_upgrade_options *opts, ds_error *err);

/*
 * Large users' lists (sql/0008_memory_ivf_lists). A user with at least
 * min_facts facts (DS_MEMORY_IVF_MIN_FACTS by default) is clustered into
 * about sqrt(facts) lists around centroids; a search of that user then
 * reads the facts of the lists nearest the query (plus every fact not in a
 * list yet, so new facts are found at once) instead of all of them, and
 * falls back to the full search when the query lies outside every list.
 * Its recall is measured, not proven (docs/memory.md). New facts of a
 * clustered user join their nearest list as they are added. The default
 * threshold is where the lists were measured to beat the exact scan
 * (docs/memory.md "Where each stage starts").
 */
#define DS_MEMORY_IVF_MIN_FACTS 2000

/* Options of ds_memory_maintain(). A growable struct (docs/abi.md): start
 * from DS_MEMORY_MAINTAIN_OPTIONS_INIT. */
typedef struct ds_memory_maintain_options {
    size_t size;             /* set by the initialiser                    */
    int64_t user_id;         /* 0: every user; else only this one         */
    int64_t min_facts;       /* users with at least this many facts are
                                clustered; 0: DS_MEMORY_IVF_MIN_FACTS      */
    bool rebuild;            /* re-cluster even users whose lists are fine */
    bool reindex;            /* after moving facts, rebuild the list index
                                (REINDEX CONCURRENTLY): moves leave its
                                entries scattered over half-empty pages,
                                which a search of a large user then reads;
                                worth it after clustering a loaded table  */
    ds_progress_fn progress; /* may be NULL: operation "memory_maintain",
                                item "user <id>", phase "assign", unit
                                "facts", after each batch of 1000 facts    */
    void *progress_ud;
} ds_memory_maintain_options;
#define DS_MEMORY_MAINTAIN_OPTIONS_INIT DS_SIZED_INIT(ds_memory_maintain_options)

/* Sets every member to its default (zero) and `size`. NULL is a no-op. */
DS_EXPORT void ds_memory_maintain_options_init(ds_memory_maintain_options *opts);

/*
 * Keeps the lists of large users right: clusters a user that reached
 * min_facts, re-clusters one that doubled or halved since, or whose
 * largest list outgrew ten times the mean, drops the lists of a user that
 * fell below half of min_facts, and gives facts without a list their
 * nearest. Also packs the coarse codes of the users the code stage
 * serves (more than memory_code_crossover x 1,000 facts: 4,000 by
 * default) into a few wide rows (sql/0009), which the
 * full search reads instead of one index entry a fact; a user is packed
 * again once the facts added since reach a tenth of the packed ones, or
 * after a packed fact was deleted (searches stay exact meanwhile, at the
 * unpacked cost). Packing waits until the write transactions open when it
 * started have ended (at most 30 s, then it skips the user with a
 * warning). Online: the new lists are written beside the old and the facts
 * move in batches of 1000, each one short statement, so searches and adds
 * go on (and stay correct) meanwhile; stopping it loses no work. Run it
 * against the primary, now and then (after bulk loads, or daily).
 * *clustered (may be NULL): users clustered or re-clustered.
 * Errors: DS_ERR_INVALID, DS_ERR_CANCELLED (the progress callback asked),
 * DS_ERR_SCHEMA (a stored embedding of the wrong dimension), DS_ERR_NOMEM,
 * connection/database errors.
 */
DS_EXPORT DS_NODISCARD ds_status ds_memory_maintain(
    ds_memory *mem, const ds_memory_maintain_options *opts, size_t *clustered,
    ds_error *err);

/*
 * What a memory handle did since it opened: counters kept in memory, read
 * without a query. A caller-allocated, growable struct (docs/abi.md): set
 * `size` with ds_memory_stats_init() or DS_MEMORY_STATS_INIT first.
 */
typedef struct ds_memory_stats {
    size_t size;                /* sizeof (ds_memory_stats) as compiled     */
    uint64_t searches;          /* vector searches answered (with or
                                 * without a read token)                    */
    uint64_t hybrid_searches;   /* hybrid searches answered                 */
    uint64_t pgvector_searches; /* answered searches of either kind that
                                 * ran on the pgvector backend ...          */
    uint64_t fallback_searches; /* ... and on the fallback                  */
    uint64_t rows_scanned;      /* sketches searches read (one per fact of
                                 * the user that passes the kind filter)    */
    uint64_t rows_rescored;     /* exact embeddings searches read to rescore
                                 * the facts the sketches could not rule out */
    uint64_t search_time_us;    /* wall time of the answered searches, sum  */
    uint64_t facts_added;       /* facts written by add and add_batch        */
    uint64_t errors;            /* searches and adds that failed for another
                                 * reason than a bad argument or an unknown
                                 * user (database, connection, schema,
                                 * memory)                                  */
} ds_memory_stats;

#define DS_MEMORY_STATS_INIT DS_SIZED_INIT(ds_memory_stats)

/* Zeroes *stats and sets its size. NULL is a no-op. */
DS_EXPORT void ds_memory_stats_init(ds_memory_stats *stats);

/* Copies the counters of `mem` into *out (its size set; the counters are
 * zeroed first). Errors: DS_ERR_INVALID (NULL mem or out, out->size not one
 * this library knows). Thread-safe; each counter is read atomically, the
 * set is not one snapshot. */
DS_EXPORT DS_NODISCARD ds_status ds_memory_stats_get(const ds_memory *mem,
                                                     ds_memory_stats *out,
                                                     ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_MEMORY_H */
