/*
 * The coarse partition of large users (sql/0008_memory_ivf_lists): each
 * clustered user's facts are split into lists around centroids (spherical
 * k-means over the unit embeddings), and a search reads only the sketches
 * of the lists nearest the query.
 *
 * The probe rule (docs/memory.md has the measurements that chose it):
 *   1. lists in order of centroid similarity until they hold PROBE_SHARE of
 *      the user's facts, plus every fact without a list or whose list is
 *      gone (always read, so a fact is found as soon as it is written);
 *   2. then every further list whose centroid is at least as similar to the
 *      query as the n-th best lower bound found so far (a fact is rarely
 *      more similar to the query than its own centroid is);
 *   3. the answer is trusted only when the best centroid is at least as
 *      similar as the n-th exact result: a query outside every list (one
 *      on a topic the user has no facts about) says nothing about which
 *      lists hold its answer, and the caller then runs the full search.
 * Within the probed lists the answer is exact (sketch bounds, then exact
 * rescoring). The recall of the rule is measured, not proven.
 *
 * Maintenance (ds_memory_maintain): clusters a user that crossed the
 * threshold or whose lists drifted from its size, and assigns facts that
 * have no list yet. A rebuild inserts the new lists beside the old ones
 * (ids above them), moves the facts in batches of short statements, then
 * drops the old lists; searches meanwhile see every fact in some list that
 * exists, or in the "list gone" ranges they always read.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/growable.h"
#include "core/progress.h"
#include "memory/memory_internal.h"

#define MODULE "memory"
#define PROBE_SHARE 0.05   /* of the user's facts, read first             */
#define PROBE_PER_RESULT 8 /* and at least this many facts per result     */
#define SAMPLE_PER_LIST 32 /* k-means trains on this many facts a list    */
#define KMEANS_ITERATIONS 8
#define BATCH 1000
#define MAX_LISTS 4096
/* A user is re-clustered when it grew or shrank by this factor since its
 * lists were built, or when its largest list holds more than UNBALANCED
 * times the mean. */
#define DRIFT 2.0
#define UNBALANCED 10.0

/* ---- statements ------------------------------------------------------------ */

enum {
    I_LISTS, I_PROBE, I_REST, I_USERS, I_USER, I_MAX_LIST, I_INSERT_LISTS,
    I_SET_LISTS, I_DROP_OLD, I_DROP_ALL, I_CENTROIDS_OF, I_USER_IDS, I_COUNT_
};

#define SKETCH_PRED                                                            \
    "(embedding_sketch IS NULL OR octet_length(embedding_sketch) <= 2008)"

