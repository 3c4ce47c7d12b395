/*
 * Packed codes (sql/0009_memory_code_blocks): a large user's coarse codes
 * copied into blocks of BLOCK_FACTS facts, one kind per block, so that the
 * full search of such a user reads a few hundred rows instead of one index
 * entry per fact, and scores them group by group (the query's table row
 * for a group stays in the first-level cache while every fact of the block
 * goes by).
 *
 * Block layout (little-endian):
 *   header   u8 version (1), u8 0, u16 dim, u32 count
 *   ids      count x int64
 *   levels   count x (float32 small, float32 large); small < 0 marks a fact
 *            packed without a usable code: always a candidate
 *   codes    for each group g of 4 dimensions, count bytes (fact i's byte
 *            of group g at g * count + i), as in codes.c
 *
 * What the blocks hold is a copy: every fact of the user with an id up to
 * `upto` when it was packed. Facts written later (ids above it) are read
 * from the code index by kind, as before. A fact deleted since is still in
 * its block: the search notices it when the candidates' sketches come back
 * fewer than asked, and then takes the unpacked codes (search.c);
 * ds_memory_maintain() packs the user again.
 *
 * Why `upto` covers every fact at or below it: the packer reads the id
 * sequence first, waits a moment, then waits until every transaction that
 * had an id at that time has ended, and only then reads the facts. A fact
 * with a smaller id was given it before the sequence was read, and its
 * transaction wrote the row (taking a transaction id) at once, so it has
 * ended by then: committed, and read, or rolled back.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "memory/memory_internal.h"

#define MODULE "memory"
#define BLOCK_FACTS 256
#define BLOCK_VERSION 1
#define HEADER 8
/* Users with at most memory_code_crossover times the fewest candidates
 * (4,000 facts by default) are not packed: their full search is the exact
 * scan. They lose their blocks below half of it. */
#define PACK_FLOOR 1000
/* Packed again when the facts written since reach this share of the
 * packed ones (or BLOCK_FACTS * 4, whichever is more), or any was deleted. */
#define TAIL_SHARE 0.10
#define SETTLE_WAIT_MS 30000

enum {
    B_BLOCKS, B_TAIL, B_USERS, B_USER, B_SEQ, B_PAUSE, B_SNAPSHOT, B_SETTLED,
    B_FACTS, B_DELETE, B_INSERT, B_BEGIN, B_COMMIT, B_LOCK, B_COUNT_
};

#define CODE_PRED                                                              \
    "(embedding_code IS NULL OR octet_length(embedding_code) <= 2008)"

