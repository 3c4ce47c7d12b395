/*
 * ds_crypto_rotate(): re-encrypts the service-connection tokens that are not
 * under the active key, in short transactions. It lives next to the
 * connections repository because it shares its tables and the place each
 * token is bound to (connection_tokens.h).
 *
 * Each batch locks up to batch_size stale rows with FOR UPDATE SKIP LOCKED
 * (a row a writer holds is skipped, never waited for), decrypts both
 * envelopes with the ring, encrypts them again under the active key and
 * writes the whole batch back with one UPDATE ... FROM unnest(arrays). A
 * pass walks the table by id; when rows remain afterwards (held by writers
 * during the pass, or written by a process still running with an older
 * ring), a few more passes follow.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/growable.h"
#include "core/progress.h"
#include "datastore/tx.h"
#include "pool/stmt.h"
#include "repo/connection_tokens.h"

#define ROTATE_DEFAULT_BATCH 200
#define ROTATE_MAX_BATCH 10000
#define ROTATE_EXTRA_PASSES 4

enum { STMT_SELECT, STMT_UPDATE, STMT_REMAINING };

static const ds__stmt_def stmts[] = {
    [STMT_SELECT] = {
        .name = "crypto.rotate_select_batch",
        .sql = "SELECT id, user_id, provider, external_account_id, "
               "access_token_enc, refresh_token_enc "
               "FROM service_connections "
               "WHERE key_id <> $1 AND id > $2 "
               "ORDER BY id LIMIT $3 "
               "FOR UPDATE SKIP LOCKED",
        .nparams = 3,
        .param_types = {DS_OID_TEXT, DS_OID_INT8, DS_OID_INT4},
        .ncols = 6,
        .col_types = {DS_OID_INT8, DS_OID_INT8, DS_OID_TEXT, DS_OID_TEXT,
                      DS_OID_BYTEA, DS_OID_BYTEA},
    },
    [STMT_UPDATE] = {
        .name = "crypto.rotate_update_batch",
        .sql = "UPDATE service_connections AS s "
               "SET access_token_enc = u.access_token_enc, "
               "refresh_token_enc = u.refresh_token_enc, key_id = $1 "
               "FROM unnest($2::int8[], $3::bytea[], $4::bytea[]) "
               "AS u(id, access_token_enc, refresh_token_enc) "
               "WHERE s.id = u.id",
        .nparams = 4,
        .param_types = {DS_OID_TEXT, DS_OID_INT8_ARRAY, DS_OID_BYTEA_ARRAY,
                        DS_OID_BYTEA_ARRAY},
        .ncols = -1,
    },
    [STMT_REMAINING] = {
        .name = "crypto.rotate_remaining",
        .sql = "SELECT count(*) FROM service_connections WHERE key_id <> $1",
        .nparams = 1,
        .param_types = {DS_OID_TEXT},
        .ncols = 1,
        .col_types = {DS_OID_INT8},
    },
};

size_t ds__stmts_crypto(const ds__stmt_def **defs) {
    *defs = stmts;
    return sizeof stmts / sizeof stmts[0];
}

/* ---- one batch ------------------------------------------------------------ */

typedef struct batch {
    ds_crypto *crypto;
    int limit;
    int64_t after;
    /* results of the committed attempt */
    int nrows;
    int rotated;
    int64_t last_id;
    int64_t *failed_ids;
    int nfailed;
} batch;

typedef struct new_row {
    int64_t id;
    uint8_t *access, *refresh;
    size_t access_len, refresh_len;
} new_row;

/* Decrypts one envelope cell for its place and encrypts it under the active
 * key. A NULL cell stays NULL. */