static const ds__stmt_def ivf_stmts[I_COUNT_] = {
    [I_LISTS] = {"memory.ivf.lists",
                 "SELECT list_id, centroid, facts, cohesion FROM "
                 "memory_ivf_lists WHERE user_id = $1",
                 1,
                 {DS_OID_INT8},
                 4,
                 {DS_OID_INT4, DS_OID_BYTEA, DS_OID_INT4, DS_OID_FLOAT4}},
    /* one index range of memory_facts_ivf_idx per list ($2 holds distinct
     * lists). A list at a time: with `list_id = ANY($2)` the generic plan,
     * costed for an average user of a fact or two, read every entry of
     * the user and filtered the lists (OFFSET 0 keeps the subquery
     * per list, as in memory.blocks.tail). */
    [I_PROBE] = {"memory.ivf.probe",
                 "SELECT f.id, f.embedding_sketch FROM unnest($2::int4[]) "
                 "AS l(list_id) CROSS JOIN LATERAL (SELECT id, "
                 "embedding_sketch FROM memory_facts WHERE user_id = $1 "
                 "AND list_id = l.list_id "
                 "AND ($3::text IS NULL OR kind = $3) AND " SKETCH_PRED
                 " OFFSET 0) f",
                 3,
                 {DS_OID_INT8, DS_OID_INT4_ARRAY, DS_OID_TEXT},
                 2,
                 {DS_OID_INT8, DS_OID_BYTEA}},
    /* facts without a list, or whose list is gone (ids outside $2..$3) */
    [I_REST] = {"memory.ivf.rest",
                "SELECT id, embedding_sketch FROM memory_facts "
                "WHERE user_id = $1 AND list_id IS NULL "
                "AND ($4::text IS NULL OR kind = $4) AND " SKETCH_PRED
                " UNION ALL "
                "SELECT id, embedding_sketch FROM memory_facts "
                "WHERE user_id = $1 AND list_id < $2 "
                "AND ($4::text IS NULL OR kind = $4) AND " SKETCH_PRED
                " UNION ALL "
                "SELECT id, embedding_sketch FROM memory_facts "
                "WHERE user_id = $1 AND list_id > $3 "
                "AND ($4::text IS NULL OR kind = $4) AND " SKETCH_PRED,
                4,
                {DS_OID_INT8, DS_OID_INT4, DS_OID_INT4, DS_OID_TEXT},
                2,
                {DS_OID_INT8, DS_OID_BYTEA}},
    /* users to look at: facts, facts without a list, and their lists.
     * Every user: the candidates (users with lists, and users with at
     * least $1 facts, counted in the narrow memory_facts_user_kind_idx,
     * index-only) and then the rows of those only; counted in the table,
     * the facts' embeddings made the periodic run read all of it (a user
     * with lists and no fact left now comes back, with 0 facts, and its
     * lists go). One user ($1): a statement of its own, since
     * `$1 = 0 OR user_id = $1` gave a generic plan that scanned the table
     * for one user. */
#define USERS_SQL(candidates, min_facts)                                       \
    "SELECT c.user_id, s.facts, s.unlisted, coalesce(l.lists, 0), "           \
    "coalesce(l.facts, 0), coalesce(l.largest, 0), coalesce(l.lowest, 0) "     \
    "FROM " candidates " c "                                                   \
    "CROSS JOIN LATERAL (SELECT count(*) AS facts, "                           \
    "count(*) FILTER (WHERE list_id IS NULL) AS unlisted "                     \
    "FROM memory_facts WHERE user_id = c.user_id "                             \
    "AND embedding IS NOT NULL) s "                                            \
    "LEFT JOIN (SELECT user_id, count(*) AS lists, sum(facts) AS facts, "      \
    "max(facts) AS largest, min(list_id) AS lowest FROM memory_ivf_lists "     \
    "GROUP BY user_id) l ON l.user_id = c.user_id "                            \
    "WHERE s.facts >= " min_facts " OR l.lists IS NOT NULL "                   \
    "ORDER BY c.user_id"
    [I_USERS] = {"memory.ivf.users",
                 USERS_SQL("(SELECT user_id FROM memory_facts GROUP BY "
                           "user_id HAVING count(*) >= $1 UNION SELECT "
                           "user_id FROM memory_ivf_lists)",
                           "$1"),
                 1,
                 {DS_OID_INT8},
                 7,
                 {DS_OID_INT8, DS_OID_INT8, DS_OID_INT8, DS_OID_INT8,
                  DS_OID_INT8, DS_OID_INT4, DS_OID_INT4}},
    [I_USER] = {"memory.ivf.user",
                USERS_SQL("(SELECT $1::int8 AS user_id)", "$2"),
                2,
                {DS_OID_INT8, DS_OID_INT8},
                7,
                {DS_OID_INT8, DS_OID_INT8, DS_OID_INT8, DS_OID_INT8,
                 DS_OID_INT8, DS_OID_INT4, DS_OID_INT4}},
#undef USERS_SQL
    [I_MAX_LIST] = {"memory.ivf.max_list",
                    "SELECT coalesce(max(list_id), -1) FROM memory_ivf_lists "
                    "WHERE user_id = $1",
                    1,
                    {DS_OID_INT8},
                    1,
                    {DS_OID_INT4}},
    [I_INSERT_LISTS] = {"memory.ivf.insert_lists",
                        "INSERT INTO memory_ivf_lists (user_id, list_id, "
                        "centroid, facts, cohesion) SELECT $1, * FROM "
                        "unnest($2::int4[], $3::bytea[], $4::int4[], "
                        "$5::real[])",
                        5,
                        {DS_OID_INT8, DS_OID_INT4_ARRAY, DS_OID_BYTEA_ARRAY,
                         DS_OID_INT4_ARRAY, DS_OID_FLOAT4_ARRAY},
                        -1,
                        {0}},
    /* facts (user, id) to their lists: a rebuild's batches of one user, and
     * the new facts of an insert, of any users */
    [I_SET_LISTS] = {"memory.ivf.set_lists",
                     "UPDATE memory_facts f SET list_id = u.list_id "
                     "FROM unnest($1::int8[], $2::int8[], $3::int4[]) "
                     "AS u(user_id, id, list_id) "
                     "WHERE f.user_id = u.user_id AND f.id = u.id",
                     3,
                     {DS_OID_INT8_ARRAY, DS_OID_INT8_ARRAY, DS_OID_INT4_ARRAY},
                     -1,
                     {0}},
    [I_DROP_OLD] = {"memory.ivf.drop_old",
                    "DELETE FROM memory_ivf_lists WHERE user_id = $1 "
                    "AND list_id < $2",
                    2,
                    {DS_OID_INT8, DS_OID_INT4},
                    -1,
                    {0}},
    [I_DROP_ALL] = {"memory.ivf.drop_all",
                    "DELETE FROM memory_ivf_lists WHERE user_id = $1",
                    1,
                    {DS_OID_INT8},
                    -1,
                    {0}},
    [I_CENTROIDS_OF] = {"memory.ivf.centroids_of",
                        "SELECT user_id, list_id, centroid FROM "
                        "memory_ivf_lists WHERE user_id = ANY($1)",
                        1,
                        {DS_OID_INT8_ARRAY},
                        3,
                        {DS_OID_INT8, DS_OID_INT4, DS_OID_BYTEA}},
    /* the facts of a user whose list is NULL or outside $2..$3: three
     * ranges of memory_facts_ivf_idx (the facts a search reads in
     * memory.ivf.rest), not the user's every fact */
    [I_USER_IDS] = {"memory.ivf.user_ids",
                    "SELECT id FROM memory_facts WHERE user_id = $1 "
                    "AND list_id IS NULL AND embedding IS NOT NULL AND "
                    SKETCH_PRED " UNION ALL "
                    "SELECT id FROM memory_facts WHERE user_id = $1 "
                    "AND list_id < $2 AND embedding IS NOT NULL AND "
                    SKETCH_PRED " UNION ALL "
                    "SELECT id FROM memory_facts WHERE user_id = $1 "
                    "AND list_id > $3 AND embedding IS NOT NULL AND "
                    SKETCH_PRED,
                    3,
                    {DS_OID_INT8, DS_OID_INT4, DS_OID_INT4},
                    1,
                    {DS_OID_INT8}},
};

size_t ds__stmts_memory_ivf(const ds__stmt_def **defs) {
    *defs = ivf_stmts;
    return I_COUNT_;
}

static int32_t get_int4(const PGresult *r, int row, int col) {
    return (int32_t)ds__get_be32(PQgetvalue(r, row, col));
}

/* ---- lists as read by a search ----------------------------------------------- */

typedef struct list_ref {
    int32_t id;
    float sim;  /* centroid . query */
    int32_t facts;
    float cohesion;
} list_ref;