static const ds__stmt_def block_stmts[B_COUNT_] = {
    [B_BLOCKS] = {"memory.blocks.read",
                  "SELECT kind, upto, codes FROM memory_code_blocks "
                  "WHERE user_id = $1 AND ($2::text IS NULL OR kind = $2) "
                  "ORDER BY kind, block_no",
                  2,
                  {DS_OID_INT8, DS_OID_TEXT},
                  3,
                  {DS_OID_TEXT, DS_OID_INT8, DS_OID_BYTEA}},
    /* The facts written since the packing: for each of the user's kinds
     * (found by skipping through the index, one probe a kind), the range
     * above `upto` of the code index (OFFSET 0 keeps it per kind: joined
     * flat, the newest ids of every user came from the primary key). */
    [B_TAIL] = {"memory.blocks.tail",
                "WITH RECURSIVE kinds(kind) AS ("
                "(SELECT kind FROM memory_facts WHERE user_id = $1 "
                "ORDER BY kind LIMIT 1) "
                "UNION ALL "
                "SELECT (SELECT m.kind FROM memory_facts m WHERE m.user_id = "
                "$1 AND m.kind > k.kind ORDER BY m.kind LIMIT 1) "
                "FROM kinds k WHERE k.kind IS NOT NULL) "
                "SELECT f.id, f.embedding_code, f.kind FROM kinds k "
                "CROSS JOIN LATERAL (SELECT id, embedding_code, kind FROM "
                "memory_facts WHERE user_id = $1 AND kind = k.kind "
                "AND id > $2 AND " CODE_PRED " OFFSET 0) f "
                "WHERE k.kind IS NOT NULL "
                "AND ($3::text IS NULL OR k.kind = $3)",
                3,
                {DS_OID_INT8, DS_OID_INT8, DS_OID_TEXT},
                3,
                {DS_OID_INT8, DS_OID_BYTEA, DS_OID_TEXT}},
    /* users to look at: facts, facts above the packing, facts at or below
     * it (fewer than packed: some were deleted). Every user: a pass over
     * the table by nature (ds_memory_maintain's periodic run); one user
     * ($1): its entries of memory_facts_user_kind_idx only (a statement of
     * its own, since `$1 = 0 OR user_id = $1` gave a generic plan that
     * walked the whole index). */
#define USERS_SQL(where, min_facts)                                            \
    "SELECT f.user_id, count(*), "                                             \
    "count(*) FILTER (WHERE f.id > b.upto), "                                  \
    "count(*) FILTER (WHERE f.id <= b.upto), "                                 \
    "coalesce(b.packed, 0), b.upto IS NOT NULL "                               \
    "FROM memory_facts f LEFT JOIN (SELECT user_id, "                          \
    "max(upto) AS upto, sum(facts) AS packed FROM "                            \
    "memory_code_blocks GROUP BY user_id) b "                                  \
    "ON b.user_id = f.user_id " where                                          \
    "GROUP BY f.user_id, b.upto, b.packed "                                    \
    "HAVING count(*) >= " min_facts " OR b.upto IS NOT NULL "                  \
    "ORDER BY f.user_id"
    [B_USERS] = {"memory.blocks.users",
                 USERS_SQL("", "$1"),
                 1,
                 {DS_OID_INT8},
                 6,
                 {DS_OID_INT8, DS_OID_INT8, DS_OID_INT8, DS_OID_INT8,
                  DS_OID_INT8, DS_OID_BOOL}},
    [B_USER] = {"memory.blocks.user",
                USERS_SQL("WHERE f.user_id = $1 ", "$2"),
                2,
                {DS_OID_INT8, DS_OID_INT8},
                6,
                {DS_OID_INT8, DS_OID_INT8, DS_OID_INT8, DS_OID_INT8,
                 DS_OID_INT8, DS_OID_BOOL}},
#undef USERS_SQL
    /* the last id given out (0 before the first) */
    [B_SEQ] = {"memory.blocks.seq",
               "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence("
               "'memory_facts', 'id')::regclass), 0)",
               0,
               {0},
               1,
               {DS_OID_INT8}},
    /* a statement's snapshot is taken when it starts: the pause is a
     * statement of its own */
    [B_PAUSE] = {"memory.blocks.pause", "SELECT pg_sleep(0.2)", 0, {0}, 1,
                 {0 /* void, not read */}},
    [B_SNAPSHOT] = {"memory.blocks.snapshot",
                    "SELECT pg_snapshot_xmax(pg_current_snapshot())::text",
                    0,
                    {0},
                    1,
                    {DS_OID_TEXT}},
    /* whether every transaction below $1 has ended; waits a little first
     * when not */
    [B_SETTLED] = {"memory.blocks.settled",
                   "SELECT CASE WHEN pg_snapshot_xmin(pg_current_snapshot()) "
                   ">= $1::xid8 THEN true "
                   "ELSE (SELECT false FROM pg_sleep(0.02)) END",
                   1,
                   {DS_OID_TEXT},
                   1,
                   {DS_OID_BOOL}},
    [B_FACTS] = {"memory.blocks.facts",
                 "SELECT id, embedding_code, kind FROM memory_facts "
                 "WHERE user_id = $1 AND id <= $2 AND " CODE_PRED
                 " ORDER BY kind, id",
                 2,
                 {DS_OID_INT8, DS_OID_INT8},
                 3,
                 {DS_OID_INT8, DS_OID_BYTEA, DS_OID_TEXT}},
    [B_DELETE] = {"memory.blocks.delete",
                  "DELETE FROM memory_code_blocks WHERE user_id = $1",
                  1,
                  {DS_OID_INT8},
                  -1,
                  {0}},
    [B_INSERT] = {"memory.blocks.insert",
                  "INSERT INTO memory_code_blocks (user_id, kind, block_no, "
                  "upto, facts, codes) SELECT $1, u.kind, u.n - 1, $2, "
                  "u.facts, u.codes FROM unnest($3::text[], $4::int4[], "
                  "$5::bytea[]) WITH ORDINALITY AS u(kind, facts, codes, n)",
                  5,
                  {DS_OID_INT8, DS_OID_INT8, DS_OID_TEXT_ARRAY,
                   DS_OID_INT4_ARRAY, DS_OID_BYTEA_ARRAY},
                  -1,
                  {0}},
    /* two packings of one user at once take turns here (the second then
     * replaces the first's blocks instead of colliding with them); adds
     * and searches take no such lock */
    [B_LOCK] = {"memory.blocks.lock",
                "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE",
                1,
                {DS_OID_INT8},
                1,
                {DS_OID_INT4}},
    [B_BEGIN] = {"memory.blocks.begin", "BEGIN", 0, {0}, -1, {0}},
    [B_COMMIT] = {"memory.blocks.commit", "COMMIT", 0, {0}, -1, {0}},
};

