/*
 * Clustered embeddings for memory tests and benchmarks (header-only, so the
 * benchmark uses the very same generator).
 *
 * Uniform random vectors make nearest-neighbour search look easy or hard in
 * misleading ways; memories are not uniform. This is a mixture of gaussian
 * clusters ("topics") on the unit sphere, each with its own spread, and
 * users whose facts come from a few of those topics:
 *
 *   - `ncentres` unit centres, each with a noise level drawn between
 *     CL_SPREAD_MIN and CL_SPREAD_MAX per component (at 384 dimensions a
 *     point's cosine to its centre is then about 0.8 to 0.55);
 *   - a user has CL_TOPICS_MIN to CL_TOPICS_MAX topics, unevenly used (the
 *     i-th topic about twice as often as the last);
 *   - a query is held out (never stored), close to a centre (half the
 *     topic's spread): 3 in 4 on one of the user's topics, 1 in 4 on a topic
 *     the user does not have.
 *
 * Exact top k is computed here by brute force in double precision.
 * Everything is deterministic for a given seed.
 */
#ifndef DS_TESTS_CLUSTERED_H
#define DS_TESTS_CLUSTERED_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CL_SPREAD_MIN 0.035
#define CL_SPREAD_MAX 0.075
#define CL_TOPICS_MIN 20
#define CL_TOPICS_MAX 40

typedef struct cl_rng {
    uint64_t s;
} cl_rng;

static inline uint64_t cl_next(cl_rng *r) {
    /* xorshift64*; a zero state would stay zero */
    if (r->s == 0)
        r->s = 0x9E3779B97F4A7C15ull;
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 2685821657736338717ull;
}

static inline double cl_uniform(cl_rng *r) {
    return (double)(cl_next(r) >> 11) / 9007199254740992.0;
}

static inline double cl_gauss(cl_rng *r) {
    double u = cl_uniform(r), v = cl_uniform(r);
    if (u < 1e-300)
        u = 1e-300;
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

static inline void cl_normalize(float *v, size_t dim) {
    double s = 0;
    for (size_t i = 0; i < dim; i++)
        s += (double)v[i] * v[i];
    s = sqrt(s);
    for (size_t i = 0; i < dim; i++)
        v[i] = (float)(v[i] / s);
}

typedef struct cl_model {
    size_t dim;
    int ncentres;
    float *centres;  /* ncentres x dim, unit */
    double *spread;  /* per-component noise of each centre */
    cl_rng rng;
} cl_model;

/* false when out of memory */
static inline bool cl_model_init(cl_model *m, size_t dim, int ncentres,
                                 uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->dim = dim;
    m->ncentres = ncentres;
    m->rng.s = seed;
    m->centres = malloc((size_t)ncentres * dim * sizeof *m->centres);
    m->spread = malloc((size_t)ncentres * sizeof *m->spread);
    if (!m->centres || !m->spread)
        return false;
    for (int c = 0; c < ncentres; c++) {
        float *v = m->centres + (size_t)c * dim;
        for (size_t i = 0; i < dim; i++)
            v[i] = (float)cl_gauss(&m->rng);
        cl_normalize(v, dim);
        m->spread[c] = CL_SPREAD_MIN +
                       (CL_SPREAD_MAX - CL_SPREAD_MIN) * cl_uniform(&m->rng);
    }
    return true;
}

static inline void cl_model_free(cl_model *m) {
    free(m->centres);
    free(m->spread);
    m->centres = NULL;
    m->spread = NULL;
}

/* A point of topic `c`, its noise scaled by `scale` (1: a stored fact). */
static inline void cl_point(cl_model *m, int c, double scale, float *out) {
    const float *centre = m->centres + (size_t)c * m->dim;
    double s = m->spread[c] * scale;
    for (size_t i = 0; i < m->dim; i++)
        out[i] = centre[i] + (float)(cl_gauss(&m->rng) * s);
    cl_normalize(out, m->dim);
}

/* A user's topics: distinct centres. */
typedef struct cl_user {
    int ntopics;
    int topics[CL_TOPICS_MAX];
} cl_user;

static inline void cl_user_init(cl_model *m, cl_user *u) {
    int span = CL_TOPICS_MAX - CL_TOPICS_MIN + 1;
    u->ntopics = CL_TOPICS_MIN + (int)(cl_next(&m->rng) % (uint64_t)span);
    if (u->ntopics > m->ncentres)
        u->ntopics = m->ncentres;
    for (int t = 0; t < u->ntopics; t++) {
        int c;
        bool taken;
        do {
            c = (int)(cl_next(&m->rng) % (uint64_t)m->ncentres);
            taken = false;
            for (int j = 0; j < t; j++)
                taken |= u->topics[j] == c;
        } while (taken);
        u->topics[t] = c;
    }
}

/* One of the user's facts: topic t weighted 2 - t / ntopics. Returns the
 * centre it was drawn from (a benchmark writes text of that topic). */
static inline int cl_fact_topic(cl_model *m, const cl_user *u, float *out) {
    int t;
    do {
        t = (int)(cl_next(&m->rng) % (uint64_t)u->ntopics);
    } while (cl_uniform(&m->rng) * 2 > 2 - (double)t / u->ntopics);
    cl_point(m, u->topics[t], 1.0, out);
    return u->topics[t];
}

static inline void cl_fact(cl_model *m, const cl_user *u, float *out) {
    (void)cl_fact_topic(m, u, out);
}

/* A held-out query for the user; *on_topic says which kind it is. Returns
 * the centre it is near. */
static inline int cl_query_topic(cl_model *m, const cl_user *u, float *out,
                                 bool *on_topic) {
    bool on = cl_next(&m->rng) % 4 != 0;
    int c;
    if (on) {
        c = u->topics[cl_next(&m->rng) % (uint64_t)u->ntopics];
    } else {
        bool mine;
        do {
            c = (int)(cl_next(&m->rng) % (uint64_t)m->ncentres);
            mine = false;
            for (int t = 0; t < u->ntopics; t++)
                mine |= u->topics[t] == c;
        } while (mine && u->ntopics < m->ncentres);
    }
    if (on_topic)
        *on_topic = on;
    cl_point(m, c, 0.5, out);
    return c;
}

static inline void cl_query(cl_model *m, const cl_user *u, float *out,
                            bool *on_topic) {
    (void)cl_query_topic(m, u, out, on_topic);
}

/*
 * Exact top k among the `n` vectors at `v` (n x dim) for which keep[i] is
 * true (keep NULL: all): indices into v, best first, and their scores.
 * Returns how many (min(k, kept)).
 */
static inline size_t cl_exact_topk(const float *v, size_t n, size_t dim,
                                   const bool *keep, const float *q, size_t k,
                                   size_t *idx, double *scores) {
    size_t got = 0;
    for (size_t i = 0; i < n; i++) {
        if (keep && !keep[i])
            continue;
        const float *x = v + i * dim;
        double s = 0;
        for (size_t j = 0; j < dim; j++)
            s += (double)q[j] * x[j];
        size_t pos;
        if (got < k)
            pos = got++;
        else if (s > scores[k - 1])
            pos = k - 1;
        else
            continue;
        while (pos > 0 && scores[pos - 1] < s) {
            scores[pos] = scores[pos - 1];
            idx[pos] = idx[pos - 1];
            pos--;
        }
        scores[pos] = s;
        idx[pos] = i;
    }
    return got;
}

#endif