static int by_sim_desc(const void *a, const void *b) {
    const list_ref *x = a, *y = b;
    if (x->sim != y->sim)
        return x->sim > y->sim ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The nearest centroid of `v` among `lists` centroids (lists x dim). */
static size_t nearest(const float *centroids, size_t lists, const float *v,
                      size_t dim, float *sim) {
    size_t best = 0;
    float best_sim = -INFINITY;
    for (size_t l = 0; l < lists; l++) {
        float s = ds__vec_dot(v, centroids + l * dim, dim);
        if (s > best_sim) {
            best_sim = s;
            best = l;
        }
    }
    if (sim)
        *sim = best_sim;
    return best;
}

/* ---- the search's first stage ----------------------------------------------- */

/* Sketch bounds gathered over the probe rounds. */
typedef struct gathered {
    int64_t *id;
    float *hi;
    size_t n, cap;
    float *heap; /* min-heap of the `want` best lower bounds */
    size_t heap_len, want;
} gathered;

static float gathered_floor(const gathered *g) {
    return g->heap_len == g->want ? g->heap[0] : -INFINITY;
}

/* Adds the (id, sketch) rows of `r` (cleared here). */
static ds_status gather(ds_memory *mem, gathered *g, PGresult *r,
                        const float *q, ds_error *err) {
    size_t rows = (size_t)PQntuples(r);
    ds__memory_count(&mem->rows_scanned, rows);
    ds_status st = DS_OK;
    if (g->n + rows > g->cap) {
        size_t cap = (g->n + rows) * 2;
        int64_t *id = ds__realloc(g->id, cap * sizeof *id);
        if (id)
            g->id = id;
        float *hi = id ? ds__realloc(g->hi, cap * sizeof *hi) : NULL;
        if (hi)
            g->hi = hi;
        if (!id || !hi)
            st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
        else
            g->cap = cap;
    }
    for (size_t i = 0; st == DS_OK && i < rows; i++) {
        int64_t id = ds__memory_int8(r, (int)i, 0);
        float lo, hi;
        st = ds__sketch_row_bounds(mem, r, (int)i, id, q, &lo, &hi, err);
        if (st != DS_OK)
            break;
        if (isfinite(lo))
            ds__topn_push(g->heap, &g->heap_len, g->want, lo);
        g->id[g->n] = id;
        g->hi[g->n] = hi;
        g->n++;
    }
    PQclear(r);
    return st;
}

static ds_status probe_lists(ds_memory *mem, ds_conn *c, int64_t user_id,
                             const list_ref *lists, size_t from, size_t to,
                             const char *kind, const float *q, gathered *g,
                             ds_error *err) {
    if (from >= to)
        return DS_OK;
    ds__pgarr ids;
    ds__pgarr_init(&ids, DS_OID_INT4);
    bool ok = true;
    for (size_t i = from; ok && i < to; i++)
        ok = ds__pgarr_add_int4(&ids, lists[i].id);
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_array(&p, &ids, DS_OID_INT4_ARRAY);
    ds__bind_text(&p, kind);
    ds__pgarr_free(&ids);
    if (!ok) {
        ds__bind_free(&p);
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    PGresult *r = ds__memory_exec(c, &ivf_stmts[I_PROBE], &p, err);
    ds__bind_free(&p);
    if (!r)
        return err->code;
    return gather(mem, g, r, q, err);
}

/* Reads the lists of `r` whose centroid is whole, each with its similarity
 * to `q`; returns how many. */
static size_t read_lists(PGresult *r, size_t nlists, const float *q,
                         size_t dim, float *centroid, list_ref *lists,
                         int64_t *total, int32_t *lowest, int32_t *highest) {
    size_t usable = 0;
    for (size_t i = 0; i < nlists; i++) {
        if ((size_t)PQgetlength(r, (int)i, 1) != 4 * dim)
            continue; /* a damaged centroid: its facts are read as "gone" */
        ds__vec_from_le((const unsigned char *)PQgetvalue(r, (int)i, 1), dim,
                        centroid);
        list_ref *l = &lists[usable++];
        l->id = get_int4(r, (int)i, 0);
        l->facts = get_int4(r, (int)i, 2);
        l->cohesion = (float)ds__memory_float(r, (int)i, 3);
        l->sim = ds__vec_dot(q, centroid, dim);
        if (!isfinite(l->sim))
            l->sim = INFINITY; /* probed first, whatever it holds */
        *total += l->facts;
        if (l->id < *lowest)
            *lowest = l->id;
        if (l->id > *highest)
            *highest = l->id;
    }
    return usable;
}

/* Gathers the facts without a list, or whose list is gone (outside
 * lowest..highest): read on every search that uses the lists. */
static ds_status probe_rest(ds_memory *mem, ds_conn *c, int64_t user_id,
                            int32_t lowest, int32_t highest, const char *kind,
                            const float *q, gathered *g, ds_error *err) {
    ds__bind rest;
    ds__bind_init(&rest);
    ds__bind_int64(&rest, user_id);
    ds__bind_int32(&rest, lowest);
    ds__bind_int32(&rest, highest);
    ds__bind_text(&rest, kind);
    PGresult *r = ds__memory_exec(c, &ivf_stmts[I_REST], &rest, err);
    ds__bind_free(&rest);
    return r ? gather(mem, g, r, q, err) : err->code;
}

/* Probes the lists (sorted nearest first) in two rounds. */
static ds_status probe_rounds(ds_memory *mem, ds_conn *c, int64_t user_id,
                              const list_ref *lists, size_t nlists,
                              int64_t total, size_t n, const char *kind,
                              const float *q, gathered *g, ds_error *err) {
    /* 1: the nearest lists up to the first share */
    size_t probed = 0;
    double budget = fmax(PROBE_SHARE * (double)total,
                         (double)(PROBE_PER_RESULT * n));
    double covered = 0;
    while (probed < nlists && covered < budget)
        covered += lists[probed++].facts;
    ds_status st =
        probe_lists(mem, c, user_id, lists, 0, probed, kind, q, g, err);
    /* 2: every further list at least as near as the n-th lower bound; the
     * floor only rises, so one more round is enough */
    if (st == DS_OK && probed < nlists) {
        float floor_score = gathered_floor(g);
        size_t upto = probed;
        while (upto < nlists && lists[upto].sim >= floor_score)
            upto++;
        st = probe_lists(mem, c, user_id, lists, probed, upto, kind, q, g,
                         err);
    }
    return st;
}

/* Hands the caller the gathered ids whose upper bound reaches the floor
 * (the n-th lower bound, or min_sim when higher). */
static void keep_candidates(gathered *g, bool use_min, double min_sim,
                            int64_t **ids_out, size_t *ncand_out) {
    float floor_score = gathered_floor(g);
    if (use_min && (float)min_sim > floor_score)
        floor_score = (float)min_sim;
    size_t ncand = 0;
    for (size_t i = 0; i < g->n; i++)
        if (g->hi[i] >= floor_score)
            g->id[ncand++] = g->id[i];
    if (ncand > 0) {
        *ids_out = g->id;
        *ncand_out = ncand;
        g->id = NULL;
    }
}

ds_status ds__ivf_candidates(ds_memory *mem, ds_conn *c, int64_t user_id,
                             const float *q, const char *kind, bool use_min,
                             double min_sim, size_t n, int64_t **ids_out,
                             size_t *ncand_out, float *best_centroid,
                             bool *used, ds_error *err) {
    *ids_out = NULL;
    *ncand_out = 0;
    *used = false;
    size_t dim = mem->dim;
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    PGresult *r = ds__memory_exec(c, &ivf_stmts[I_LISTS], &p, err);
    if (!r)
        return err->code;
    size_t nlists = (size_t)PQntuples(r);
    if (nlists == 0) {
        PQclear(r);
        return DS_OK;
    }
    list_ref *lists = ds__calloc(nlists, sizeof *lists);
    float *centroid = ds__calloc(dim, sizeof *centroid);
    gathered g = {0};
    g.want = n;
    g.heap = ds__calloc(n, sizeof *g.heap);
    ds_status st = DS_OK;
    if (!lists || !centroid || !g.heap)
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    int64_t total = 0;
    int32_t lowest = INT32_MAX, highest = -1;
    size_t usable = 0;
    if (st == DS_OK)
        usable = read_lists(r, nlists, q, dim, centroid, lists, &total,
                            &lowest, &highest);
    PQclear(r);
    nlists = usable;
    if (st == DS_OK && nlists > 0)
        qsort(lists, nlists, sizeof *lists, by_sim_desc);
    /* a query less than half as near its nearest centroid as that list's
     * own facts lies outside the lists: the full search answers it, and
     * reading lists first would only add to its cost */
    if (st == DS_OK && nlists > 0 &&
        !(lists[0].sim >= 0.5f * lists[0].cohesion))
        nlists = 0;
    if (st == DS_OK && nlists > 0) {
        *used = true;
        *best_centroid = lists[0].sim;
        st = probe_rest(mem, c, user_id, lowest, highest, kind, q, &g, err);
    }
    if (st == DS_OK)
        st = probe_rounds(mem, c, user_id, lists, nlists, total, n, kind, q,
                          &g, err);
    if (st == DS_OK)
        keep_candidates(&g, use_min, min_sim, ids_out, ncand_out);
    ds__free(g.id);
    ds__free(g.hi);
    ds__free(g.heap);
    ds__free(lists);
    ds__free(centroid);
    if (st != DS_OK)
        *used = false;
    return st;
}

/* ---- assignment of new facts ------------------------------------------------ */

ds_status ds__ivf_assign_new(ds_memory *mem, ds_conn *c,
                             const ds_memory_new_fact *facts, size_t count,
                             const int64_t *ids, ds_error *err) {
    size_t dim = mem->dim;
    int64_t *users = ds__calloc(count, sizeof *users);
    if (!users)
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    for (size_t i = 0; i < count; i++)
        users[i] = facts[i].user_id;
    qsort(users, count, sizeof *users, ds__int64_cmp);
    size_t nu = 0;
    for (size_t i = 0; i < count; i++)
        if (nu == 0 || users[nu - 1] != users[i])
            users[nu++] = users[i];
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int8_array(&p, users, nu);
    ds__free(users);
    PGresult *r = ds__memory_exec(c, &ivf_stmts[I_CENTROIDS_OF], &p, err);
    ds__bind_free(&p);
    if (!r)
        return err->code;
    size_t rows = (size_t)PQntuples(r);
    if (rows == 0) {
        PQclear(r);
        return DS_OK;
    }
    float *cent = ds__calloc(rows * dim, sizeof *cent);
    float *unit = ds__calloc(dim, sizeof *unit);
    int64_t *owner = ds__calloc(rows, sizeof *owner);
    int32_t *list = ds__calloc(rows, sizeof *list);
    ds_status st = DS_OK;
    if (!cent || !unit || !owner || !list)
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    size_t usable = 0;
    for (size_t i = 0; st == DS_OK && i < rows; i++) {
        if ((size_t)PQgetlength(r, (int)i, 2) != 4 * dim)
            continue;
        owner[usable] = ds__memory_int8(r, (int)i, 0);
        list[usable] = get_int4(r, (int)i, 1);
        ds__vec_from_le((const unsigned char *)PQgetvalue(r, (int)i, 2), dim,
                        cent + usable * dim);
        usable++;
    }
    PQclear(r);
    /* rows come grouped by nothing in particular: per fact, scan the rows
     * of its user (a user has at most MAX_LISTS) */
    ds__pgarr fuser, fid, flist;
    ds__pgarr_init(&fuser, DS_OID_INT8);
    ds__pgarr_init(&fid, DS_OID_INT8);
    ds__pgarr_init(&flist, DS_OID_INT4);
    bool ok = true;
    size_t assigned = 0;
    for (size_t i = 0; st == DS_OK && ok && i < count; i++) {
        ds__vec_normalize(facts[i].embedding, facts[i].dim, dim, "embedding",
                          unit, NULL);
        float best = -INFINITY;
        int32_t best_list = -1;
        for (size_t l = 0; l < usable; l++) {
            if (owner[l] != facts[i].user_id)
                continue;
            float s = ds__vec_dot(unit, cent + l * dim, dim);
            if (s > best) {
                best = s;
                best_list = list[l];
            }
        }
        if (best_list < 0)
            continue;
        ok = ds__pgarr_add_int8(&fuser, facts[i].user_id) &&
             ds__pgarr_add_int8(&fid, ids[i]) &&
             ds__pgarr_add_int4(&flist, best_list);
        assigned++;
    }
    if (st == DS_OK && !ok)
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    if (st == DS_OK && assigned > 0) {
        ds__bind u;
        ds__bind_init(&u);
        ds__bind_array(&u, &fuser, DS_OID_INT8_ARRAY);
        ds__bind_array(&u, &fid, DS_OID_INT8_ARRAY);
        ds__bind_array(&u, &flist, DS_OID_INT4_ARRAY);
        PGresult *w = ds__memory_exec(c, &ivf_stmts[I_SET_LISTS], &u, err);
        ds__bind_free(&u);
        if (!w)
            st = err->code;
        PQclear(w);
    }
    ds__pgarr_free(&fuser);
    ds__pgarr_free(&fid);
    ds__pgarr_free(&flist);
    ds__free(cent);
    ds__free(unit);
    ds__free(owner);
    ds__free(list);
    return st;
}

/* ---- maintenance ------------------------------------------------------------ */

typedef struct maint {
    ds_memory *mem;
    ds_conn *c;
    bool pgv;
    ds__progress *prog;
    char item[48];
    size_t moved; /* facts given a list */
} maint;

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* The ids of `user`'s facts whose list is NULL or outside lo..hi, sorted. */
static ds_status user_ids(maint *m, int64_t user, int32_t lo, int32_t hi,
                          int64_t **out, size_t *n, ds_error *err) {
    *out = NULL;
    *n = 0;
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user);
    ds__bind_int32(&p, lo);
    ds__bind_int32(&p, hi);
    PGresult *r = ds__memory_exec(m->c, &ivf_stmts[I_USER_IDS], &p, err);
    if (!r)
        return err->code;
    size_t rows = (size_t)PQntuples(r);
    int64_t *ids = ds__calloc(rows ? rows : 1, sizeof *ids);
    if (!ids) {
        PQclear(r);
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    for (size_t i = 0; i < rows; i++)
        ids[i] = ds__memory_int8(r, (int)i, 0);
    PQclear(r);
    qsort(ids, rows, sizeof *ids, ds__int64_cmp);
    *out = ids;
    *n = rows;
    return DS_OK;
}

/* The unit embeddings of `n` facts (up to BATCH) into v (n x dim) and
 * their ids into got_ids, in the order the server returns them; *got is
 * how many still exist. */
static ds_status fetch_vectors(maint *m, int64_t user, const int64_t *ids,
                               size_t n, float *v, int64_t *got_ids,
                               size_t *got, ds_error *err) {
    size_t dim = m->mem->dim;
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user);
    ds__bind_int8_array(&p, ids, n);
    PGresult *r = ds__memory_exec(
        m->c,
        m->pgv ? &ds__memory_pgvector_stmts[P_EMBEDDINGS]
               : &ds__memory_fallback_stmts[F_EMBEDDINGS],
        &p, err);
    ds__bind_free(&p);
    if (!r)
        return err->code;
    *got = 0;
    ds_status st = DS_OK;
    for (int i = 0; i < PQntuples(r) && (size_t)i < n; i++) {
        const char *val = PQgetvalue(r, i, 1);
        int len = PQgetlength(r, i, 1);
        float *out = v + *got * dim;
        bool ok;
        if (m->pgv) {
            ok = ds__vec_from_pgvector(val, len, dim, out);
        } else {
            ok = (size_t)len == 4 * dim;
            if (ok)
                ds__vec_from_le((const unsigned char *)val, dim, out);
        }
        if (!ok) {
            st = ds__error_set(err, DS_ERR_SCHEMA,
                               "memory fact %lld: embedding is not a "
                               "%zu-dimension vector",
                               (long long)ds__memory_int8(r, i, 0), dim);
            break;
        }
        got_ids[*got] = ds__memory_int8(r, i, 0);
        (*got)++;
    }
    PQclear(r);
    return st;
}

static void normalize(float *v, size_t dim) {
    double s = 0;
    for (size_t i = 0; i < dim; i++)
        s += (double)v[i] * v[i];
    if (s <= 0)
        return;
    s = 1.0 / sqrt(s);
    for (size_t i = 0; i < dim; i++)
        v[i] = (float)(v[i] * s);
}

/* Spherical k-means of the `s` unit vectors x into `lists` centroids c;
 * count[l] is how many of x are nearest to c[l] at the end. */
static ds_status kmeans(const float *x, size_t s, size_t dim, size_t lists,
                        uint64_t seed, float *c, int32_t *count,
                        float *cohesion, ds_error *err) {
    size_t *of = ds__calloc(s, sizeof *of);
    float *sim = ds__calloc(s, sizeof *sim);
    double *acc = ds__calloc(lists * dim, sizeof *acc);
    if (!of || !sim || !acc) {
        ds__free(of);
        ds__free(sim);
        ds__free(acc);
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    for (size_t l = 0; l < lists; l++) /* x is in random order */
        memcpy(c + l * dim, x + (l * s / lists) * dim, dim * sizeof *c);
    for (int it = 0; it <= KMEANS_ITERATIONS; it++) {
        memset(count, 0, lists * sizeof *count);
        for (size_t i = 0; i < s; i++) {
            of[i] = nearest(c, lists, x + i * dim, dim, &sim[i]);
            count[of[i]]++;
        }
        if (it == KMEANS_ITERATIONS) {
            memset(cohesion, 0, lists * sizeof *cohesion);
            for (size_t i = 0; i < s; i++)
                cohesion[of[i]] += sim[i];
            for (size_t l = 0; l < lists; l++)
                cohesion[l] = count[l] ? cohesion[l] / (float)count[l] : 1;
            break;
        }
        memset(acc, 0, lists * dim * sizeof *acc);
        for (size_t i = 0; i < s; i++) {
            double *a = acc + of[i] * dim;
            const float *p = x + i * dim;
            for (size_t j = 0; j < dim; j++)
                a[j] += p[j];
        }
        for (size_t l = 0; l < lists; l++) {
            float *cl = c + l * dim;
            if (count[l] == 0) {
                /* an empty list restarts at the point farthest from its
                 * centroid */
                size_t far = (size_t)(rng_next(&seed) % s);
                for (size_t i = 0; i < s; i++)
                    if (sim[i] < sim[far])
                        far = i;
                memcpy(cl, x + far * dim, dim * sizeof *cl);
                sim[far] = 2; /* not chosen twice */
                continue;
            }
            for (size_t j = 0; j < dim; j++)
                cl[j] = (float)acc[l * dim + j];
            normalize(cl, dim);
        }
    }
    ds__free(of);
    ds__free(sim);
    ds__free(acc);
    return DS_OK;
}

/* Moves `ids` to their nearest of the `lists` centroids (ids base..) in
 * batches, each one short statement; progress after each. */
static ds_status assign_ids(maint *m, int64_t user, const int64_t *ids,
                            size_t n, const float *c, const int32_t *list_ids,
                            size_t lists, ds_error *err) {
    size_t dim = m->mem->dim;
    float *v = ds__calloc(BATCH * dim, sizeof *v);
    int64_t *got_ids = ds__calloc(BATCH, sizeof *got_ids);
    int32_t *to = ds__calloc(BATCH, sizeof *to);
    ds_status st = DS_OK;
    if (!v || !got_ids || !to)
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    for (size_t at = 0; st == DS_OK && at < n; at += BATCH) {
        size_t take = n - at < BATCH ? n - at : BATCH, got;
        st = fetch_vectors(m, user, ids + at, take, v, got_ids, &got, err);
        if (st != DS_OK || got == 0)
            continue;
        for (size_t i = 0; i < got; i++)
            to[i] = list_ids[nearest(c, lists, v + i * dim, dim, NULL)];
        m->moved += got;
        ds__pgarr au, ai, al;
        ds__pgarr_init(&au, DS_OID_INT8);
        ds__pgarr_init(&ai, DS_OID_INT8);
        ds__pgarr_init(&al, DS_OID_INT4);
        bool ok = true;
        for (size_t i = 0; ok && i < got; i++)
            ok = ds__pgarr_add_int8(&au, user) &&
                 ds__pgarr_add_int8(&ai, got_ids[i]) &&
                 ds__pgarr_add_int4(&al, to[i]);
        ds__bind p;
        ds__bind_init(&p);
        ds__bind_array(&p, &au, DS_OID_INT8_ARRAY);
        ds__bind_array(&p, &ai, DS_OID_INT8_ARRAY);
        ds__bind_array(&p, &al, DS_OID_INT4_ARRAY);
        ds__pgarr_free(&au);
        ds__pgarr_free(&ai);
        ds__pgarr_free(&al);
        PGresult *r = ok ? ds__memory_exec(m->c, &ivf_stmts[I_SET_LISTS], &p,
                                           err)
                         : NULL;
        ds__bind_free(&p);
        if (!ok)
            st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
        else if (!r)
            st = err->code;
        PQclear(r);
        if (st == DS_OK)
            st = ds__progress_report(m->prog, m->item, "assign", "facts",
                                     (int64_t)(at + take), (int64_t)n,
                                     "run ds_memory_maintain() again", err);
    }
    ds__free(v);
    ds__free(got_ids);
    ds__free(to);
    return st;
}

static ds_status exec_user(maint *m, int which, int64_t user, int32_t arg,
                           bool with_arg, PGresult **out, ds_error *err) {
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user);
    if (with_arg)
        ds__bind_int32(&p, arg);
    PGresult *r = ds__memory_exec(m->c, &ivf_stmts[which], &p, err);
    if (!r)
        return err->code;
    if (out)
        *out = r;
    else
        PQclear(r);
    return DS_OK;
}

/* How many lists `facts` facts are clustered into: about their square root. */
static size_t list_count(size_t facts) {
    size_t lists = (size_t)lround(sqrt((double)facts));
    if (lists < 1)
        lists = 1;
    if (lists > MAX_LISTS)
        lists = MAX_LISTS;
    return lists;
}

/* Reads the vectors of a random sample of `s` of the `n` ids into `x`
 * (partial Fisher-Yates on the copy `pick`); `*have` counts those read. */
static ds_status sample_vectors(maint *m, int64_t user, const int64_t *ids,
                                size_t n, size_t s, int64_t *pick, float *x,
                                int64_t *got_ids, uint64_t *seed,
                                size_t *have, ds_error *err) {
    size_t dim = m->mem->dim;
    ds_status st = DS_OK;
    memcpy(pick, ids, n * sizeof *pick);
    for (size_t i = 0; i < s; i++) {
        size_t j = i + (size_t)(rng_next(seed) % (n - i));
        int64_t t = pick[i];
        pick[i] = pick[j];
        pick[j] = t;
    }
    for (size_t at = 0; st == DS_OK && at < s; at += BATCH) {
        size_t take = s - at < BATCH ? s - at : BATCH, got;
        st = fetch_vectors(m, user, pick + at, take, x + *have * dim,
                           got_ids, &got, err);
        *have += got;
    }
    return st;
}

/* The first id of the new lists: above every list of `user`, or 0 when
 * ids would wrap. */
static ds_status new_list_base(maint *m, int64_t user, size_t lists,
                               int32_t *base, ds_error *err) {
    PGresult *r = NULL;
    ds_status st = exec_user(m, I_MAX_LIST, user, 0, false, &r, err);
    if (st == DS_OK) {
        *base = get_int4(r, 0, 0) + 1;
        PQclear(r);
        if (*base > INT32_MAX - (int32_t)lists - 1)
            *base = 0; /* ids wrapped: start again (the old are dropped
                        * after the move as "not the new ones") */
    }
    return st;
}

/* Writes the new lists base.. (centroids, estimated sizes out of `n` facts
 * from the `have` sampled, cohesion) and fills `list_ids`. */
static ds_status insert_lists(maint *m, int64_t user, size_t n, size_t have,
                              size_t lists, int32_t base, const float *c,
                              const int32_t *count, float *cohesion,
                              int32_t *list_ids, ds_error *err) {
    size_t dim = m->mem->dim;
    ds_status st = DS_OK;
    ds__pgarr li, lc, lf;
    ds__pgarr_init(&li, DS_OID_INT4);
    ds__pgarr_init(&lc, DS_OID_BYTEA);
    ds__pgarr_init(&lf, DS_OID_INT4);
    unsigned char *le = ds__malloc(4 * dim);
    bool ok = le != NULL;
    for (size_t l = 0; ok && l < lists; l++) {
        list_ids[l] = base + (int32_t)l;
        ds__vec_to_le(c + l * dim, dim, le);
        double est = (double)count[l] * (double)n / (double)have;
        ok = ds__pgarr_add_int4(&li, list_ids[l]) &&
             ds__pgarr_add(&lc, le, 4 * dim) &&
             ds__pgarr_add_int4(&lf, (int32_t)lround(est));
    }
    ds__free(le);
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user);
    ds__bind_array(&p, &li, DS_OID_INT4_ARRAY);
    ds__bind_array(&p, &lc, DS_OID_BYTEA_ARRAY);
    ds__bind_array(&p, &lf, DS_OID_INT4_ARRAY);
    for (size_t l = 0; l < lists; l++)
        cohesion[l] = fmaxf(-1, fminf(1, cohesion[l]));
    ds__bind_float4_array(&p, cohesion, lists);
    ds__pgarr_free(&li);
    ds__pgarr_free(&lc);
    ds__pgarr_free(&lf);
    PGresult *r = ok ? ds__memory_exec(m->c, &ivf_stmts[I_INSERT_LISTS],
                                       &p, err)
                     : NULL;
    ds__bind_free(&p);
    if (!ok)
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    else if (!r)
        st = err->code;
    PQclear(r);
    return st;
}