size_t ds__stmts_memory_blocks(const ds__stmt_def **defs) {
    *defs = block_stmts;
    return B_COUNT_;
}

/* ---- little-endian fields ---------------------------------------------------- */

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static float lef(const unsigned char *p) {
    uint32_t b = le32(p);
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static size_t block_bytes(size_t dim, size_t count) {
    return HEADER + count * (8 + 8 + (dim + 3) / 4);
}

/* The number of facts of a well-formed block for `dim`, else 0. */
static size_t block_count(const unsigned char *b, size_t len, size_t dim) {
    if (len < HEADER || b[0] != BLOCK_VERSION || b[1] != 0 ||
        ((size_t)b[2] | (size_t)b[3] << 8) != dim)
        return 0;
    size_t count = le32(b + 4);
    if (count == 0 || count > BLOCK_FACTS || block_bytes(dim, count) != len)
        return 0;
    return count;
}

/* ---- the search's first stage ------------------------------------------------ */

/* One entry of the user: where its id and kind are. */
typedef struct entry {
    int64_t id;
    const char *kind; /* inside a PGresult kept until the bind */
    int kind_len;
    float score;
} entry;

static int entry_by_kind_id(const void *a, const void *b) {
    const entry *x = a, *y = b;
    int n = x->kind_len < y->kind_len ? x->kind_len : y->kind_len;
    int c = memcmp(x->kind, y->kind, (size_t)n);
    if (c == 0)
        c = (x->kind_len > y->kind_len) - (x->kind_len < y->kind_len);
    if (c != 0)
        return c;
    return (x->id > y->id) - (x->id < y->id);
}

/* Scores every fact of one block into e[0..count). */
static void score_block(const unsigned char *b, size_t count, size_t dim,
                        const float *table, const char *kind, int kind_len,
                        float *small, float *large, entry *e) {
    size_t groups = (dim + 3) / 4;
    const unsigned char *ids = b + HEADER;
    const unsigned char *levels = ids + 8 * count;
    const unsigned char *codes = levels + 8 * count;
    for (size_t i = 0; i < count; i++)
        small[i] = large[i] = 0;
    for (size_t g = 0; g < groups; g++) {
        const float *row = table + g * 512;
        const unsigned char *c = codes + g * count;
        for (size_t i = 0; i < count; i++) {
            small[i] += row[2 * c[i]];
            large[i] += row[2 * c[i] + 1];
        }
    }
    for (size_t i = 0; i < count; i++) {
        uint64_t id = (uint64_t)le32(ids + 8 * i) |
                      (uint64_t)le32(ids + 8 * i + 4) << 32;
        float lo = lef(levels + 8 * i), hi = lef(levels + 8 * i + 4);
        float s = small[i] * lo + large[i] * hi;
        bool usable = isfinite(lo) && isfinite(hi) && lo >= 0 && hi >= 0 &&
                      lo <= 1 && hi <= 1 && isfinite(s);
        e[i] = (entry){(int64_t)id, kind, kind_len, usable ? s : INFINITY};
    }
}

/* Scores the tail rows (id, code, kind) of `r` into e. */
static void score_tail(const PGresult *r, size_t dim, const float *table,
                       entry *e) {
    for (int i = 0; i < PQntuples(r); i++) {
        const unsigned char *code = (const unsigned char *)PQgetvalue(r, i, 1);
        bool usable = !PQgetisnull(r, i, 1) &&
                      (size_t)PQgetlength(r, i, 1) == DS_CODE_BYTES(dim) &&
                      ds__code_plausible(code, dim);
        float s = usable ? ds__code_dot(table, code, dim) : INFINITY;
        e[i] = (entry){ds__memory_int8(r, i, 0), PQgetvalue(r, i, 2),
                       PQgetlength(r, i, 2), isfinite(s) ? s : INFINITY};
    }
}

/* Binds (user, kinds, ids) of the `keep` best entries in (kind, id) order
 * (index order for the probes); false when out of memory. */
static bool bind_best(entry *e, size_t n, size_t keep, int64_t user_id,
                      ds__bind *next, size_t *chosen) {
    float *sorted = ds__calloc(n, sizeof *sorted);
    if (!sorted)
        return false;
    for (size_t i = 0; i < n; i++)
        sorted[i] = e[i].score;
    float floor_score = ds__select_desc(sorted, n, keep - 1);
    ds__free(sorted);
    size_t got = 0;
    for (size_t i = 0; i < n; i++)
        if (e[i].score >= floor_score)
            e[got++] = e[i];
    qsort(e, got, sizeof *e, entry_by_kind_id);
    ds__pgarr kinds, ids;
    ds__pgarr_init(&kinds, DS_OID_TEXT);
    ds__pgarr_init(&ids, DS_OID_INT8);
    bool ok = true;
    for (size_t i = 0; ok && i < got; i++)
        ok = ds__pgarr_add(&kinds, e[i].kind, (size_t)e[i].kind_len) &&
             ds__pgarr_add_int8(&ids, e[i].id);
    ds__bind_int64(next, user_id);
    ds__bind_array(next, &kinds, DS_OID_TEXT_ARRAY);
    ds__bind_array(next, &ids, DS_OID_INT8_ARRAY);
    ds__pgarr_free(&kinds);
    ds__pgarr_free(&ids);
    *chosen = got;
    return ok;
}

/* Reads and checks the blocks; *count their facts, 0 when there are none
 * or one is not well formed (then the unpacked codes answer). */
static size_t usable_blocks(const PGresult *r, size_t dim, int64_t *upto) {
    size_t total = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        size_t count = block_count((const unsigned char *)PQgetvalue(r, i, 2),
                                   (size_t)PQgetlength(r, i, 2), dim);
        if (count == 0)
            return 0;
        total += count;
        int64_t u = ds__memory_int8(r, i, 1);
        if (i > 0 && u != *upto)
            return 0; /* two packings at once cannot be committed */
        *upto = u;
    }
    return total;
}

