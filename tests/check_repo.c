/* The repositories across entities against the real database: times at
 * the edges of the range, bad arguments and out-of-memory, and every
 * statement's types against the live schema. The entities' own suites are
 * tests/check_repo_<entity>.c, sharing tests/repo_fixture.h. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "repo_fixture.h"

/* ---- times at the edges of the range ------------------------------------------ */

/* INT64_MIN and INT64_MAX are -infinity and infinity both ways; a time too
 * far in the past for PostgreSQL is refused, never wrapped around into the
 * far future (a purge "older than INT64_MIN" used to erase every
 * soft-deleted user). */
START_TEST(test_repo_times_at_the_edges) {
    ds_error err = {0};
    int64_t uid = new_user("edge@example.com");
    ds_status st = ds_user_soft_delete(pool, uid, &err);
    ck_assert_ds_ok(st, err);
    int64_t purged = -1;
    st = ds_gdpr_purge_deleted_users(pool, NULL, INT64_MIN, NULL, &purged, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(purged, 0);
    st = ds_gdpr_purge_deleted_users(pool, NULL, INT64_MIN + 1, NULL, &purged, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_int_eq(count_sql("SELECT count(*) FROM users WHERE id = %lld", uid), 1);
    st = ds_user_restore(pool, uid, &err);
    ck_assert_ds_ok(st, err);

    ds_crypto *crypto = test_crypto("t1");
    ds_connection_new in = {sizeof(ds_connection_new), uid, "github", "edge", NULL, "tok", 0, NULL, 0, INT64_MIN};
    ds_connection *c;
    st = ds_connection_upsert(pool, crypto, &in, &c, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(c->token_expires_at == INT64_MIN);
    ds_connection_free(c);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM service_connections WHERE "
                                    "token_expires_at = '-infinity'"), 1);
    in.token_expires_at = INT64_MAX;
    st = ds_connection_upsert(pool, crypto, &in, &c, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(c->token_expires_at == INT64_MAX);
    ds_connection_free(c);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM service_connections WHERE "
                                    "token_expires_at = 'infinity'"), 1);
    in.token_expires_at = INT64_MIN + 1;
    st = ds_connection_upsert(pool, crypto, &in, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ds_crypto_close(crypto);

    ds_event ev[2] = {{sizeof(ds_event), uid, "ok", NULL, 0}, {sizeof(ds_event), uid, "too_early", NULL, INT64_MIN + 1}};
    st = ds_event_record(pool, &ev[1], &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_event_record_batch(pool, ev, 2, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_msg(strncmp(err.message, "event 1", 7) == 0, "%s", err.message);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM analytics_events"), 0);
    ev[1].occurred_at = INT64_C(-210866803200000000); /* the first instant */
    st = ds_event_record_batch(pool, ev, 2, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM analytics_events WHERE "
                                    "occurred_at = '4714-11-24 00:00:00+00 BC'"), 1);
    dt_sql(db, "DELETE FROM analytics_events");

    /* a date PostgreSQL holds but epoch microseconds cannot (from 294247
     * AD) reads as infinity */
    int64_t conv = new_conversation(uid);
    char sql[160];
    snprintf(sql, sizeof sql, "UPDATE conversations SET updated_at = '294270-01-01' "
             "WHERE id = %lld", (long long)conv);
    dt_sql(db, sql);
    ds_conversation *cv;
    st = ds_conversation_get(pool, conv, &cv, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(cv->updated_at == INT64_MAX);
    ds_conversation_free(cv);
    ds_conversation_cursor cur = {INT64_MIN + 5, 1};
    ds_conversation_list *list = (ds_conversation_list *)0x1;
    st = ds_conversation_list_page(pool, uid, &cur, 10, true, &list, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_null(list);
}
END_TEST


/* ---- errors: bad arguments never crash and never write --------------------- */

START_TEST(test_repo_errors_null_and_out_of_range_arguments) {
    ds_error err = {0};
    int64_t uid = new_user("err@example.com");
    int64_t conv = new_conversation(uid);
    ds_user *u = (ds_user *)0x1;
    ds_user_list *ul = (ds_user_list *)0x1;
    ck_assert_int_eq(ds_user_create(NULL, "a@b.co", NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_get(pool, 1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_get(NULL, 1, &u, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(u);
    ck_assert_int_eq(ds_user_get(pool, 0, &u, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_get(pool, -4, &u, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_get(pool, uid + 1000, &u, &err), DS_ERR_NOT_FOUND);
    ck_assert_int_eq(ds_user_get_by_email(pool, NULL, &u, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_get_by_email(pool, "nobody@example.com", &u, &err), DS_ERR_NOT_FOUND);
    ck_assert_int_eq(ds_user_update_profile(pool, uid, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_soft_delete(pool, 0, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_restore(NULL, uid, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_list_page(pool, NULL, 10, false, false, NULL, &err), DS_ERR_INVALID);
    ds_user_cursor neg = {-1};
    ck_assert_int_eq(ds_user_list_page(pool, &neg, 10, false, false, &ul, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(ul);

    ds_conversation *c = (ds_conversation *)0x1;
    ck_assert_int_eq(ds_conversation_create(pool, 0, NULL, &c, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(ds_conversation_create(pool, uid, "\xff", NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_conversation_get(pool, conv, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_conversation_count(pool, uid, true, NULL, &err), DS_ERR_INVALID);
    ds_conversation_list *cl;
    ds_conversation_cursor badc = {5, -1};
    ck_assert_int_eq(ds_conversation_list_page(pool, uid, &badc, 5, true, &cl, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_conversation_list_page(pool, uid, NULL, 0, true, &cl, &err),
                     DS_ERR_INVALID);

    ds_message_new m = {sizeof(ds_message_new), DS_ROLE_USER, "x", 0, NULL, NULL};
    ck_assert_int_eq(ds_message_append(pool, conv, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_message_append(pool, 0, &m, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_message_append(NULL, conv, &m, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_message_append_batch(pool, conv, NULL, 3, NULL, &err), DS_ERR_INVALID);
    ds_message_list *ml;
    ds_message_cursor badm = {-3, 0};
    ck_assert_int_eq(ds_message_list_page(pool, conv, DS_NEWEST_FIRST, &badm, 5, &ml, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_message_list_page(pool, conv, DS_NEWEST_FIRST, NULL, 5, NULL, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_message_count(pool, conv, NULL, &err), DS_ERR_INVALID);
    ck_assert_str_eq(ds_message_role_str((ds_message_role)99), "unknown");
    ck_assert_str_eq(ds_message_role_str(DS_ROLE_TOOL), "tool");

    ck_assert_int_eq(ds_team_create(pool, uid, NULL, NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_team_get(pool, 1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_team_update(pool, 1, 0, "x", NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_team_update(pool, 1, 1, NULL, NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_team_delete(pool, 1, -1, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_team_list_for_owner(pool, uid, NULL, -1, NULL, &err), DS_ERR_INVALID);

    json_t *v = json_integer(1);
    ds_setting *st_out;
    ck_assert_int_eq(ds_setting_get(pool, 0, NULL, &st_out, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_setting_get(pool, -1, "k", &st_out, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_setting_put(pool, 0, "k", v, -2, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_setting_delete(pool, 0, "k", 0, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_setting_list_for_user(pool, 0, NULL, 0, NULL, &err), DS_ERR_INVALID);
    json_decref(v);

    ck_assert_int_eq(ds_event_record(pool, NULL, &err), DS_ERR_INVALID);
    ds_event ev = {sizeof(ds_event), -1, "x", NULL, 0};
    ck_assert_int_eq(ds_event_record(pool, &ev, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_event_record_batch(pool, NULL, 1, &err), DS_ERR_INVALID);

    ck_assert_int_eq(ds_connection_get(pool, NULL, 0, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_connection_upsert(pool, NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_connection_delete(pool, -1, &err), DS_ERR_INVALID);
    ck_assert_str_eq(ds_connection_status_str((ds_connection_status)7), "unknown");

    ck_assert_int_eq(ds_gdpr_erase_user(NULL, NULL, 1, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_gdpr_purge_deleted_users(NULL, NULL, 0, NULL, NULL, NULL, &err), DS_ERR_INVALID);
    /* NULL err is allowed everywhere */
    ck_assert_int_eq(ds_user_get(pool, 0, &u, NULL), DS_ERR_INVALID);
    ck_assert_int_eq(ds_message_append(pool, conv + 500, &m, NULL, NULL), DS_ERR_NOT_FOUND);
    /* frees accept NULL */
    ds_user_free(NULL);
    ds_user_list_free(NULL);
    ds_conversation_free(NULL);
    ds_conversation_list_free(NULL);
    ds_message_free(NULL);
    ds_message_list_free(NULL);
    ds_team_free(NULL);
    ds_team_list_free(NULL);
    ds_setting_free(NULL);
    ds_setting_list_free(NULL);
    ds_connection_free(NULL);
    ds_connection_list_free(NULL);
    ds_gdpr_erase_report_free(NULL);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM messages"), 0);
}
END_TEST

START_TEST(test_repo_errors_out_of_memory_is_reported) {
    ds_error err = {0};
    int64_t conv = new_conversation(new_user("oom@example.com"));
    json_t *meta = json_pack("{s:s}", "a", "b");
    ds_message_new m[2] = {{sizeof(ds_message_new), DS_ROLE_USER, "one", 0, meta, "k1"},
                           {sizeof(ds_message_new), DS_ROLE_USER, "two", 0, NULL, NULL}};
    bool done = false;
    for (long n = 1; n < 40 && !done; n++) {
        ds_message_list *out = NULL;
        ds__test_fail_alloc_after(n);
        ds_status st = ds_message_append_batch(pool, conv, m, 2, &out, &err);
        ds__test_fail_alloc_after(0);
        if (st == DS_OK) {
            ck_assert_uint_eq(out->count, 2);
            ds_message_list_free(out);
            done = true;
        } else {
            ck_assert_ds_status(st, DS_ERR_NOMEM, err);
            ck_assert_ptr_null(out);
        }
    }
    ck_assert(done);
    done = false;
    for (long n = 1; n < 40 && !done; n++) {
        ds_user *u = NULL;
        ds__test_fail_alloc_after(n);
        ds_status st = ds_user_create(pool, "oom2@example.com", NULL, &u, &err);
        ds__test_fail_alloc_after(0);
        if (st == DS_OK) {
            ds_user_free(u);
            done = true;
        } else {
            /* an allocation after the insert fails the call; the row
             * exists then, and the retry reports the conflict */
            ck_assert(st == DS_ERR_NOMEM || st == DS_ERR_CONFLICT);
            if (st == DS_ERR_CONFLICT)
                done = true;
        }
    }
    ck_assert(done);
    json_decref(meta);
}
END_TEST

/* Reads under injected allocation failures: DS_ERR_NOMEM and a NULL row or
 * list until there is memory, then the full result (ASan: nothing leaks). */
START_TEST(test_repo_errors_out_of_memory_in_reads) {
    ds_error err = {0};
    json_t *prefs = json_pack("{s:s}", "theme", "dark");
    ds_profile_fields pf = {sizeof(ds_profile_fields), "Oom", NULL, NULL, prefs};
    ds_user *u;
    ds_status st = ds_user_create(pool, "reads@example.com", &pf, &u, &err);
    ck_assert_ds_ok(st, err);
    int64_t uid = u->id;
    ds_user_free(u);
    json_decref(prefs);
    int64_t conv = new_conversation(uid);
    ds_message_new m[3] = {{sizeof(ds_message_new), DS_ROLE_USER, "a", 0, NULL, NULL},
                           {sizeof(ds_message_new), DS_ROLE_ASSISTANT, "b", 0, NULL, "k"},
                           {sizeof(ds_message_new), DS_ROLE_USER, "c", 0, NULL, NULL}};
    st = ds_message_append_batch(pool, conv, m, 3, NULL, &err);
    ck_assert_ds_ok(st, err);
    int64_t team = 0;
    for (int i = 0; i < 2; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        ds_team *t;
        st = ds_team_create(pool, uid, name, NULL, NULL, &t, &err);
        ck_assert_ds_ok(st, err);
        team = t->id;
        ds_team_free(t);
        json_t *v = json_integer(i);
        st = ds_setting_put(pool, uid, name, v, DS_VERSION_NEW, NULL, &err);
        ck_assert_ds_ok(st, err);
        json_decref(v);
    }
    ds_crypto *crypto = test_crypto("o1");
    ds_connection_new cn = {sizeof(ds_connection_new), uid, "github", "oom", NULL, "tok", 0, NULL, 0, 0};
    st = ds_connection_upsert(pool, crypto, &cn, NULL, &err);
    ck_assert_ds_ok(st, err);
    ds_crypto_close(crypto);
    for (int op = 0; op < 8; op++) {
        bool done = false;
        int nomem = 0;
        /* n == 0: a first call without failures warms the connection's
         * statement cache, whose allocations fail silently */
        for (long n = 0; n < 30 && !done; n++) {
            void *out = NULL;
            size_t count = 0, want = 0;
            ds__test_fail_alloc_after(n);
            if (op == 0) {
                ds_user *row = NULL;
                st = ds_user_get(pool, uid, &row, &err);
                out = row;
            } else if (op == 1) {
                ds_user_list *l = NULL;
                st = ds_user_list_page(pool, NULL, 10, false, false, &l, &err);
                out = l, want = 1, count = l ? l->count : 0;
            } else if (op == 2) {
                ds_conversation_list *l = NULL;
                st = ds_conversation_list_page(pool, uid, NULL, 10, false, &l, &err);
                out = l, want = 1, count = l ? l->count : 0;
            } else if (op == 3) {
                ds_message_list *l = NULL;
                st = ds_message_list_page(pool, conv, DS_OLDEST_FIRST, NULL, 10, &l, &err);
                out = l, want = 3, count = l ? l->count : 0;
            } else if (op == 4) {
                ds_team_list *l = NULL;
                st = ds_team_list_for_owner(pool, uid, NULL, 10, &l, &err);
                out = l, want = 2, count = l ? l->count : 0;
            } else if (op == 5) {
                ds_setting_list *l = NULL;
                st = ds_setting_list_for_user(pool, uid, NULL, 10, &l, &err);
                out = l, want = 2, count = l ? l->count : 0;
            } else if (op == 6) {
                ds_connection_list *l = NULL;
                st = ds_connection_list_for_user(pool, uid, NULL, 10, &l, &err);
                out = l, want = 1, count = l ? l->count : 0;
            } else {
                ds_team *row = NULL;
                st = ds_team_get(pool, team, &row, &err);
                out = row;
            }
            ds__test_fail_alloc_after(0);
            if (st != DS_OK) {
                ck_assert_ds_status(st, DS_ERR_NOMEM, err);
                ck_assert_ptr_null(out);
                nomem++;
                continue;
            }
            done = n > 0;
            ck_assert_uint_eq(count, want);
            switch (op) {
            case 0: ds_user_free(out); break;
            case 1: ds_user_list_free(out); break;
            case 2: ds_conversation_list_free(out); break;
            case 3: ds_message_list_free(out); break;
            case 4: ds_team_list_free(out); break;
            case 5: ds_setting_list_free(out); break;
            case 6: ds_connection_list_free(out); break;
            default: ds_team_free(out); break;
            }
        }
        ck_assert_msg(done, "read %d never succeeded", op);
        /* the failure paths were taken, not only the happy one */
        ck_assert_msg(nomem > 0, "read %d never met an allocation failure", op);
    }
}
END_TEST


/* What ds_migrate_check_schema() will do at start-up, for this module's statements:
 * prepare each against the migrated schema and compare the parameter and
 * result column types with what the C code binds and decodes. */
START_TEST(test_repo_statements_match_live_schema) {
    const char *repo_modules[] = {"users", "conversations", "messages", "teams",
                                  "settings", "events", "connections", "gdpr"};
    PGconn *c = PQconnectdb(db);
    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    int checked = 0;
    for (const ds__stmt_table *t = ds__stmt_registry; t->module; t++) {
        bool mine = false;
        for (size_t i = 0; i < sizeof repo_modules / sizeof repo_modules[0]; i++)
            mine = mine || strcmp(t->module, repo_modules[i]) == 0;
        if (!mine)
            continue;
        const ds__stmt_def *defs;
        size_t n = t->get(&defs);
        for (size_t i = 0; i < n; i++) {
            const ds__stmt_def *d = &defs[i];
            PGresult *r = PQprepare(c, "", d->sql, d->nparams, d->param_types);
            ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", d->name,
                          PQresultErrorMessage(r));
            PQclear(r);
            r = PQdescribePrepared(c, "");
            ck_assert_int_eq(PQresultStatus(r), PGRES_COMMAND_OK);
            ck_assert_msg(PQnparams(r) == d->nparams, "%s: %d params", d->name, PQnparams(r));
            for (int p = 0; p < d->nparams; p++)
                ck_assert_msg(PQparamtype(r, p) == d->param_types[p], "%s: $%d is %u", d->name,
                              p + 1, PQparamtype(r, p));
            int want = d->ncols < 0 ? 0 : d->ncols;
            ck_assert_msg(PQnfields(r) == want, "%s: %d columns", d->name, PQnfields(r));
            for (int col = 0; col < want; col++)
                ck_assert_msg(PQftype(r, col) == d->col_types[col], "%s: column %d is %u",
                              d->name, col, PQftype(r, col));
            PQclear(r);
            checked++;
        }
    }
    ck_assert_int_ge(checked, 35);
    PQfinish(c);
}
END_TEST

/* ---- registration ------------------------------------------------------------ */

static void add_times(TCase *tc) {
    tcase_add_test(tc, test_repo_times_at_the_edges);
}

Suite *ds_test_repo_suite(void) {
    static const dt_repo_group groups[] = {
        {"times", add_times},
    };
    Suite *s = dt_repo_suite("repo", groups, sizeof groups / sizeof groups[0]);
    TCase *errors = tcase_create("errors");
    tcase_add_checked_fixture(errors, repo_setup_direct, repo_teardown);
    tcase_add_test(errors, test_repo_errors_null_and_out_of_range_arguments);
    tcase_add_test(errors, test_repo_errors_out_of_memory_is_reported);
    tcase_add_test(errors, test_repo_errors_out_of_memory_in_reads);
    tcase_add_test(errors, test_repo_statements_match_live_schema);
    suite_add_tcase(s, errors);
    return s;
}