/* Moves every fact to the new lists, then those written meanwhile to an
 * old list, and drops the old lists; `*ids`, `*n` are reused. */
static ds_status move_to_new_lists(maint *m, int64_t user, int64_t **ids,
                                   size_t *n, const float *c,
                                   const int32_t *list_ids, size_t lists,
                                   int32_t base, ds_error *err) {
    ds_status st = assign_ids(m, user, *ids, *n, c, list_ids, lists, err);
    if (st == DS_OK) {
        ds__free(*ids);
        *ids = NULL;
        st = user_ids(m, user, base, base + (int32_t)lists - 1, ids, n, err);
    }
    if (st == DS_OK && *n > 0)
        st = assign_ids(m, user, *ids, *n, c, list_ids, lists, err);
    if (st == DS_OK) {
        /* the old lists: below base, or above the new when ids wrapped */
        PGresult *r = NULL;
        st = exec_user(m, I_DROP_OLD, user, base, true, &r, err);
        PQclear(r);
    }
    return st;
}

/* Clusters `user` afresh: new lists beside the old, facts moved, old
 * lists dropped. */
static ds_status rebuild(maint *m, int64_t user, size_t facts,
                         ds_error *err) {
    size_t dim = m->mem->dim;
    size_t lists = list_count(facts);
    int64_t *ids;
    size_t n;
    ds_status st = user_ids(m, user, INT32_MAX, INT32_MAX, &ids, &n, err);
    if (st != DS_OK)
        return st;
    if (n < lists) {
        ds__free(ids);
        return DS_OK;
    }
    /* a random sample (partial Fisher-Yates on a copy), seeded by user */
    size_t s = lists * SAMPLE_PER_LIST < n ? lists * SAMPLE_PER_LIST : n;
    int64_t *pick = ds__calloc(n, sizeof *pick);
    float *x = ds__calloc(s * dim, sizeof *x);
    float *c = ds__calloc(lists * dim, sizeof *c);
    int32_t *count = ds__calloc(lists, sizeof *count);
    float *cohesion = ds__calloc(lists, sizeof *cohesion);
    int32_t *list_ids = ds__calloc(lists, sizeof *list_ids);
    int64_t *got_ids = ds__calloc(BATCH, sizeof *got_ids);
    if (!pick || !x || !c || !count || !cohesion || !list_ids || !got_ids)
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    uint64_t seed = (uint64_t)user * 0x9E3779B97F4A7C15ull + 1;
    size_t have = 0;
    if (st == DS_OK)
        st = sample_vectors(m, user, ids, n, s, pick, x, got_ids, &seed,
                            &have, err);
    if (st == DS_OK && have < lists)
        goto done; /* facts deleted meanwhile: next time */
    if (st == DS_OK)
        st = kmeans(x, have, dim, lists, seed, c, count, cohesion, err);
    int32_t base = 0;
    if (st == DS_OK)
        st = new_list_base(m, user, lists, &base, err);
    if (st == DS_OK)
        st = insert_lists(m, user, n, have, lists, base, c, count, cohesion,
                          list_ids, err);
    /* every fact, then those written meanwhile to an old list */
    if (st == DS_OK)
        st = move_to_new_lists(m, user, &ids, &n, c, list_ids, lists, base,
                               err);
done:
    ds__free(ids);
    ds__free(pick);
    ds__free(x);
    ds__free(c);
    ds__free(count);
    ds__free(cohesion);
    ds__free(list_ids);
    ds__free(got_ids);
    return st;
}

