/*
 * A small user's hybrid search: reciprocal rank fusion of the exact
 * vector list of the n best facts with the text list, reading as few exact
 * vectors as that answer needs.
 *
 * The fused score depends only on ranks. Every fact's sketch bounds its
 * score (lo <= score <= hi), so it bounds its vector rank too: at least 1 +
 * the facts whose lower bound is above its upper bound (and that surely
 * pass min_similarity), at most 1 + the others whose upper bound reaches
 * its lower bound (and that may pass). From those, each fact's fused score
 * has bounds; a fact whose upper bound is below the k-th best lower bound
 * cannot be in the fused top k. Each of the others ("maybe") needs its
 * exact vector rank, so its exact score and the exact scores of the facts
 * whose bounds overlap its own: every other fact lies wholly above or
 * below it. Compared with reading the exact n best (n = 40 for k = 10),
 * this reads only the neighbourhoods of the facts that can make the
 * answer, and the rows of those facts only.
 */
#include <math.h>
#include <stdlib.h>

#include "memory/memory_internal.h"

void ds__fusion_free(ds__fusion *f) {
    ds__free(f->text_rank);
    ds__free(f->vec_chance);
    ds__free(f->exact);
    ds__free(f->maybe);
    ds__free(f->extra);
    *f = (ds__fusion){0};
}