/* Scores the blocks and the tail, then binds the best `keep`, or sets
 * *everyone when most facts have no code. */
static ds_status choose(ds_memory *mem, const PGresult *blocks,
                        const PGresult *tail, size_t total, size_t keep,
                        int64_t user_id, const float *q, ds__bind *next,
                        size_t *chosen, bool *everyone, ds_error *err) {
    size_t dim = mem->dim;
    entry *e = ds__calloc(total, sizeof *e);
    float *small = ds__calloc(BLOCK_FACTS, sizeof *small);
    float *large = ds__calloc(BLOCK_FACTS, sizeof *large);
    float *table = NULL;
    ds_status st = DS_OK;
    if (!e || !small || !large)
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    if (st == DS_OK)
        st = ds__code_table_new(q, dim, &table, err);
    size_t at = 0;
    for (int i = 0; st == DS_OK && i < PQntuples(blocks); i++) {
        const unsigned char *b =
            (const unsigned char *)PQgetvalue(blocks, i, 2);
        size_t count = block_count(b, (size_t)PQgetlength(blocks, i, 2), dim);
        score_block(b, count, dim, table, PQgetvalue(blocks, i, 0),
                    PQgetlength(blocks, i, 0), small, large, e + at);
        at += count;
    }
    if (st == DS_OK)
        score_tail(tail, dim, table, e + at);
    size_t without_code = 0;
    for (size_t i = 0; st == DS_OK && i < total; i++)
        without_code += isinf(e[i].score);
    if (st == DS_OK && without_code > total / 2)
        /* many facts without a code (rows from before sql/0006): probing
         * them one by one would cost more than the exact scan */
        *everyone = true;
    else if (st == DS_OK && !bind_best(e, total, keep, user_id, next, chosen))
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    ds__free(e);
    ds__free(small);
    ds__free(large);
    ds__free(table);
    return st;
}

