/*
 * Searches: the k most similar facts of a user and the hybrid search that
 * fuses them with the full-text ranking. Every search runs in one read-only
 * REPEATABLE READ transaction, so its statements see one snapshot.
 *
 * Memory never searches across users, so a search is an exact scan of one
 * user's facts, the same on both backends: the user's 8-bit sketches come
 * through an index-only scan, each gives a lower and an upper bound of the
 * fact's cosine similarity, and only the facts whose upper bound reaches
 * the n-th best lower bound are rescored with their exact vectors. The
 * result is the exact top n (docs/memory.md has the measurements that chose
 * this over an HNSW index filtered by user).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/growable.h"
#include "memory/memory_internal.h"


typedef struct cand {
    int64_t id;
    double score;
} cand;

typedef struct cand_list {
    cand *v;
    size_t n;
} cand_list;

/* Best first; equal scores by id so results are reproducible. */
static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static ds_status exec_simple(ds_conn *c, int which, ds_error *err) {
    PGresult *r = ds__memory_exec(c, &ds__memory_stmts[which], NULL, err);
    if (!r)
        return err->code;
    PQclear(r);
    return DS_OK;
}

/* ---- sketches, then exact rescoring --------------------------------------- */

/* Each fact's sketch in `r` (id, sketch) bounds its cosine; the ids of the
 * facts that may be among the `n` best of them (and reach min_sim) go to
 * *ids (ds__free; NULL when none). Clears `r`. */
static ds_status prune_sketches(ds_memory *mem, PGresult *r, const float *q,
                                bool use_min, double min_sim, size_t n,
                                int64_t **ids_out, size_t *ncand_out,
                                ds_error *err) {
    *ids_out = NULL;
    *ncand_out = 0;
    ds__fact_bounds b;
    ds_status st = ds__sketch_bounds(mem, r, q, &b, err); /* clears r */
    if (st != DS_OK)
        return st;
    float *heap = ds__calloc(n, sizeof *heap);
    if (!heap) {
        ds__fact_bounds_free(&b);
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    size_t heap_len = 0;
    for (size_t i = 0; i < b.n; i++)
        if (isfinite(b.lo[i])) /* an unbounded fact raises no floor */
            ds__topn_push(heap, &heap_len, n, b.lo[i]);
    /* A fact whose upper bound is below the n-th best lower bound cannot
     * be among the n best (nor below min_similarity): skip it. */
    float floor_score = heap_len == n ? heap[0] : -INFINITY;
    if (use_min && (float)min_sim > floor_score)
        floor_score = (float)min_sim;
    size_t ncand = 0;
    for (size_t i = 0; i < b.n; i++)
        if (b.hi[i] >= floor_score)
            b.ids[ncand++] = b.ids[i];
    ds__free(heap);
    if (ncand == 0) {
        ds__fact_bounds_free(&b);
        return DS_OK;
    }
    *ids_out = b.ids;
    *ncand_out = ncand;
    b.ids = NULL;
    ds__fact_bounds_free(&b);
    return DS_OK;
}

/* First stage of an exact scan: the sketches of all the user's facts. */
static ds_status sketch_prune(ds_memory *mem, ds_conn *c, int64_t user_id,
                              const float *q, const char *kind, bool use_min,
                              double min_sim, size_t n, int64_t **ids_out,
                              size_t *ncand_out, ds_error *err) {
    *ids_out = NULL;
    *ncand_out = 0;
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_text(&p, kind);
    PGresult *r = ds__memory_exec(
        c,
        &ds__memory_stmts[mem->dim <= DS_SKETCH_INDEX_MAX_DIM
                              ? M_SKETCHES
                              : M_SKETCHES_WIDE],
        &p, err);
    if (!r)
        return err->code;
    return prune_sketches(mem, r, q, use_min, min_sim, n, ids_out, ncand_out,
                          err);
}

/* The exact score of each candidate's stored vector (a little-endian
 * float32 bytea on the fallback, pgvector's binary form on pgvector; both
 * arrive as bytea, told apart by their length). */
static ds_status rescore(ds_memory *mem, const PGresult *r, int col,
                         bool pgv, const float *q, bool use_min,
                         double min_sim, float *scratch, cand *v, size_t *got,
                         ds_error *err) {
    if (PQntuples(r) > 0 && PQftype(r, col) != DS_OID_BYTEA) {
        /* The column changed type under us (a conversion to pgvector by
         * another process, seen through an unnamed statement that no
         * cached plan guards): report it as the datatype mismatch it is,
         * so the caller re-reads the backend and retries. */
        ds_status st = ds__error_set(err, DS_ERR_SCHEMA,
                                     "memory_facts.embedding is no longer "
                                     "%s: the backend changed",
                                     pgv ? "vector" : "bytea");
        memcpy(err->sqlstate, "42804", sizeof "42804");
        return st;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetisnull(r, i, col)) /* a row asked for without its vector */
            continue;
        int64_t id = ds__memory_int8(r, i, 0);
        const char *val = PQgetvalue(r, i, col);
        int len = PQgetlength(r, i, col);
        double score;
        if (pgv) {
            if (!ds__vec_from_pgvector(val, len, mem->dim, scratch))
                return ds__error_set(err, DS_ERR_SCHEMA,
                                     "memory fact %lld: embedding is not a "
                                     "%zu-dimension vector",
                                     (long long)id, mem->dim);
            score = ds__vec_dot(q, scratch, mem->dim);
        } else {
            if ((size_t)len != 4 * mem->dim)
                return ds__error_set(err, DS_ERR_SCHEMA,
                                     "memory fact %lld: embedding has %d "
                                     "bytes, not %zu",
                                     (long long)id, len, 4 * mem->dim);
            score = ds__vec_dot_le(q, (const unsigned char *)val, mem->dim);
        }
        if (!isfinite(score))
            /* NaN would be handed out as a similarity and break the sort */
            return ds__error_set(err, DS_ERR_SCHEMA,
                                 "memory fact %lld: the stored embedding "
                                 "holds NaN or infinity",
                                 (long long)id);
        if (use_min && score < min_sim)
            continue;
        v[*got].id = id;
        v[*got].score = score;
        (*got)++;
    }
    return DS_OK;
}