static ds_status reseal(ds_crypto *crypto, const PGresult *r, int row, int col,
                        const ds_crypto_context *ctx, uint8_t **out,
                        size_t *out_len, ds_error *err) {
    *out = NULL;
    *out_len = 0;
    if (PQgetisnull(r, row, col))
        return DS_OK;
    ds_crypto_secret *plain;
    ds_status st = ds_crypto_decrypt(
        crypto, ctx, (const uint8_t *)PQgetvalue(r, row, col),
        (size_t)PQgetlength(r, row, col), &plain, err);
    if (st != DS_OK)
        return st;
    st = ds_crypto_encrypt(crypto, ctx, ds_crypto_secret_data(plain),
                           ds_crypto_secret_len(plain), out, out_len, err);
    ds_crypto_secret_free(plain);
    return st;
}

/* Reseals result row `i` into `nr`. A row that does not decrypt with
 * this ring is logged, noted in b->failed_ids and left out (*kept false);
 * any other failure is returned. */
static ds_status reseal_row(batch *b, const PGresult *r, int i, new_row *nr,
                            bool *kept, ds_error *err) {
    *kept = false;
    int64_t id = (int64_t)ds__get_be64(PQgetvalue(r, i, 0));
    int64_t user_id = (int64_t)ds__get_be64(PQgetvalue(r, i, 1));
    b->last_id = id;
    nr->id = id;
    ds_error cell_err = {0};
    /* a row whose place is not one the library writes (edited by hand)
     * cannot decrypt: it is left like one sealed under an unknown key */
    ds__token_place place;
    ds_status cs = ds__token_place_set(&place, user_id, PQgetvalue(r, i, 2),
                                       PQgetvalue(r, i, 3), DS__TOKEN_ACCESS,
                                       &cell_err) == DS_OK
                       ? DS_OK
                       : DS_ERR_CRYPTO;
    if (cs == DS_OK)
        cs = reseal(b->crypto, r, i, 4, &place.ctx, &nr->access,
                    &nr->access_len, &cell_err);
    if (cs == DS_OK)
        cs = ds__token_place_set(&place, user_id, PQgetvalue(r, i, 2),
                                 PQgetvalue(r, i, 3), DS__TOKEN_REFRESH,
                                 &cell_err);
    if (cs == DS_OK)
        cs = reseal(b->crypto, r, i, 5, &place.ctx, &nr->refresh,
                    &nr->refresh_len, &cell_err);
    if (cs == DS_OK) {
        *kept = true;
        return DS_OK;
    }
    ds__free(nr->access);
    ds__free(nr->refresh);
    memset(nr, 0, sizeof *nr);
    if (cs != DS_ERR_CRYPTO) {
        if (err)
            *err = cell_err;
        return cs;
    }
    ds__log(DS_LOG_WARN, "crypto",
            "rotate: service_connections id %lld does not decrypt with this "
            "key ring; left unchanged",
            (long long)id);
    b->failed_ids[b->nfailed++] = id;
    return DS_OK;
}

/* Writes the resealed rows back in one statement. */
static ds_status write_back(ds_conn *conn, batch *b, const char *kid,
                            const new_row *rows, int nnew, ds_error *err) {
    ds__pgarr ids, acc, ref;
    ds__pgarr_init(&ids, DS_OID_INT8);
    ds__pgarr_init(&acc, DS_OID_BYTEA);
    ds__pgarr_init(&ref, DS_OID_BYTEA);
    bool ok = true;
    for (int i = 0; ok && i < nnew; i++)
        ok = ds__pgarr_add_int8(&ids, rows[i].id) &&
             ds__pgarr_add(&acc, rows[i].access, rows[i].access_len) &&
             ds__pgarr_add(&ref, rows[i].refresh, rows[i].refresh_len);
    ds__bind upd;
    ds__bind_init(&upd);
    ds__bind_text(&upd, kid);
    /* the binder takes (or, after a failure, frees) the arrays */
    ds__bind_array(&upd, &ids, DS_OID_INT8_ARRAY);
    ds__bind_array(&upd, &acc, DS_OID_BYTEA_ARRAY);
    ds__bind_array(&upd, &ref, DS_OID_BYTEA_ARRAY);
    ds_status st = DS_OK;
    if (!ok) {
        st = ds__error_set(err, DS_ERR_NOMEM, "ds_crypto_rotate: out of memory");
    } else {
        PGresult *u = ds__stmt_run(conn, &stmts[STMT_UPDATE], &upd, err);
        if (!u)
            st = err ? err->code : DS_ERR_DB;
        else
            b->rotated = (int)strtol(PQcmdTuples(u), NULL, 10);
        PQclear(u);
    }
    ds__bind_free(&upd);
    return st;
}