/* The packed first stage: *packed false (nothing bound) when the user has
 * no usable blocks (that pass `kind`). */
static ds_status blocks_candidates(ds_memory *mem, ds_conn *c,
                                   int64_t user_id, const float *q,
                                   const char *kind, size_t n, ds__bind *next,
                                   size_t *chosen, bool *packed,
                                   bool *everyone, ds_error *err) {
    *packed = *everyone = false;
    *chosen = 0;
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_text(&p, kind);
    PGresult *blocks = ds__memory_exec(c, &block_stmts[B_BLOCKS], &p, err);
    if (!blocks)
        return err->code;
    int64_t upto = 0;
    size_t in_blocks = usable_blocks(blocks, mem->dim, &upto);
    if (in_blocks == 0) {
        PQclear(blocks);
        return DS_OK;
    }
    ds__bind t;
    ds__bind_init(&t);
    ds__bind_int64(&t, user_id);
    ds__bind_int64(&t, upto);
    ds__bind_text(&t, kind);
    PGresult *tail = ds__memory_exec(c, &block_stmts[B_TAIL], &t, err);
    if (!tail) {
        PQclear(blocks);
        return err->code;
    }
    *packed = true;
    size_t total = in_blocks + (size_t)PQntuples(tail);
    ds__memory_count(&mem->rows_scanned, total);
    size_t keep = ds__code_keep(total, n);
    ds_status st = DS_OK;
    if (total <= (size_t)mem->code_crossover * keep || keep >= total)
        *everyone = true; /* the codes would keep everybody */
    else
        st = choose(mem, blocks, tail, total, keep, user_id, q, next, chosen,
                    everyone, err);
    PQclear(blocks);
    PQclear(tail);
    return st;
}