/* The exact score of each fact in `r` (its vector in column `col`) that
 * passes min_sim, best first; out->n is at most n. */
static ds_status rescore_sorted(ds_memory *mem, const PGresult *r, int col,
                                bool pgv, const float *q, bool use_min,
                                double min_sim, size_t n, cand_list *out,
                                ds_error *err) {
    size_t rows = (size_t)PQntuples(r);
    cand *v = ds__calloc(rows ? rows : 1, sizeof *v);
    float *scratch = pgv ? ds__calloc(mem->dim, sizeof *scratch) : NULL;
    ds_status st = DS_OK;
    if (!v || (pgv && !scratch))
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    size_t got = 0;
    if (st == DS_OK)
        st = rescore(mem, r, col, pgv, q, use_min, min_sim, scratch, v, &got,
                     err);
    ds__free(scratch);
    if (st != DS_OK) {
        ds__free(v);
        return st;
    }
    qsort(v, got, sizeof *v, cand_cmp);
    out->v = v;
    out->n = got < n ? got : n;
    return DS_OK;
}

/* Second stage: the exact cosine of each candidate, best first. */
static ds_status exact_rescore(ds_memory *mem, ds_conn *c, bool pgv,
                               int64_t user_id, const float *q,
                               const int64_t *ids, size_t ncand, bool use_min,
                               double min_sim, size_t n, cand_list *out,
                               ds_error *err) {
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_int8_array(&p, ids, ncand);
    PGresult *r = ds__memory_exec(c,
                                  pgv ? &ds__memory_pgvector_stmts[P_EMBEDDINGS]
                                      : &ds__memory_fallback_stmts[F_EMBEDDINGS],
                                  &p, err);
    ds__bind_free(&p);
    if (!r)
        return err->code;
    ds__memory_count(&mem->rows_rescored, (uint64_t)PQntuples(r));
    ds_status st = rescore_sorted(mem, r, 1, pgv, q, use_min, min_sim, n, out,
                                  err);
    PQclear(r);
    return st;
}

/* Both stages, the same on both backends: only where the exact vectors
 * live differs. */
static ds_status exact_scan(ds_memory *mem, ds_conn *c, bool pgv,
                            int64_t user_id, const float *q, const char *kind,
                            bool use_min, double min_sim, size_t n,
                            cand_list *out, ds_error *err) {
    int64_t *ids;
    size_t ncand;
    ds_status st = sketch_prune(mem, c, user_id, q, kind, use_min, min_sim, n,
                                &ids, &ncand, err);
    if (st != DS_OK || ncand == 0)
        return st;
    st = exact_rescore(mem, c, pgv, user_id, q, ids, ncand, use_min, min_sim,
                       n, out, err);
    ds__free(ids);
    return st;
}