static ds_status run_batch(ds_conn *conn, void *ud, ds_error *err) {
    batch *b = ud;
    b->nrows = b->rotated = b->nfailed = 0;
    b->last_id = b->after;

    const char *kid = ds_crypto_active_key_id(b->crypto);
    ds__bind sel;
    ds__bind_init(&sel);
    ds__bind_text(&sel, kid);
    ds__bind_int64(&sel, b->after);
    ds__bind_int32(&sel, (int32_t)b->limit);
    PGresult *r = ds__stmt_run(conn, &stmts[STMT_SELECT], &sel, err);
    ds__bind_free(&sel);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    int n = PQntuples(r);
    b->nrows = n;
    new_row *rows = n ? ds__calloc((size_t)n, sizeof *rows) : NULL;
    if (n && !rows) {
        PQclear(r);
        return ds__error_set(err, DS_ERR_NOMEM, "ds_crypto_rotate: out of memory");
    }
    ds_status st = DS_OK;
    int nnew = 0;
    for (int i = 0; i < n && st == DS_OK; i++) {
        bool kept;
        st = reseal_row(b, r, i, &rows[nnew], &kept, err);
        nnew += kept;
    }
    PQclear(r);
    if (st == DS_OK && nnew > 0)
        st = write_back(conn, b, kid, rows, nnew, err);
    for (int i = 0; i < nnew; i++) {
        ds__free(rows[i].access);
        ds__free(rows[i].refresh);
    }
    ds__free(rows);
    return st;
}

/* ---- the passes ------------------------------------------------------------- */

typedef struct id_set {
    int64_t *ids;
    size_t n, cap;
} id_set;

static bool id_set_has(const id_set *s, int64_t id) {
    for (size_t i = 0; i < s->n; i++)
        if (s->ids[i] == id)
            return true;
    return false;
}

static bool id_set_add(id_set *s, int64_t id) {
    if (id_set_has(s, id))
        return true;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        int64_t *p = ds__reallocarray(s->ids, cap, sizeof *p);
        if (!p)
            return false;
        s->ids = p;
        s->cap = cap;
    }
    s->ids[s->n++] = id;
    return true;
}

static ds_status count_remaining(ds_pool *pool, const char *kid,
                                 int64_t *remaining, ds_error *err) {
    ds_conn *conn;
    ds_status st = ds_pool_acquire(pool, &conn, err);
    if (st != DS_OK)
        return st;
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_text(&b, kid);
    PGresult *r = ds__stmt_run(conn, &stmts[STMT_REMAINING], &b, err);
    ds__bind_free(&b);
    if (r) {
        *remaining = (int64_t)ds__get_be64(PQgetvalue(r, 0, 0));
        PQclear(r);
    } else {
        st = err ? err->code : DS_ERR_DB;
    }
    ds_pool_release(conn);
    return st;
}

/* One run: its settings and what it did so far. */
typedef struct rotation {
    ds_crypto *crypto;
    ds_pool *pool;
    const char *kid;      /* the active key: rows not under it are stale */
    int batch_size;
    int64_t max_rows;     /* 0: no limit */
    int pause_ms;         /* between batches */
    ds__progress prog;
    int64_t estimate;     /* the progress total; -1 without a callback */
    batch b;
    id_set failed;        /* rows that do not decrypt, across passes */
    int64_t done;         /* rows looked at (rotated or failed) */
    bool limited;         /* stopped at max_rows */
    ds_crypto_rotate_stats *stats;
} rotation;