/* Gives the facts without a list (or whose list is gone) their nearest. */
static ds_status assign_rest(maint *m, int64_t user, ds_error *err) {
    size_t dim = m->mem->dim;
    PGresult *r = NULL;
    ds_status st = exec_user(m, I_LISTS, user, 0, false, &r, err);
    if (st != DS_OK)
        return st;
    size_t rows = (size_t)PQntuples(r), lists = 0;
    float *c = ds__calloc((rows ? rows : 1) * dim, sizeof *c);
    int32_t *list_ids = ds__calloc(rows ? rows : 1, sizeof *list_ids);
    int32_t lo = INT32_MAX, hi = -1;
    if (!c || !list_ids)
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    for (size_t i = 0; st == DS_OK && i < rows; i++) {
        int32_t id = get_int4(r, (int)i, 0);
        if (id < lo)
            lo = id;
        if (id > hi)
            hi = id;
        if ((size_t)PQgetlength(r, (int)i, 1) != 4 * dim)
            continue;
        list_ids[lists] = id;
        ds__vec_from_le((const unsigned char *)PQgetvalue(r, (int)i, 1), dim,
                        c + lists * dim);
        lists++;
    }
    PQclear(r);
    int64_t *ids = NULL;
    size_t n = 0;
    if (st == DS_OK && lists > 0)
        st = user_ids(m, user, lo, hi, &ids, &n, err);
    if (st == DS_OK && n > 0)
        st = assign_ids(m, user, ids, n, c, list_ids, lists, err);
    ds__free(ids);
    ds__free(c);
    ds__free(list_ids);
    return st;
}