/* A large user: the coarse codes choose candidates (ds__code_candidates),
 * their sketches bound them, the survivors are scored exactly. When fewer
 * than `n` facts come out (min_similarity filtered candidates away) while
 * facts were left out, the exact scan decides instead, so the list is never
 * shorter than the facts that pass the filters allow. */
static ds_status exact_candidates(ds_memory *mem, ds_conn *c, bool pgv,
                                  int64_t user_id, const float *q,
                                  const char *kind, bool use_min,
                                  double min_sim, size_t n, cand_list *out,
                                  ds_error *err) {
    if (mem->dim > DS_SKETCH_INDEX_MAX_DIM)
        return exact_scan(mem, c, pgv, user_id, q, kind, use_min, min_sim, n,
                          out, err);
    /* a clustered user: the nearest lists first (ivf.c) */
    int64_t *ivf_ids;
    size_t ivf_n;
    float best_centroid;
    bool clustered;
    ds_status st = ds__ivf_candidates(mem, c, user_id, q, kind, use_min,
                                      min_sim, n, &ivf_ids, &ivf_n,
                                      &best_centroid, &clustered, err);
    if (st != DS_OK)
        return st;
    if (clustered && ivf_n > 0) {
        st = exact_rescore(mem, c, pgv, user_id, q, ivf_ids, ivf_n, use_min,
                           min_sim, n, out, err);
        ds__free(ivf_ids);
        if (st != DS_OK ||
            (out->n >= n && best_centroid >= out->v[n - 1].score))
            return st;
        /* the query lies outside the lists, or the filters left fewer than
         * n: the full search decides */
        ds__free(out->v);
        *out = (cand_list){0};
    }
    bool everyone;
    PGresult *r;
    st = ds__code_stage(mem, c, user_id, q, kind, n, &r, &everyone, err);
    if (st != DS_OK || everyone)
        return st != DS_OK ? st
                           : exact_scan(mem, c, pgv, user_id, q, kind, use_min,
                                        min_sim, n, out, err);
    int64_t *ids;
    size_t ncand;
    st = prune_sketches(mem, r, q, use_min, min_sim, n, &ids, &ncand, err);
    if (st == DS_OK && ncand > 0)
        st = exact_rescore(mem, c, pgv, user_id, q, ids, ncand, use_min,
                           min_sim, n, out, err);
    ds__free(ids);
    if (st != DS_OK || out->n >= n)
        return st;
    ds__free(out->v);
    *out = (cand_list){0};
    return exact_scan(mem, c, pgv, user_id, q, kind, use_min, min_sim, n, out,
                      err);
}

/* ---- assembling results ------------------------------------------------------- */

typedef ds__ranked ranked;