/* The options, checked, with their defaults. */
static ds_status rotation_init(rotation *rot, ds_crypto *crypto,
                               ds_pool *pool,
                               const ds_crypto_rotate_options *opts,
                               ds_crypto_rotate_stats *stats, ds_error *err) {
    memset(stats, 0, sizeof *stats);
    memset(rot, 0, sizeof *rot);
    DS_CHECK_ARG(err, crypto != NULL, "crypto is NULL");
    DS_CHECK_ARG(err, pool != NULL, "pool is NULL");
    DS_CHECK_ARG(err, opts->batch_size >= 0 && opts->batch_size <= ROTATE_MAX_BATCH,
                 "batch_size must be 0 (default) to 10000");
    DS_CHECK_ARG(err, opts->max_rows >= 0, "max_rows must be >= 0");
    DS_CHECK_ARG(err, opts->pause_ms >= 0 && opts->pause_ms <= 60000,
                 "pause_ms must be 0 to 60000");
    rot->crypto = crypto;
    rot->pool = pool;
    rot->kid = ds_crypto_active_key_id(crypto);
    rot->batch_size = opts->batch_size ? opts->batch_size : ROTATE_DEFAULT_BATCH;
    rot->max_rows = opts->max_rows;
    rot->pause_ms = opts->pause_ms;
    rot->stats = stats;
    rot->estimate = -1;
    rot->b.crypto = crypto;
    ds__progress_init(&rot->prog, "crypto_rotate", opts->progress,
                      opts->progress_ud);
    if (rot->prog.fn) {
        /* the total a progress line needs: one count before the first
         * batch, no lock held */
        ds_status cs = count_remaining(pool, rot->kid, &rot->estimate, err);
        if (cs != DS_OK)
            return cs;
        if (rot->max_rows && rot->max_rows < rot->estimate)
            rot->estimate = rot->max_rows;
    }
    rot->b.failed_ids = ds__calloc((size_t)rot->batch_size,
                                   sizeof *rot->b.failed_ids);
    if (!rot->b.failed_ids)
        return ds__error_set(err, DS_ERR_NOMEM, "ds_crypto_rotate: out of memory");
    return DS_OK;
}

/* Counts one committed batch and reports it. */
static ds_status rotation_count_batch(rotation *rot, ds_error *err) {
    batch *b = &rot->b;
    rot->stats->batches++;
    rot->stats->rotated += b->rotated;
    rot->done += b->nrows;
    for (int i = 0; i < b->nfailed; i++)
        if (!id_set_add(&rot->failed, b->failed_ids[i]))
            return ds__error_set(err, DS_ERR_NOMEM,
                                 "ds_crypto_rotate: out of memory");
    return ds__progress_report(
        &rot->prog, "service_connections", "rows", "rows",
        rot->stats->rotated + (int64_t)rot->failed.n, rot->estimate,
        "run ds_crypto_rotate again to rotate the rest", err);
}

/* One walk over the table by id, a batch (one transaction) at a time. */
static ds_status rotation_pass(rotation *rot, ds_error *err) {
    batch *b = &rot->b;
    b->after = 0;
    for (;;) {
        b->limit = rot->batch_size;
        if (rot->max_rows && rot->max_rows - rot->done < b->limit)
            b->limit = (int)(rot->max_rows - rot->done);
        ds_status st = ds_tx_run(rot->pool, NULL, run_batch, b, err);
        if (st == DS_OK)
            st = rotation_count_batch(rot, err);
        if (st != DS_OK || b->nrows < b->limit)
            return st;
        b->after = b->last_id;
        if (rot->max_rows && rot->done >= rot->max_rows) {
            rot->limited = true;
            return DS_OK;
        }
        if (rot->pause_ms)
            ds__sleep_us((int64_t)rot->pause_ms * 1000);
    }
}

