/*
 * The coarse code of a unit vector, the first stage of a large user's
 * search (sql/0006_memory_coarse_codes): 2 bits a dimension, a sign and
 * whether the magnitude is at least THRESHOLD / sqrt(dim) (the component
 * of a unit vector with even spread), and two float32 levels, the mean
 * magnitude of each class. Its dot product with a query approximates the
 * cosine well enough to choose candidates (the bound-checked sketch and the
 * exact vector decide among them); docs/memory.md has the recall measured.
 *
 * Layout: float32 small level, float32 large level (little-endian), then
 * byte g holds dimensions 4g..4g+3, two bits each from the low end: bit 0
 * set for a negative value, bit 1 set for a large one.
 */
#include <math.h>

#include "memory/memory_internal.h"

#define THRESHOLD 0.8

static void put_le_float(unsigned char *p, float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(b >> (8 * i));
}

static float get_le_float(const unsigned char *p) {
    uint32_t b = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                 (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

void ds__code_build(const float *unit, size_t dim, unsigned char *out) {
    float t = (float)(THRESHOLD / sqrt((double)dim));
    double sum[2] = {0, 0};
    size_t count[2] = {0, 0};
    memset(out + 8, 0, DS_CODE_BYTES(dim) - 8);
    for (size_t i = 0; i < dim; i++) {
        float a = fabsf(unit[i]);
        int big = a >= t;
        unsigned bits = (unit[i] < 0 ? 1u : 0u) | (big ? 2u : 0u);
        out[8 + i / 4] |= (unsigned char)(bits << (2 * (i % 4)));
        sum[big] += a;
        count[big]++;
    }
    put_le_float(out, count[0] ? (float)(sum[0] / (double)count[0]) : 0);
    put_le_float(out + 4, count[1] ? (float)(sum[1] / (double)count[1]) : 0);
}

bool ds__code_plausible(const unsigned char *code, size_t dim) {
    float lo = get_le_float(code), hi = get_le_float(code + 4);
    return isfinite(lo) && isfinite(hi) && lo >= 0 && hi >= 0 && lo <= 1 &&
           hi <= 1 && (dim % 4 == 0 || (code[8 + dim / 4] >> (2 * (dim % 4))) == 0);
}

ds_status ds__code_table_new(const float *q, size_t dim, float **out,
                             ds_error *err) {
    size_t groups = (dim + 3) / 4;
    float *t = ds__calloc(groups * 512, sizeof *t);
    *out = t;
    if (!t)
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    for (size_t g = 0; g < groups; g++) {
        float *row = t + g * 512;
        for (unsigned b = 0; b < 256; b++) {
            float small = 0, large = 0;
            for (size_t j = 0; j < 4 && 4 * g + j < dim; j++) {
                unsigned bits = (b >> (2 * j)) & 3u;
                float v = bits & 1u ? -q[4 * g + j] : q[4 * g + j];
                if (bits & 2u)
                    large += v;
                else
                    small += v;
            }
            row[2 * b] = small;
            row[2 * b + 1] = large;
        }
    }
    return DS_OK;
}

float ds__code_dot(const float *table, const unsigned char *code, size_t dim) {
    size_t groups = (dim + 3) / 4;
    const unsigned char *c = code + 8;
    float small = 0, large = 0;
    for (size_t g = 0; g < groups; g++) {
        const float *e = table + g * 512 + 2 * c[g];
        small += e[0];
        large += e[1];
    }
    return small * get_le_float(code) + large * get_le_float(code + 4);
}

/* ---- choosing a large user's candidates ------------------------------------ */

/* Candidates kept: at least MIN_CANDIDATES, and 1 in SHARE of the user's
 * facts, and PER_RESULT per fact asked for. Measured (docs/memory.md) on
 * clustered data: the exact top 10 ranked within the first 475 by code at
 * 10,000 facts and the first 1,784 at 100,000 (1,718 over 900 more
 * queries of three users, 238 of them off-topic, the worst kind): 2,500
 * at 100,000 keeps 1.4 times that. A candidate costs an index probe,
 * several times a fact of the exact scan, so users with at most
 * mem->code_crossover times the candidates (the memory_code_crossover
 * setting, measured in docs/memory.md "Where each stage starts") are
 * scanned exactly. */
#define MIN_CANDIDATES 1000
#define SHARE 40
#define PER_RESULT 4

size_t ds__code_keep(size_t rows, size_t n) {
    size_t keep = rows / SHARE;
    if (keep < MIN_CANDIDATES)
        keep = MIN_CANDIDATES;
    if (keep < PER_RESULT * n)
        keep = PER_RESULT * n;
    return keep;
}

/* Wirth's selection (see memory_internal.h). */
float ds__select_desc(float *v, size_t n, size_t k) {
    long l = 0, m = (long)n - 1, kk = (long)k;
    while (l < m) {
        float x = v[kk];
        long i = l, j = m;
        do {
            while (v[i] > x)
                i++;
            while (x > v[j])
                j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        } while (i <= j);
        if (j < kk)
            l = i;
        if (kk < i)
            m = j;
    }
    return v[kk];
}

/* Each row's approximate score; INFINITY for a row without a usable code
 * (an older row, or one damaged in the table): a candidate whatever. */
static ds_status score_rows(const PGresult *r, const float *q, size_t dim,
                            float *score, float *sorted, ds_error *err) {
    float *table;
    ds_status st = ds__code_table_new(q, dim, &table, err);
    for (int i = 0; st == DS_OK && i < PQntuples(r); i++) {
        const unsigned char *code = (const unsigned char *)PQgetvalue(r, i, 1);
        bool usable = !PQgetisnull(r, i, 1) &&
                      (size_t)PQgetlength(r, i, 1) == DS_CODE_BYTES(dim) &&
                      ds__code_plausible(code, dim);
        score[i] = usable ? ds__code_dot(table, code, dim) : INFINITY;
        if (!isfinite(score[i]))
            score[i] = INFINITY;
        sorted[i] = score[i];
    }
    ds__free(table);
    return st;
}

/* Binds (user, kinds, ids) of the rows scoring at least floor_score, in
 * the scan's (kind, id) order; false when out of memory. */
static size_t bind_chosen(const PGresult *r, const float *score,
                          float floor_score, int64_t user_id, ds__bind *next,
                          bool *ok) {
    ds__pgarr kinds, ids;
    ds__pgarr_init(&kinds, DS_OID_TEXT);
    ds__pgarr_init(&ids, DS_OID_INT8);
    size_t got = 0;
    *ok = true;
    for (int i = 0; *ok && i < PQntuples(r); i++) {
        if (score[i] < floor_score)
            continue;
        *ok = ds__pgarr_add(&kinds, PQgetvalue(r, i, 2),
                            (size_t)PQgetlength(r, i, 2)) &&
              ds__pgarr_add_int8(&ids, ds__memory_int8(r, i, 0));
        got++;
    }
    ds__bind_int64(next, user_id);
    ds__bind_array(next, &kinds, DS_OID_TEXT_ARRAY);
    ds__bind_array(next, &ids, DS_OID_INT8_ARRAY);
    ds__pgarr_free(&kinds);
    ds__pgarr_free(&ids);
    return got;
}

size_t ds__code_exact_max_facts(const ds_memory *mem, size_t n) {
    /* below SHARE * MIN_CANDIDATES facts the share rule keeps no more */
    size_t keep = MIN_CANDIDATES;
    if (keep < PER_RESULT * n)
        keep = PER_RESULT * n;
    size_t max = (size_t)mem->code_crossover * keep;
    return max > (size_t)SHARE * MIN_CANDIDATES ? (size_t)SHARE * MIN_CANDIDATES
                                                : max;
}

ds_status ds__code_candidates(ds_memory *mem, ds_conn *c, int64_t user_id,
                              const float *q, const char *kind, size_t n,
                              ds__bind *next, bool *everyone, ds_error *err) {
    *everyone = false;
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_text(&p, kind);
    PGresult *r = ds__memory_exec(c, &ds__memory_stmts[M_CODES], &p, err);
    if (!r)
        return err->code;
    size_t rows = (size_t)PQntuples(r);
    size_t keep = ds__code_keep(rows, n);
    /* keep >= rows: the codes would keep everybody (and the selection
     * below needs keep <= rows), as with memory_code_crossover 0 */
    if (rows <= (size_t)mem->code_crossover * keep || keep >= rows) {
        PQclear(r);
        *everyone = true;
        return DS_OK;
    }
    float *score = ds__calloc(rows, sizeof *score);
    float *sorted = ds__calloc(rows, sizeof *sorted);
    ds_status st = DS_OK;
    if (!score || !sorted)
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    else
        st = score_rows(r, q, mem->dim, score, sorted, err);
    if (st == DS_OK) {
        float floor_score = ds__select_desc(sorted, rows, keep - 1);
        bool ok;
        size_t got = bind_chosen(r, score, floor_score, user_id, next, &ok);
        if (!ok)
            st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
        else if (got > rows / 2)
            /* many rows without a code (written before sql/0006, until
             * ds_memory_fill_sketches() gives them one): probing them one
             * by one would cost more than the exact scan */
            *everyone = true;
    }
    PQclear(r);
    ds__free(score);
    ds__free(sorted);
    return st;
}