ds_status ds__code_stage(ds_memory *mem, ds_conn *c, int64_t user_id,
                         const float *q, const char *kind, size_t n,
                         PGresult **out, bool *everyone, ds_error *err) {
    *out = NULL;
    *everyone = false;
    size_t chosen;
    bool packed;
    ds__bind p;
    ds__bind_init(&p);
    ds_status st = blocks_candidates(mem, c, user_id, q, kind, n, &p, &chosen,
                                     &packed, everyone, err);
    if (st == DS_OK && packed && !*everyone) {
        PGresult *r =
            ds__memory_exec(c, &ds__memory_stmts[M_SKETCHES_BY_ID], &p, err);
        ds__bind_free(&p);
        if (!r)
            return err->code;
        if ((size_t)PQntuples(r) >= chosen) {
            *out = r;
            return DS_OK;
        }
        /* a packed candidate was deleted since the packing: it took the
         * place of one that may belong in the answer, so the unpacked
         * codes decide (until ds_memory_maintain packs the user again) */
        PQclear(r);
        ds__bind_init(&p);
    }
    if (st == DS_OK && !*everyone)
        st = ds__code_candidates(mem, c, user_id, q, kind, n, &p, everyone,
                                 err);
    if (st == DS_OK && !*everyone) {
        *out = ds__memory_exec(c, &ds__memory_stmts[M_SKETCHES_BY_ID], &p, err);
        if (!*out)
            st = err->code;
    }
    ds__bind_free(&p);
    return st;
}

/* ---- packing (ds_memory_maintain) ---------------------------------------------- */

/* Appends one fact to the block being built (ids, levels, codes of up to
 * BLOCK_FACTS facts, laid out on flush). */
typedef struct builder {
    size_t dim, count;
    int64_t id[BLOCK_FACTS];
    unsigned char *code; /* BLOCK_FACTS x DS_CODE_BYTES(dim), row by row */
    bool usable[BLOCK_FACTS];
} builder;

static void flush_block(const builder *bl, unsigned char *out) {
    size_t count = bl->count, dim = bl->dim, groups = (dim + 3) / 4;
    size_t code_len = DS_CODE_BYTES(dim);
    out[0] = BLOCK_VERSION;
    out[1] = 0;
    out[2] = (unsigned char)(dim & 0xff);
    out[3] = (unsigned char)(dim >> 8);
    put32(out + 4, (uint32_t)count);
    unsigned char *ids = out + HEADER, *levels = ids + 8 * count,
                  *codes = levels + 8 * count;
    for (size_t i = 0; i < count; i++) {
        uint64_t id = (uint64_t)bl->id[i];
        put32(ids + 8 * i, (uint32_t)id);
        put32(ids + 8 * i + 4, (uint32_t)(id >> 32));
        const unsigned char *c = bl->code + i * code_len;
        if (bl->usable[i]) {
            memcpy(levels + 8 * i, c, 8); /* already little-endian */
            for (size_t g = 0; g < groups; g++)
                codes[g * count + i] = c[8 + g];
        } else {
            float none = -1;
            uint32_t bits;
            memcpy(&bits, &none, 4);
            put32(levels + 8 * i, bits);
            put32(levels + 8 * i + 4, bits);
            for (size_t g = 0; g < groups; g++)
                codes[g * count + i] = 0;
        }
    }
}

typedef struct packing {
    ds__pgarr kinds, facts, codes;
    unsigned char *buf; /* one block's bytes */
    builder bl;
    const char *kind;   /* of the block being built (in the result) */
    int kind_len;
} packing;

static bool pack_flush(packing *pk) {
    if (pk->bl.count == 0)
        return true;
    size_t len = block_bytes(pk->bl.dim, pk->bl.count);
    flush_block(&pk->bl, pk->buf);
    bool ok = ds__pgarr_add(&pk->kinds, pk->kind, (size_t)pk->kind_len) &&
              ds__pgarr_add_int4(&pk->facts, (int32_t)pk->bl.count) &&
              ds__pgarr_add(&pk->codes, pk->buf, len);
    pk->bl.count = 0;
    return ok;
}