/* Passes until no stale row is left but those that do not decrypt. */
static ds_status rotation_passes(rotation *rot, ds_error *err) {
    ds_crypto_rotate_stats *stats = rot->stats;
    for (int pass = 0;; pass++) {
        ds_status st = rotation_pass(rot, err);
        if (st != DS_OK)
            return st;
        stats->failed = (int64_t)rot->failed.n;
        st = count_remaining(rot->pool, rot->kid, &stats->remaining, err);
        if (st != DS_OK || rot->limited ||
            stats->remaining <= stats->failed || pass >= ROTATE_EXTRA_PASSES)
            return st;
        /* Rows were held by writers (or written under an older key by a
         * process not yet redeployed): back off, then another pass. */
        ds__sleep_us(INT64_C(50000) << pass);
    }
}

/* What the caller learns from a run that ended with `st`. */
static ds_status rotation_end(rotation *rot, ds_status st, ds_error *err) {
    ds_crypto_rotate_stats *stats = rot->stats;
    stats->failed = (int64_t)rot->failed.n;
    if (st == DS_ERR_CANCELLED) {
        /* never let a stopped run look finished (remaining == 0 is the
         * signal to remove the old key) */
        ds_error ignore = {0};
        if (count_remaining(rot->pool, rot->kid, &stats->remaining,
                            &ignore) != DS_OK ||
            stats->remaining < 1)
            stats->remaining = 1;
    }
    if (st == DS_OK && !rot->limited && stats->remaining <= stats->failed) {
        /* finished: what was done is everything there was; a stop asked
         * now has nothing left to stop */
        int64_t handled = stats->rotated + stats->failed;
        (void)ds__progress_report(&rot->prog, "service_connections", "rows",
                                  "rows", handled, handled, NULL, NULL);
    }
    if (st != DS_OK)
        return st;
    ds__log(DS_LOG_INFO, "crypto",
            "rotate to '%s': %lld rotated, %lld failed, %lld remaining, %lld "
            "batches",
            rot->kid, (long long)stats->rotated, (long long)stats->failed,
            (long long)stats->remaining, (long long)stats->batches);
    if (stats->failed > 0)
        return ds__error_set(err, DS_ERR_CRYPTO,
                             "ds_crypto_rotate: %lld row(s) of service_connections "
                             "do not decrypt with this key ring (their ids are "
                             "logged); the other rows were rotated",
                             (long long)stats->failed);
    return DS_OK;
}

static ds_status rotate(ds_crypto *crypto, ds_pool *pool,
                        const ds_crypto_rotate_options *opts,
                        ds_crypto_rotate_stats *stats, ds_error *err) {
    rotation rot;
    ds_status st = rotation_init(&rot, crypto, pool, opts, stats, err);
    if (st == DS_OK)
        st = rotation_end(&rot, rotation_passes(&rot, err), err);
    ds__free(rot.failed.ids);
    ds__free(rot.b.failed_ids);
    return st;
}

DS_EXPORT ds_status ds_crypto_rotate(ds_crypto *crypto, ds_pool *pool,
                                     const ds_crypto_rotate_options *opts,
                                     ds_crypto_rotate_stats *stats,
                                     ds_error *err) {
    /* a failed statement's status comes from its mapped error: without an
     * error out-param, a local one gives the same status */
    ds_error local_err = {0};
    if (!err)
        err = &local_err;
    ds_crypto_rotate_options o = DS_CRYPTO_ROTATE_OPTIONS_INIT;
    ds_status st = DS__IN(opts, &o, ds_crypto_rotate_options, err);
    if (st != DS_OK)
        return st;
    if (stats && (st = DS__OUT_CHECK(stats, ds_crypto_rotate_stats, err)) != DS_OK)
        return st;
    ds_crypto_rotate_stats local = DS_CRYPTO_ROTATE_STATS_INIT;
    st = rotate(crypto, pool, &o, &local, err);
    if (stats)
        ds__growable_out(stats, &local, sizeof local);
    return st;
}