static int float_cmp(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int double_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* How many of the sorted v[0..n) are above x (strictly, or at least x). */
static size_t count_above(const float *v, size_t n, float x, bool or_equal) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (or_equal ? v[mid] < x : v[mid] <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return n - lo;
}

static double rrf(int rank) { return rank ? 1.0 / (DS_RRF_K + rank) : 0; }

double ds__rrf_fused(int vector_rank, int text_rank) {
    double s = 0;
    if (vector_rank)
        s += rrf(vector_rank);
    if (text_rank)
        s += rrf(text_rank);
    return s;
}

/* Text ranks of b's facts; the text matches b lacks go to f->extra. The
 * text list is short (n), the facts many: the list is sorted and each
 * fact looked up in it. */
static ds_status place_text(ds__fusion *f, const int64_t *text_ids,
                            size_t ntext, ds_error *err) {
    const ds__fact_bounds *b = f->b;
    /* (id, rank), then whether a fact holds it */
    int64_t(*index)[3] = ds__calloc(ntext ? ntext : 1, sizeof *index);
    f->extra = ds__calloc(ntext ? ntext : 1, sizeof *f->extra);
    if (!index || !f->extra) {
        ds__free(index);
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    for (size_t t = 0; t < ntext; t++) {
        index[t][0] = text_ids[t];
        index[t][1] = (int64_t)t + 1;
    }
    qsort(index, ntext, sizeof *index, ds__int64_cmp);
    for (size_t i = 0; ntext && i < b->n; i++) {
        int64_t key[3] = {b->ids[i], 0, 0};
        int64_t(*at)[3] =
            bsearch(key, index, ntext, sizeof *index, ds__int64_cmp);
        if (at) {
            f->text_rank[i] = (int)(*at)[1];
            (*at)[2] = 1;
        }
    }
    for (size_t t = 0; t < ntext; t++)
        if (!index[t][2]) /* not among the sketches of the same snapshot */
            f->extra[f->nextra++] =
                (ds__ranked){index[t][0], ds__rrf_fused(0, (int)index[t][1]),
                             0, (int)index[t][1]};
    ds__free(index);
    return DS_OK;
}

/* Marks the facts the fused top k may hold (f->maybe) from each fact's
 * fused-score bounds, fhi and flo (scratch, b->n each). Its vector rank
 * is at least 1 + the facts whose lower bound is above its upper bound
 * (and that surely pass min_similarity) and at most 1 + the others whose
 * upper bound reaches its lower bound (and that may pass); only ranks up
 * to n matter, so only the n best lower bounds and the n + 2 best upper
 * bounds are kept (a heap each, as the vector search's pruning). Bounds
 * are compared in double, as the exact scores are. */
static ds_status choose_maybe(ds__fusion *f, size_t ntext, bool use_min,
                              double min_sim, double *fhi, double *flo,
                              ds_error *err) {
    const ds__fact_bounds *b = f->b;
    size_t n = b->n, cap_lo = f->n, cap_hi = f->n + 2;
    float *top_lo = ds__calloc(cap_lo, sizeof *top_lo);
    float *top_hi = ds__calloc(cap_hi, sizeof *top_hi);
    double *sorted = ds__calloc(n + f->nextra + 1, sizeof *sorted);
    f->maybe = ds__calloc(n ? n : 1, sizeof *f->maybe);
    if (!top_lo || !top_hi || !sorted || !f->maybe) {
        ds__free(top_lo);
        ds__free(top_hi);
        ds__free(sorted);
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    size_t nlo = 0, nhi = 0, ranked_vec = 0;
    for (size_t i = 0; i < n; i++) {
        /* a fact with a sketch that surely passes is surely ranked */
        if (isfinite(b->lo[i]) && (!use_min || b->lo[i] >= min_sim)) {
            ranked_vec++;
            ds__topn_push(top_lo, &nlo, cap_lo, b->lo[i]);
        }
        if (!use_min || b->hi[i] >= min_sim)
            ds__topn_push(top_hi, &nhi, cap_hi, b->hi[i]);
    }
    /* once a heap is full, every value above its least is in it */
    bool lo_full = nlo == cap_lo, hi_full = nhi == cap_hi;
    qsort(top_lo, nlo, sizeof *top_lo, float_cmp);
    qsort(top_hi, nhi, sizeof *top_hi, float_cmp);
    size_t ncand = 0;
    for (size_t i = 0; i < n; i++) {
        bool may_pass = !use_min || b->hi[i] >= min_sim;
        bool sure_pass = !use_min || b->lo[i] >= min_sim;
        /* below the n-th best lower bound: n facts surely above */
        size_t best = lo_full && b->hi[i] < top_lo[0]
                          ? f->n + 1
                          : 1 + count_above(top_lo, nlo, b->hi[i], false);
        /* at or below the (n+2)-th best upper bound: n + 1 others may be
         * above */
        size_t worst = hi_full && b->lo[i] <= top_hi[0]
                           ? f->n + 1
                           : 1 + count_above(top_hi, nhi, b->lo[i], true) -
                                 (may_pass ? 1 : 0);
        f->vec_chance[i] = may_pass && best <= f->n;
        bool surely_in = sure_pass && worst <= f->n;
        int tr = f->text_rank[i];
        fhi[i] = ds__rrf_fused(f->vec_chance[i] ? (int)best : 0, tr);
        flo[i] = ds__rrf_fused(surely_in ? (int)worst : 0, tr);
        if (tr || f->vec_chance[i])
            sorted[ncand++] = flo[i];
    }
    for (size_t e = 0; e < f->nextra; e++)
        sorted[ncand++] = f->extra[e].score;
    /* The k-th best fused score is at least the k-th best lower bound,
     * and at least rrf(k) when either list surely reaches rank k: the
     * facts at ranks 1 to k, whoever they are, each score rrf(k) or more.
     * No fact whose upper bound is below that can be in the top k. */
    double floor_score = -INFINITY;
    if (ncand >= (size_t)f->k) {
        qsort(sorted, ncand, sizeof *sorted, double_desc);
        floor_score = sorted[f->k - 1];
    }
    f->by_slots = ranked_vec >= (size_t)f->k || ntext >= (size_t)f->k;
    if (f->by_slots)
        floor_score = fmax(floor_score, rrf(f->k));
    /* the k-th best lower bound of the facts surely in the vector list
     * (k <= n): the k-th best exact score is at least that */
    f->vec_floor = ranked_vec >= (size_t)f->k ? top_lo[nlo - (size_t)f->k]
                                               : -INFINITY;
    for (size_t i = 0; i < n; i++)
        if ((f->text_rank[i] || f->vec_chance[i]) && fhi[i] >= floor_score)
            f->maybe[f->nmaybe++] = i;
    /* extras below the floor are dropped from the plan */
    size_t kept = 0;
    for (size_t e = 0; e < f->nextra; e++)
        if (f->extra[e].score >= floor_score)
            f->extra[kept++] = f->extra[e];
    f->nextra = kept;
    ds__free(top_lo);
    ds__free(top_hi);
    ds__free(sorted);
    return DS_OK;
}

ds_status ds__fusion_plan(ds__fusion *f, const ds__fact_bounds *b,
                          const int64_t *text_ids, size_t ntext, size_t n,
                          int k, bool use_min, double min_sim, ds_error *err) {
    *f = (ds__fusion){.b = b, .n = n, .k = k};
    size_t cap = b->n ? b->n : 1;
    f->text_rank = ds__calloc(cap, sizeof *f->text_rank);
    f->vec_chance = ds__calloc(cap, sizeof *f->vec_chance);
    f->exact = ds__calloc(cap, sizeof *f->exact);
    double *fhi = ds__calloc(cap, sizeof *fhi);
    double *flo = ds__calloc(cap, sizeof *flo);
    ds_status st = DS_OK;
    if (!f->text_rank || !f->vec_chance || !f->exact || !fhi || !flo)
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    if (st == DS_OK)
        st = place_text(f, text_ids, ntext, err);
    if (st == DS_OK)
        st = choose_maybe(f, ntext, use_min, min_sim, fhi, flo, err);
    ds__free(fhi);
    ds__free(flo);
    if (st != DS_OK) {
        ds__fusion_free(f);
        return st;
    }
    /* Each fact that may make the top k through its vector rank needs
     * that rank exact: its own score and those of the facts whose bounds
     * overlap its bounds (and that may pass min_similarity). When the
     * k-th best fused score is at least rrf(k), a fact without a text
     * rank makes the top k only from vector rank k or better: for those,
     * the exact scores of every fact whose upper bound reaches the k-th
     * best lower bound suffice, as for a vector search of k (the facts
     * above any of the k best are among them, and all others lie below
     * the k-th best score). */
    for (size_t i = 0; f->by_slots && i < b->n; i++)
        if (b->hi[i] >= f->vec_floor && (!use_min || b->hi[i] >= min_sim))
            f->exact[i] = true;
    for (size_t m = 0; m < f->nmaybe; m++) {
        size_t i = f->maybe[m];
        if (!f->vec_chance[i] || (f->by_slots && !f->text_rank[i]))
            continue;
        f->exact[i] = true;
        for (size_t j = 0; j < b->n; j++)
            if (b->hi[j] >= b->lo[i] && b->lo[j] <= b->hi[i] &&
                (!use_min || b->hi[j] >= min_sim))
                f->exact[j] = true;
    }
    return DS_OK;
}

ds_status ds__fusion_ids(const ds__fusion *f, int64_t **exact,
                         size_t *nexact, int64_t **rows, size_t *nrows,
                         ds_error *err) {
    *exact = *rows = NULL;
    *nexact = *nrows = 0;
    const ds__fact_bounds *b = f->b;
    size_t ne = 0, nr = 0;
    for (size_t i = 0; i < b->n; i++)
        ne += f->exact[i];
    for (size_t m = 0; m < f->nmaybe; m++)
        nr += !f->exact[f->maybe[m]];
    nr += f->nextra;
    int64_t *e = ne ? ds__calloc(ne, sizeof *e) : NULL;
    int64_t *r = nr ? ds__calloc(nr, sizeof *r) : NULL;
    if ((ne && !e) || (nr && !r)) {
        ds__free(e);
        ds__free(r);
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    ne = nr = 0;
    for (size_t i = 0; i < b->n; i++)
        if (f->exact[i])
            e[ne++] = b->ids[i];
    for (size_t m = 0; m < f->nmaybe; m++)
        if (!f->exact[f->maybe[m]])
            r[nr++] = b->ids[f->maybe[m]];
    for (size_t x = 0; x < f->nextra; x++)
        r[nr++] = f->extra[x].id;
    if (ne)
        qsort(e, ne, sizeof *e, ds__int64_cmp);
    if (nr)
        qsort(r, nr, sizeof *r, ds__int64_cmp);
    *exact = e;
    *nexact = ne;
    *rows = r;
    *nrows = nr;
    return DS_OK;
}

int ds__ranked_by_score(const void *a, const void *b) {
    const ds__ranked *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The exact vector rank of score `s` of fact `id`: the facts without an
 * exact score lie wholly above or below it (the plan read all that
 * overlap; `above` holds the lower bounds of those that may lie above any
 * scored fact), the scored ones are compared as the vector list orders
 * them (score, then id). */
static size_t vector_rank(int64_t id, double s, const float *above,
                          size_t nabove, const int64_t (*scored)[2],
                          const double *scores, size_t nscored) {
    size_t rank = 1;
    for (size_t j = 0; j < nabove; j++)
        rank += above[j] > s;
    for (size_t e = 0; e < nscored; e++) {
        double t = scores[scored[e][1]];
        if (t > s || (t == s && scored[e][0] < id))
            rank++;
    }
    return rank;
}

ds_status ds__fusion_rank(const ds__fusion *f, const int64_t *ids,
                          const double *scores, size_t nscored,
                          ds__ranked **hits, size_t *count, ds_error *err) {
    *hits = NULL;
    *count = 0;
    const ds__fact_bounds *b = f->b;
    int64_t(*scored)[2] = ds__calloc(nscored ? nscored : 1, sizeof *scored);
    float *above = ds__calloc(b->n ? b->n : 1, sizeof *above);
    ds__ranked *all =
        ds__calloc(f->nmaybe + f->nextra ? f->nmaybe + f->nextra : 1,
                   sizeof *all);
    if (!scored || !above || !all) {
        ds__free(scored);
        ds__free(above);
        ds__free(all);
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    double least = INFINITY;
    for (size_t e = 0; e < nscored; e++)
        least = fmin(least, scores[e]);
    size_t nabove = 0;
    for (size_t j = 0; j < b->n; j++)
        if (!f->exact[j] && b->lo[j] > least)
            above[nabove++] = b->lo[j];
    for (size_t e = 0; e < nscored; e++) {
        scored[e][0] = ids[e];
        scored[e][1] = (int64_t)e;
    }
    qsort(scored, nscored, sizeof *scored, ds__int64_cmp);
    size_t n = 0;
    for (size_t m = 0; m < f->nmaybe; m++) {
        size_t i = f->maybe[m];
        int vr = 0;
        int64_t key[2] = {b->ids[i], 0};
        int64_t(*at)[2] = f->vec_chance[i]
                              ? bsearch(key, scored, nscored, sizeof *scored,
                                        ds__int64_cmp)
                              : NULL;
        if (at) {
            size_t rank = vector_rank(b->ids[i], scores[(*at)[1]], above,
                                      nabove, (const int64_t(*)[2])scored,
                                      scores, nscored);
            vr = rank <= f->n ? (int)rank : 0;
        }
        int tr = f->text_rank[i];
        if (vr || tr)
            all[n++] =
                (ds__ranked){b->ids[i], ds__rrf_fused(vr, tr), vr, tr};
    }
    for (size_t x = 0; x < f->nextra; x++)
        all[n++] = f->extra[x];
    ds__free(scored);
    ds__free(above);
    qsort(all, n, sizeof *all, ds__ranked_by_score);
    *hits = all;
    *count = n < (size_t)f->k ? n : (size_t)f->k;
    return DS_OK;
}
