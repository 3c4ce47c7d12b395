/* See progress_util.h. */
#include "progress_util.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

void dt_progress_init(dt_progress *p, const char *operation, int stop_at) {
    memset(p, 0, sizeof *p);
    p->operation = operation;
    p->stop_at = stop_at;
    p->ok = true;
}

static void broken(dt_progress *p, const char *fmt, long long a,
                   long long b) {
    if (!p->ok)
        return;
    p->ok = false;
    snprintf(p->why, sizeof p->why, fmt, a, b);
}

int dt_progress_record(void *ud, const ds_progress *ev) {
    dt_progress *p = ud;
    p->events++;
    if (!ev->operation || strcmp(ev->operation, p->operation) != 0)
        broken(p, "event %lld: another operation (%lld)", p->events, 0);
    if (!ev->item || !ev->phase || !ev->unit || !ev->unit[0])
        broken(p, "event %lld: a NULL or empty string (%lld)", p->events, 0);
    if (ev->total < -1 || (ev->total >= 0 && ev->done > ev->total))
        broken(p, "done %lld above total %lld", ev->done, ev->total);
    if (ev->done < 0 || ev->elapsed_ms < 0)
        broken(p, "negative done %lld or elapsed %lld", ev->done,
               ev->elapsed_ms);
    bool same = !strcmp(ev->item ? ev->item : "", p->last_item) &&
                !strcmp(ev->phase ? ev->phase : "", p->last_phase);
    if (p->events > 1 && (same || p->cumulative) && ev->done < p->last_done)
        broken(p, "done went back from %lld to %lld", p->last_done, ev->done);
    if (p->events == 1)
        p->first_done = ev->done;
    p->last_done = ev->done;
    p->last_total = ev->total;
    snprintf(p->last_item, sizeof p->last_item, "%s", ev->item ? ev->item : "");
    snprintf(p->last_phase, sizeof p->last_phase, "%s",
             ev->phase ? ev->phase : "");
    return p->stop_at > 0 && p->events == p->stop_at;
}

void dt_progress_check(const dt_progress *p, bool finished) {
    ck_assert_msg(p->events > 0, "%s: no progress was reported", p->operation);
    ck_assert_msg(p->ok, "%s: %s", p->operation, p->why);
    if (finished)
        ck_assert_msg(p->last_done == p->last_total,
                      "%s: finished at %lld of %lld", p->operation,
                      p->last_done, p->last_total);
}

void dt_seed_connections(const char *url, ds_crypto *c, int n, int users) {
    PGconn *conn = dt_connect(url);
    enum { ROWS = 500 };
    size_t cap = (size_t)ROWS * 400 + 256;
    char *sql = malloc(cap);
    ck_assert_ptr_nonnull(sql);
    for (int start = 0; start < n; start += ROWS) {
        size_t len = (size_t)snprintf(
            sql, cap,
            "INSERT INTO service_connections (user_id, provider, "
            "external_account_id, access_token_enc, key_id) VALUES ");
        for (int i = start; i < n && i < start + ROWS; i++) {
            char scope[64], token[64];
            snprintf(scope, sizeof scope, "google/acct-%d", i);
            snprintf(token, sizeof token, "ya29.token-%d", i);
            int64_t user = 1 + i % users;
            ds_crypto_context ctx = {sizeof(ds_crypto_context), "service_connections", "access_token",
                                     user, scope};
            uint8_t *env;
            size_t env_len;
            ds_error err = {0};
            ck_assert_ds_ok(ds_crypto_encrypt(c, &ctx, token, strlen(token),
                                              &env, &env_len, &err),
                            err);
            ck_assert_uint_lt(len + env_len * 2 + 128, cap);
            len += (size_t)snprintf(sql + len, cap - len,
                                    "%s(%lld, 'google', 'acct-%d', '\\x",
                                    i > start ? ", " : "", (long long)user, i);
            for (size_t k = 0; k < env_len; k++)
                len += (size_t)snprintf(sql + len, cap - len, "%02x", env[k]);
            len += (size_t)snprintf(sql + len, cap - len, "', '%s')",
                                    ds_crypto_active_key_id(c));
            ds_free(env);
        }
        dt_exec(conn, sql);
    }
    free(sql);
    PQfinish(conn);
}