/* Builds the blocks of the rows (id, code, kind) of `r`, sorted by kind. */
static bool pack_rows(const PGresult *r, size_t dim, packing *pk) {
    size_t code_len = DS_CODE_BYTES(dim);
    bool ok = true;
    for (int i = 0; ok && i < PQntuples(r); i++) {
        const char *kind = PQgetvalue(r, i, 2);
        int kind_len = PQgetlength(r, i, 2);
        bool same = pk->kind && kind_len == pk->kind_len &&
                    memcmp(kind, pk->kind, (size_t)kind_len) == 0;
        if (!same || pk->bl.count == BLOCK_FACTS)
            ok = pack_flush(pk);
        pk->kind = kind;
        pk->kind_len = kind_len;
        size_t at = pk->bl.count++;
        pk->bl.id[at] = ds__memory_int8(r, i, 0);
        const unsigned char *code = (const unsigned char *)PQgetvalue(r, i, 1);
        pk->bl.usable[at] = !PQgetisnull(r, i, 1) &&
                            (size_t)PQgetlength(r, i, 1) == code_len &&
                            ds__code_plausible(code, dim);
        if (pk->bl.usable[at])
            memcpy(pk->bl.code + at * code_len, code, code_len);
    }
    return ok && pack_flush(pk);
}

static PGresult *exec_args(ds_conn *c, int which, const ds__bind *p,
                           ds_error *err) {
    return ds__memory_exec(c, &block_stmts[which], p, err);
}

static ds_status exec_simple(ds_conn *c, int which, const ds__bind *p,
                             ds_error *err) {
    PGresult *r = exec_args(c, which, p, err);
    if (!r)
        return err->code;
    PQclear(r);
    return DS_OK;
}

/* Waits until every transaction that held an id at or below *upto has
 * ended (see the top of the file); *settled false when that took longer
 * than SETTLE_WAIT_MS (a long write transaction elsewhere). */
static ds_status settle(ds_conn *c, int64_t *upto, bool *settled,
                        ds_error *err) {
    *settled = false;
    PGresult *r = exec_args(c, B_SEQ, NULL, err);
    if (!r)
        return err->code;
    *upto = ds__memory_int8(r, 0, 0);
    PQclear(r);
    ds_status st = exec_simple(c, B_PAUSE, NULL, err);
    if (st != DS_OK)
        return st;
    r = exec_args(c, B_SNAPSHOT, NULL, err);
    if (!r)
        return err->code;
    char xmax[32];
    snprintf(xmax, sizeof xmax, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    int64_t until = ds__now_us() + (int64_t)SETTLE_WAIT_MS * 1000;
    while (!*settled && ds__now_us() < until) {
        ds__bind p;
        ds__bind_init(&p);
        ds__bind_text(&p, xmax);
        r = exec_args(c, B_SETTLED, &p, err);
        ds__bind_free(&p);
        if (!r)
            return err->code;
        *settled = PQgetvalue(r, 0, 0)[0] != 0;
        PQclear(r);
    }
    return DS_OK;
}

/* Packs the facts of `user` up to the settled id, replacing its blocks in
 * one transaction (searches see the old blocks or the new). */
static ds_status pack_user(ds_memory *mem, ds_conn *c, int64_t user,
                           size_t *packed_users, ds_error *err) {
    int64_t upto;
    bool settled;
    ds_status st = settle(c, &upto, &settled, err);
    if (st != DS_OK)
        return st;
    if (!settled) {
        ds__log(DS_LOG_WARN, MODULE,
                "user %lld: codes not packed: a write transaction stayed "
                "open for %d s; run ds_memory_maintain() again",
                (long long)user, SETTLE_WAIT_MS / 1000);
        return DS_OK;
    }
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user);
    ds__bind_int64(&p, upto);
    PGresult *r = exec_args(c, B_FACTS, &p, err);
    if (!r)
        return err->code;
    size_t dim = mem->dim;
    packing pk = {.bl = {.dim = dim}};
    ds__pgarr_init(&pk.kinds, DS_OID_TEXT);
    ds__pgarr_init(&pk.facts, DS_OID_INT4);
    ds__pgarr_init(&pk.codes, DS_OID_BYTEA);
    pk.buf = ds__malloc(block_bytes(dim, BLOCK_FACTS));
    pk.bl.code = ds__malloc(BLOCK_FACTS * DS_CODE_BYTES(dim));
    if (!pk.buf || !pk.bl.code || !pack_rows(r, dim, &pk))
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    size_t rows = (size_t)PQntuples(r);
    PQclear(r);
    ds__free(pk.buf);
    ds__free(pk.bl.code);
    if (st == DS_OK)
        st = exec_simple(c, B_BEGIN, NULL, err);
    ds__bind d;
    ds__bind_init(&d);
    ds__bind_int64(&d, user);
    if (st == DS_OK)
        st = exec_simple(c, B_LOCK, &d, err);
    if (st == DS_OK)
        st = exec_simple(c, B_DELETE, &d, err);
    ds__bind w;
    ds__bind_init(&w);
    ds__bind_int64(&w, user);
    ds__bind_int64(&w, upto);
    ds__bind_array(&w, &pk.kinds, DS_OID_TEXT_ARRAY);
    ds__bind_array(&w, &pk.facts, DS_OID_INT4_ARRAY);
    ds__bind_array(&w, &pk.codes, DS_OID_BYTEA_ARRAY);
    if (st == DS_OK && rows > 0)
        st = exec_simple(c, B_INSERT, &w, err);
    if (st == DS_OK)
        st = exec_simple(c, B_COMMIT, NULL, err);
    ds__bind_free(&w);
    ds__pgarr_free(&pk.kinds);
    ds__pgarr_free(&pk.facts);
    ds__pgarr_free(&pk.codes);
    if (st == DS_OK && rows > 0)
        (*packed_users)++;
    return st; /* on failure the caller's release rolls back */
}