static int ranked_by_id(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

/* The facts of `hits`, in the order of `hits`, from `r` (rows of
 * memory.rows or memory.*.candidates, which may hold more rows than the
 * hits; borrowed, NULL when there are no hits). */
static ds_status build_list(const PGresult *r, const ranked *hits, size_t n,
                            ds_memory_facts **out, ds_error *err) {
    ds_memory_facts *list;
    ds_status st = ds__memory_list_new(n, &list, err);
    if (st != DS_OK || n == 0 || !r) {
        *out = st == DS_OK ? list : NULL;
        return st;
    }
    /* (id, row) pairs sorted by id (ds__int64_cmp compares the first), to
     * place each row */
    size_t rows = (size_t)PQntuples(r);
    int64_t(*index)[2] = ds__calloc(rows ? rows : 1, sizeof *index);
    if (!index)
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    for (size_t i = 0; st == DS_OK && i < rows; i++) {
        index[i][0] = ds__memory_int8(r, (int)i, 0);
        index[i][1] = (int64_t)i;
    }
    if (st == DS_OK)
        qsort(index, rows, sizeof *index, ds__int64_cmp);
    for (size_t i = 0; st == DS_OK && i < n; i++) {
        int64_t key[2] = {hits[i].id, 0};
        int64_t(*found)[2] = bsearch(key, index, rows, sizeof *index,
                                     ds__int64_cmp);
        if (!found) /* cannot happen inside one snapshot */
            continue;
        ds_memory_fact *f;
        st = ds__memory_decode_fact(r, (int)(*found)[1], &f, err);
        if (st != DS_OK)
            break;
        f->score = hits[i].score;
        f->vector_rank = hits[i].vector_rank;
        f->text_rank = hits[i].text_rank;
        list->items[list->count++] = f;
    }
    ds__free(index);
    if (st != DS_OK) {
        ds_memory_facts_free(list);
        return st;
    }
    *out = list;
    return DS_OK;
}

/* ---- search ----------------------------------------------------------------------- */

typedef struct search_req {
    int64_t user_id;
    const char *text;  /* hybrid when non-NULL */
    const float *q;    /* unit query */
    int k;
    const char *kind;
    bool use_min;
    double min_sim;
    bool read_primary;
    const ds_read_token *token;
    int token_wait_ms;
} search_req;

/* Reciprocal rank fusion of the two candidate lists. */
static ds_status fuse(const cand_list *vec, const cand_list *text, int k,
                      ranked **out, size_t *count, ds_error *err) {
    size_t total = vec->n + text->n;
    ranked *all = ds__calloc(total ? total : 1, sizeof *all);
    if (!all)
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    for (size_t i = 0; i < vec->n; i++)
        all[i] = (ranked){vec->v[i].id, 0, (int)i + 1, 0};
    for (size_t i = 0; i < text->n; i++)
        all[vec->n + i] = (ranked){text->v[i].id, 0, 0, (int)i + 1};
    qsort(all, total, sizeof *all, ranked_by_id);
    size_t n = 0;
    for (size_t i = 0; i < total; i++) {
        if (n > 0 && all[n - 1].id == all[i].id) {
            if (all[i].vector_rank)
                all[n - 1].vector_rank = all[i].vector_rank;
            if (all[i].text_rank)
                all[n - 1].text_rank = all[i].text_rank;
        } else {
            all[n++] = all[i];
        }
    }
    for (size_t i = 0; i < n; i++)
        all[i].score = ds__rrf_fused(all[i].vector_rank, all[i].text_rank);
    qsort(all, n, sizeof *all, ds__ranked_by_score);
    *out = all;
    *count = n < (size_t)k ? n : (size_t)k;
    return DS_OK;
}

/* The text side's parameters (memory.text_candidates). It runs in the
 * first round trip's pipeline, unnamed for a user not known to be small,
 * so it is planned for its own parameters every time: which index should
 * lead depends on them. For a rare word, the full-text index's few matches
 * filtered by user; for a common one, the user's rows first (a bitmap
 * AND). A cached generic plan cannot see the difference and ANDs the
 * user's whole bitmap in every time: 26 ms for a user of 10,000 facts
 * where the matches alone cost under 1 ms. For a small user that AND is
 * the cheap plan (the user's 1,000 entries, 11 index pages, instead of
 * the other users' matches' heap rows), and planning cost more than
 * running it: so a user the handle last saw small (small_hint) gets the
 * prepared statement, which settles on that generic plan. */
static void text_bind(ds__bind *p, const search_req *q, size_t n) {
    ds__bind_int64(p, q->user_id);
    ds__bind_text(p, q->text);
    ds__bind_text(p, q->kind);
    ds__bind_int32(p, (int32_t)n);
}

/* (id, rank) rows of memory.text_candidates, best first. Clears `r`. */
static ds_status text_decode(PGresult *r, cand_list *out, ds_error *err) {
    size_t rows = (size_t)PQntuples(r);
    out->v = ds__calloc(rows ? rows : 1, sizeof *out->v);
    if (!out->v) {
        PQclear(r);
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    for (size_t i = 0; i < rows; i++) {
        out->v[i].id = ds__memory_int8(r, (int)i, 0);
        out->v[i].score = ds__memory_float(r, (int)i, 1);
    }
    out->n = rows;
    PQclear(r);
    return DS_OK;
}

static atomic_int_fast64_t *hint_slot(ds_memory *mem, int64_t user_id) {
    return &mem->small_hint[(uint64_t)user_id % DS_SMALL_HINTS];
}

static bool hinted_small(ds_memory *mem, int64_t user_id) {
    return atomic_load_explicit(hint_slot(mem, user_id),
                                memory_order_relaxed) == user_id;
}

/* What the first round trip showed of the user's size. Only a search
 * without a kind filter sees all of the user's facts, as the text
 * statement's plan does. */
static void note_size(ds_memory *mem, const search_req *q, bool small) {
    if (q->kind)
        return;
    atomic_int_fast64_t *slot = hint_slot(mem, q->user_id);
    if (small)
        atomic_store_explicit(slot, q->user_id, memory_order_relaxed);
    else if (hinted_small(mem, q->user_id))
        atomic_store_explicit(slot, 0, memory_order_relaxed);
}

/* The first round trip of every search: BEGIN, memory.small_sketches
 * (unless the sketches are too wide for their index) and, for a hybrid
 * search, the text candidates, in one pipeline. *small is the small
 * user's sketches (the caller clears them), or NULL when the user is not
 * small and the large user's stages must choose the candidates. */
static ds_status first_round(ds_memory *mem, ds_conn *c, const search_req *q,
                             size_t n, PGresult **small, cand_list *text,
                             ds_error *err) {
    *small = NULL;
    ds__bind sk, tx;
    ds__bind_init(&sk);
    ds__bind_init(&tx);
    ds__pipe_stmt stmts[3];
    size_t count = 0, small_at = 0, text_at = 0;
    stmts[count++] = (ds__pipe_stmt){&ds__memory_stmts[M_BEGIN_READ], NULL,
                                     false, NULL};
    if (mem->dim <= DS_SKETCH_INDEX_MAX_DIM) {
        ds__bind_int64(&sk, q->user_id);
        ds__bind_text(&sk, q->kind);
        /* Users with at most this many facts (that pass the kind filter) and
         * no lists are scanned exactly from the start: for them the coarse
         * codes (codes.c) would give up, and reading them first only costs
         * a statement. */
        ds__bind_int32(&sk, (int32_t)ds__code_exact_max_facts(mem, n) + 1);
        small_at = count;
        stmts[count++] = (ds__pipe_stmt){&ds__memory_stmts[M_SMALL_SKETCHES],
                                         &sk, false, NULL};
    }
    if (q->text) {
        text_bind(&tx, q, n);
        text_at = count;
        stmts[count++] = (ds__pipe_stmt){&ds__memory_stmts[M_TEXT_CANDIDATES],
                                         &tx, !hinted_small(mem, q->user_id),
                                         NULL};
    }
    ds_status st = ds__stmt_run_pipeline(c, stmts, count, err);
    ds__bind_free(&sk);
    ds__bind_free(&tx);
    if (st != DS_OK)
        return st;
    PQclear(stmts[0].result);
    if (text_at)
        st = text_decode(stmts[text_at].result, text, err);
    if (small_at) {
        PGresult *r = stmts[small_at].result;
        /* one row of NULLs: not a small user */
        if (st != DS_OK ||
            (PQntuples(r) == 1 && PQgetisnull(r, 0, 0))) {
            PQclear(r);
            r = NULL;
        }
        if (st == DS_OK)
            note_size(mem, q, r != NULL);
        *small = r;
    }
    return st;
}

/* Ids of `text` that are not among ids[0..n) (sorted), to fetch as rows
 * only; *out is NULL when there are none (ds__free it). */
static ds_status text_only_ids(const int64_t *sorted, size_t n,
                               const cand_list *text, int64_t **out,
                               size_t *count, ds_error *err) {
    *out = NULL;
    *count = 0;
    if (text->n == 0)
        return DS_OK;
    int64_t *only = ds__calloc(text->n, sizeof *only);
    if (!only)
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    for (size_t i = 0; i < text->n; i++)
        if (!sorted || !bsearch(&text->v[i].id, sorted, n, sizeof *sorted,
                                ds__int64_cmp))
            only[(*count)++] = text->v[i].id;
    *out = only;
    return DS_OK;
}

/* The exact score of each candidate in the rows of memory.*.candidates,
 * best first, as exact_rescore. */
static ds_status rescore_rows(ds_memory *mem, const PGresult *r, bool pgv,
                              const search_req *q, size_t n, cand_list *vec,
                              ds_error *err) {
    return rescore_sorted(mem, r, DS_MEMORY_ROW_COLS, pgv, q->q, q->use_min,
                          q->min_sim, n, vec, err);
}

/* A small user's last round trip: memory.*.candidates (the exact vectors
 * and rows of `ids`, the rows only of `only`) with the COMMIT. *rows is
 * NULL when there is nothing to fetch (the COMMIT goes alone). */
static ds_status candidates_round(ds_memory *mem, ds_conn *c, bool pgv,
                                  int64_t user_id, const int64_t *ids,
                                  size_t nids, const int64_t *only,
                                  size_t nonly, PGresult **rows,
                                  ds_error *err) {
    *rows = NULL;
    if (nids + nonly == 0)
        return exec_simple(c, M_COMMIT, err);
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_int8_array(&p, ids, nids);
    ds__bind_int8_array(&p, only, nonly);
    ds__pipe_stmt stmts[2] = {
        {pgv ? &ds__memory_pgvector_stmts[P_CANDIDATES]
             : &ds__memory_fallback_stmts[F_CANDIDATES],
         &p, false, NULL},
        {&ds__memory_stmts[M_COMMIT], NULL, false, NULL}};
    ds_status st = ds__stmt_run_pipeline(c, stmts, 2, err);
    ds__bind_free(&p);
    if (st != DS_OK)
        return st;
    PQclear(stmts[1].result);
    *rows = stmts[0].result;
    ds__memory_count(&mem->rows_rescored, nids);
    return DS_OK;
}

/* A small user's vector search: its sketches (from the first round;
 * cleared here) bound every fact, and one more round trip brings the
 * survivors' exact vectors and rows, the rows of any text matches `text`
 * holds (none: the hybrid search plans its own, small_hybrid), and the
 * COMMIT. *rows holds every row the list needs (NULL when there are
 * none). */
static ds_status small_user(ds_memory *mem, ds_conn *c, bool pgv,
                            const search_req *q, size_t n, PGresult *sketches,
                            const cand_list *text, cand_list *vec,
                            PGresult **rows, ds_error *err) {
    *rows = NULL;
    int64_t *ids, *only = NULL;
    size_t ncand, nonly = 0;
    ds_status st = prune_sketches(mem, sketches, q->q, q->use_min,
                                  q->min_sim, n, &ids, &ncand, err);
    if (st != DS_OK)
        return st;
    if (ids)
        qsort(ids, ncand, sizeof *ids, ds__int64_cmp);
    st = text_only_ids(ids, ncand, text, &only, &nonly, err);
    if (st == DS_OK)
        st = candidates_round(mem, c, pgv, q->user_id, ids, ncand, only,
                              nonly, rows, err);
    if (st == DS_OK && *rows)
        st = rescore_rows(mem, *rows, pgv, q, n, vec, err);
    ds__free(ids);
    ds__free(only);
    return st;
}

/* A small user's hybrid search: its sketches (from the first round;
 * cleared here) and its text list plan which exact vectors the fused top
 * k needs (fusion.c); one more round trip brings them, the rows of the
 * facts the top k may hold, and the COMMIT. */
static ds_status small_hybrid(ds_memory *mem, ds_conn *c, bool pgv,
                              const search_req *q, size_t n,
                              PGresult *sketches, const cand_list *text,
                              ranked **hits, size_t *nhits, PGresult **rows,
                              ds_error *err) {
    *rows = NULL;
    ds__fact_bounds b;
    ds_status st = ds__sketch_bounds(mem, sketches, q->q, &b, err);
    if (st != DS_OK)
        return st;
    int64_t *text_ids = ds__calloc(text->n ? text->n : 1, sizeof *text_ids);
    if (!text_ids) {
        ds__fact_bounds_free(&b);
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    for (size_t i = 0; i < text->n; i++)
        text_ids[i] = text->v[i].id;
    ds__fusion plan;
    st = ds__fusion_plan(&plan, &b, text_ids, text->n, n, q->k, q->use_min,
                         q->min_sim, err);
    ds__free(text_ids);
    if (st != DS_OK) {
        ds__fact_bounds_free(&b);
        return st;
    }
    int64_t *exact = NULL, *only = NULL;
    size_t nexact = 0, nonly = 0;
    st = ds__fusion_ids(&plan, &exact, &nexact, &only, &nonly, err);
    cand_list vec = {0};
    if (st == DS_OK)
        st = candidates_round(mem, c, pgv, q->user_id, exact, nexact, only,
                              nonly, rows, err);
    if (st == DS_OK && *rows)
        st = rescore_rows(mem, *rows, pgv, q, (size_t)-1, &vec, err);
    int64_t *ids = NULL;
    double *scores = NULL;
    if (st == DS_OK) {
        ids = ds__calloc(vec.n ? vec.n : 1, sizeof *ids);
        scores = ds__calloc(vec.n ? vec.n : 1, sizeof *scores);
        if (!ids || !scores)
            st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    for (size_t i = 0; st == DS_OK && i < vec.n; i++) {
        ids[i] = vec.v[i].id;
        scores[i] = vec.v[i].score;
    }
    if (st == DS_OK)
        st = ds__fusion_rank(&plan, ids, scores, vec.n, hits, nhits, err);
    ds__free(ids);
    ds__free(scores);
    ds__free(vec.v);
    ds__free(exact);
    ds__free(only);
    ds__fusion_free(&plan);
    ds__fact_bounds_free(&b);
    return st;
}

/* The last round trip of a large user's search: the rows of the hits and
 * the COMMIT. */
static ds_status last_round(ds_conn *c, int64_t user_id, const ranked *hits,
                            size_t n, PGresult **rows, ds_error *err) {
    *rows = NULL;
    if (n == 0)
        return exec_simple(c, M_COMMIT, err);
    int64_t *ids = ds__calloc(n, sizeof *ids);
    if (!ids)
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    for (size_t i = 0; i < n; i++)
        ids[i] = hits[i].id;
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_int8_array(&p, ids, n);
    ds__free(ids);
    ds__pipe_stmt stmts[2] = {{&ds__memory_stmts[M_ROWS], &p, false, NULL},
                              {&ds__memory_stmts[M_COMMIT], NULL, false, NULL}};
    ds_status st = ds__stmt_run_pipeline(c, stmts, 2, err);
    ds__bind_free(&p);
    if (st == DS_OK) {
        PQclear(stmts[1].result);
        *rows = stmts[0].result;
    }
    return st;
}

/* The hits: fused with the text candidates, or the vector list as it is. */
static ds_status rank_hits(const search_req *q, const cand_list *vec,
                           const cand_list *text, ranked **hits,
                           size_t *nhits, ds_error *err) {
    if (q->text)
        return fuse(vec, text, q->k, hits, nhits, err);
    *hits = ds__calloc(vec->n ? vec->n : 1, sizeof **hits);
    if (!*hits)
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    for (size_t i = 0; i < vec->n; i++)
        (*hits)[i] = (ranked){vec->v[i].id, vec->v[i].score, (int)i + 1, 0};
    *nhits = vec->n;
    return DS_OK;
}

/* Round trips: a small user's search takes two (BEGIN with its sketches
 * and text matches; the candidates' vectors and rows with the COMMIT); a
 * large user's takes the first, its stages' own, and one for the rows and
 * the COMMIT. */
static ds_status search_once(ds_memory *mem, const search_req *q,
                             ds_memory_facts **out, ds_error *err) {
    ds__memory_state s = ds__memory_state_get(mem);
    bool pgv = s.backend == DS_VECTOR_BACKEND_PGVECTOR;
    /* the hybrid search draws more candidates from each list to fuse */
    size_t n = (size_t)q->k;
    if (q->text)
        n = (size_t)(q->k * 4 > 40 ? q->k * 4 : 40);
    ds_conn *c;
    ds_status st = q->read_primary ? ds_pool_acquire(mem->pool, &c, err)
                   : q->token ? ds_pool_acquire_read_token(mem->pool, q->token,
                                                           q->token_wait_ms, &c,
                                                           err)
                              : ds_pool_acquire_read(mem->pool, &c, err);
    if (st != DS_OK)
        return st;
    cand_list vec = {0}, text = {0};
    ranked *hits = NULL;
    size_t nhits = 0;
    PGresult *small = NULL, *rows = NULL;
    st = first_round(mem, c, q, n, &small, &text, err);
    bool fused = small && q->text;
    if (st == DS_OK && fused)
        st = small_hybrid(mem, c, pgv, q, n, small, &text, &hits, &nhits,
                          &rows, err);
    else if (st == DS_OK && small)
        st = small_user(mem, c, pgv, q, n, small, &text, &vec, &rows, err);
    else if (st == DS_OK)
        st = exact_candidates(mem, c, pgv, q->user_id, q->q, q->kind,
                              q->use_min, q->min_sim, n, &vec, err);
    if (st == DS_OK && !fused)
        st = rank_hits(q, &vec, &text, &hits, &nhits, err);
    if (st == DS_OK && !small)
        st = last_round(c, q->user_id, hits, nhits, &rows, err);
    if (st == DS_OK)
        st = build_list(rows, hits, nhits, out, err);
    PQclear(rows);
    if (st != DS_OK) {
        ds_memory_facts_free(*out);
        *out = NULL;
    }
    ds_pool_release(c); /* rolls back whatever is still open */
    ds__free(vec.v);
    ds__free(text.v);
    ds__free(hits);
    return st;
}

/* An answered search in the stats. The backend is the one the handle
 * knows now: the one the search ran on, unless a conversion by another
 * process was noticed in between. */
static void count_search(ds_memory *mem, bool hybrid, int64_t started_us) {
    int64_t took = ds__now_us() - started_us;
    ds__memory_count(hybrid ? &mem->hybrid_searches : &mem->searches, 1);
    ds__memory_count(ds__memory_state_get(mem).backend ==
                             DS_VECTOR_BACKEND_PGVECTOR
                         ? &mem->pgvector_searches
                         : &mem->fallback_searches,
                     1);
    ds__memory_count(&mem->search_time_us, took > 0 ? (uint64_t)took : 0);
}

static ds_status search(ds_memory *mem, int64_t user_id, const char *text,
                        const float *query, size_t dim, int k,
                        const ds_memory_search_options *opts,
                        const ds_read_token *token, int token_wait_ms,
                        ds_memory_facts **out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, mem, "mem is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    DS_CHECK_ARG(err, k >= 1 && k <= DS_MEMORY_K_MAX, "k must be 1 to 1000");
    ds_memory_search_options o;
    ds_status checked = DS__IN(opts, &o, ds_memory_search_options, err);
    if (checked != DS_OK)
        return checked;
    opts = &o;
    DS_CHECK_ARG(err, opts->ef_search >= 0 && opts->ef_search <= 1000,
                 "ef_search must be 0 to 1000");
    DS_CHECK_ARG(err, token_wait_ms >= 0 && token_wait_ms <= 60000,
                 "max_wait_ms must be 0 to 60000");
    DS_CHECK_ARG(err,
                 !opts->use_min_similarity ||
                     (opts->min_similarity >= -1.0 &&
                      opts->min_similarity <= 1.0),
                 "min_similarity must be from -1 to 1");
    ds_status st = ds__memory_check_kind(opts->kind, err);
    if (st != DS_OK)
        return st;
    if (text) {
        size_t len = strlen(text);
        DS_CHECK_ARG(err, len > 0 && len <= DS_MEMORY_CONTENT_MAX * 4 &&
                              ds__utf8_valid(text, len),
                     "text must be non-empty UTF-8");
    }
    float *unit = ds__calloc(mem->dim, sizeof *unit);
    if (!unit)
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    st = ds__vec_normalize(query, dim, mem->dim, "query", unit, err);
    if (st != DS_OK) {
        ds__free(unit);
        return st;
    }
    search_req req = {user_id,
                      text,
                      unit,
                      k,
                      opts->kind,
                      opts->use_min_similarity,
                      opts->min_similarity,
                      opts->read_primary,
                      token,
                      token_wait_ms};
    ds_error local = {0};
    int64_t started_us = ds__now_us();
    st = search_once(mem, &req, out, &local);
    if (st != DS_OK && ds__memory_state_changed(mem, &local)) {
        memset(&local, 0, sizeof local);
        st = search_once(mem, &req, out, &local);
    }
    ds__free(unit);
    if (st != DS_OK) {
        ds__memory_count(&mem->errors, 1);
        return ds__memory_fail(&local, err);
    }
    count_search(mem, text != NULL, started_us);
    if (opts->touch && (*out)->count > 0) {
        int64_t *ids = ds__calloc((*out)->count, sizeof *ids);
        if (!ids)
            st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
        for (size_t i = 0; ids && i < (*out)->count; i++)
            ids[i] = (*out)->items[i]->id;
        if (ids)
            st = ds_memory_touch(mem, user_id, ids, (*out)->count, NULL, err);
        ds__free(ids);
        if (st != DS_OK) {
            ds__memory_count(&mem->errors, 1);
            ds_memory_facts_free(*out);
            *out = NULL;
        }
    }
    return st;
}

DS_EXPORT ds_status ds_memory_search(ds_memory *mem, int64_t user_id,
                                     const float *query, size_t dim, int k,
                                     const ds_memory_search_options *opts,
                                     ds_memory_facts **out, ds_error *err) {
    return search(mem, user_id, NULL, query, dim, k, opts, NULL, 0, out, err);
}

DS_EXPORT ds_status ds_memory_search_read_token(
    ds_memory *mem, int64_t user_id, const float *query, size_t dim, int k,
    const ds_memory_search_options *opts, const ds_read_token *token,
    int max_wait_ms, ds_memory_facts **out, ds_error *err) {
    return search(mem, user_id, NULL, query, dim, k, opts,
                  token && token->lsn ? token : NULL, max_wait_ms, out, err);
}

DS_EXPORT ds_status ds_memory_search_hybrid(ds_memory *mem, int64_t user_id,
                                            const char *text,
                                            const float *query, size_t dim,
                                            int k,
                                            const ds_memory_search_options *opts,
                                            ds_memory_facts **out,
                                            ds_error *err) {
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, text, "text is NULL");
    return search(mem, user_id, text, query, dim, k, opts, NULL, 0, out, err);
}

DS_EXPORT ds_status ds_memory_search_hybrid_read_token(
    ds_memory *mem, int64_t user_id, const char *text, const float *query,
    size_t dim, int k, const ds_memory_search_options *opts,
    const ds_read_token *token, int max_wait_ms, ds_memory_facts **out,
    ds_error *err) {
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, text, "text is NULL");
    return search(mem, user_id, text, query, dim, k, opts,
                  token && token->lsn ? token : NULL, max_wait_ms, out, err);
}