DS_EXPORT void ds_memory_maintain_options_init(ds_memory_maintain_options *o) {
    if (o) {
        memset(o, 0, sizeof *o);
        o->size = sizeof *o;
    }
}

DS_EXPORT ds_status ds_memory_maintain(ds_memory *mem,
                                       const ds_memory_maintain_options *opts,
                                       size_t *clustered, ds_error *err) {
    if (clustered)
        *clustered = 0;
    DS_CHECK_ARG(err, mem, "mem is NULL");
    ds_memory_maintain_options o;
    ds_status checked = DS__IN(opts, &o, ds_memory_maintain_options, err);
    if (checked != DS_OK)
        return checked;
    DS_CHECK_ARG(err, o.user_id >= 0, "user_id must be 0 (all) or positive");
    DS_CHECK_ARG(err, o.min_facts >= 0 && o.min_facts <= INT32_MAX,
                 "min_facts must be 0 (the default) to 2147483647");
    if (o.min_facts == 0)
        o.min_facts = DS_MEMORY_IVF_MIN_FACTS;
    if (mem->dim > DS_SKETCH_INDEX_MAX_DIM)
        return DS_OK; /* searches read sketches from the table: no lists */
    ds__progress prog;
    ds__progress_init(&prog, "memory_maintain", o.progress, o.progress_ud);
    maint m = {.mem = mem,
               .pgv = ds__memory_state_get(mem).backend ==
                      DS_VECTOR_BACKEND_PGVECTOR,
               .prog = &prog};
    ds_status st = ds_pool_acquire(mem->pool, &m.c, err);
    if (st != DS_OK)
        return st;
    ds_error local = {0};
    ds__bind p;
    ds__bind_init(&p);
    if (o.user_id)
        ds__bind_int64(&p, o.user_id);
    ds__bind_int64(&p, o.min_facts);
    PGresult *users = ds__memory_exec(
        m.c, &ivf_stmts[o.user_id ? I_USER : I_USERS], &p, &local);
    st = users ? DS_OK : local.code;
    size_t done = 0;
    for (int i = 0; st == DS_OK && users && i < PQntuples(users); i++) {
        int64_t user = ds__memory_int8(users, i, 0);
        int64_t facts = ds__memory_int8(users, i, 1);
        int64_t lists = ds__memory_int8(users, i, 3);
        int64_t built = ds__memory_int8(users, i, 4);
        int64_t largest = get_int4(users, i, 5);
        snprintf(m.item, sizeof m.item, "user %lld", (long long)user);
        if (lists > 0 && (double)facts * DRIFT < (double)o.min_facts) {
            st = exec_user(&m, I_DROP_ALL, user, 0, false, NULL, &local);
            continue;
        }
        bool again = lists == 0 || o.rebuild ||
                     (double)facts >= DRIFT * (double)built ||
                     (double)facts * DRIFT <= (double)built ||
                     (double)largest > UNBALANCED * (double)built / (double)lists;
        if (again && facts >= o.min_facts) {
            st = rebuild(&m, user, (size_t)facts, &local);
            done += st == DS_OK;
        } else if (lists > 0) {
            st = assign_rest(&m, user, &local);
        }
    }
    PQclear(users);
    size_t packed = 0; /* and their codes packed (blocks.c) */
    if (st == DS_OK)
        st = ds__blocks_maintain(mem, m.c, o.user_id, &packed, &local);
    if (st == DS_OK && o.reindex && m.moved > 0) {
        /* one statement, outside any transaction; builds beside the old
         * index, so reads and writes go on */
        PGresult *r = PQexec(ds_pool_conn_pg(m.c),
                             "REINDEX INDEX CONCURRENTLY memory_facts_ivf_idx");
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            st = ds__error_set(&local, DS_ERR_DB, "memory: reindex: %s",
                               PQresultErrorMessage(r));
        PQclear(r);
    }
    ds_pool_release(m.c);
    if (st != DS_OK && strcmp(local.sqlstate, "42P01") == 0) {
        local.code = st = DS_ERR_SCHEMA;
        ds__error_prefix(&local, "the memory lists are missing (run the "
                                 "migrations: sql/0008_memory_ivf_lists)");
    }
    if (clustered)
        *clustered = done;
    if (done > 0)
        ds__log(DS_LOG_INFO, MODULE, "clustered the facts of %zu users", done);
    if (packed > 0)
        ds__log(DS_LOG_INFO, MODULE, "packed the codes of %zu users", packed);
    return st == DS_OK ? DS_OK : ds__memory_fail(&local, err);
}