ds_status ds__blocks_maintain(ds_memory *mem, ds_conn *c, int64_t user_id,
                              size_t *packed_users, ds_error *err) {
    *packed_users = 0;
    if (mem->dim > DS_CODE_MAX_DIM || mem->dim > DS_SKETCH_INDEX_MAX_DIM)
        return DS_OK; /* no codes, or no code stage */
    int64_t min_facts = (int64_t)mem->code_crossover *
                        (int64_t)ds__code_keep(0, 1);
    if (min_facts < PACK_FLOOR)
        min_facts = PACK_FLOOR;
    ds__bind p;
    ds__bind_init(&p);
    if (user_id)
        ds__bind_int64(&p, user_id);
    ds__bind_int64(&p, min_facts);
    PGresult *users = exec_args(c, user_id ? B_USER : B_USERS, &p, err);
    if (!users)
        return err->code;
    ds_status st = DS_OK;
    for (int i = 0; st == DS_OK && i < PQntuples(users); i++) {
        int64_t user = ds__memory_int8(users, i, 0);
        int64_t facts = ds__memory_int8(users, i, 1);
        int64_t since = ds__memory_int8(users, i, 2);
        int64_t below = ds__memory_int8(users, i, 3);
        int64_t packed = ds__memory_int8(users, i, 4);
        bool has = PQgetvalue(users, i, 5)[0] != 0;
        if (facts * 2 < min_facts) {
            if (has) {
                ds__bind d;
                ds__bind_init(&d);
                ds__bind_int64(&d, user);
                st = exec_simple(c, B_DELETE, &d, err);
            }
            continue;
        }
        double tail_limit = fmax(TAIL_SHARE * (double)packed,
                                 4.0 * BLOCK_FACTS);
        bool again = !has || below < packed || (double)since >= tail_limit;
        if (again && facts >= min_facts)
            st = pack_user(mem, c, user, packed_users, err);
    }
    PQclear(users);
    return st;
}
