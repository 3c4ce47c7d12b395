/* Parsers of outside input, one case per input found by the fuzz targets
 * in fuzz/ (make fuzz): each failure they found stays fixed here. */
#include <hiredis/hiredis.h>
#include <string.h>

#include "cache/cache_internal.h"
#include "core/config_internal.h"
#include "core/internal.h"
#include "migrate/migrate_internal.h"
#include "queue/queue_internal.h"
#include "repo/copybuf.h"
#include "test_util.h"

/* ---- what ds_config_get_str() shows of a Redis URL -------------------------- */

/* `value` is accepted, shown as `want`, and what is shown is accepted and
 * shown the same again. */
static void assert_redis_shown(const char *value, const char *want) {
    ds_config *cfg = NULL;
    ds_error err = {0};
    char shown[512], again[512];
    ck_assert_ds_ok(ds_config_new(&cfg, &err), err);
    ck_assert_ds_ok(ds_config_set(cfg, "redis_url", value, &err), err);
    ck_assert_ds_ok(ds_config_get_str(cfg, "redis_url", shown, sizeof shown, &err),
                    err);
    ck_assert_str_eq(shown, want);
    ck_assert_ds_ok(ds_config_set(cfg, "redis_url", shown, &err), err);
    ck_assert_ds_ok(ds_config_get_str(cfg, "redis_url", again, sizeof again, &err),
                    err);
    ck_assert_str_eq(again, shown);
    ds_config_free(cfg);
}

START_TEST(test_parsers_redis_url_shown_is_the_same_setting) {
    /* Found by fuzz_config: a socket path is taken verbatim, so showing it
     * percent-encoded named another socket ("unix:///&_" came back as
     * "unix:///%26_", then "unix:///%2526_"). */
    assert_redis_shown("unix:///run/a&b=c.sock", "unix:///run/a&b=c.sock");
    assert_redis_shown("unix://:pw@/run/r+s.sock?db=2",
                       "unix://:***@/run/r+s.sock?db=2");
    /* A bracketed host with a '%' but no ':' needs its brackets back. */
    assert_redis_shown("redis://:pw@[zone%1]:6380", "redis://:***@[zone%1]:6380");
    assert_redis_shown("redis://[::1]", "redis://[::1]:6379");
}
END_TEST

START_TEST(test_parsers_pg_url_shown_is_shown_the_same_again) {
    /* Found by fuzz_config: an empty dbname was shown as "h/", which reads
     * back as no dbname and is shown as "h" the second time. */
    ds_config *cfg = NULL;
    ds_error err = {0};
    char shown[512], again[512];
    ck_assert_ds_ok(ds_config_new(&cfg, &err), err);
    ck_assert_ds_ok(ds_config_set(cfg, "database_url",
                                  "postgresql://h/db?password=pw&dbname=", &err),
                    err);
    ck_assert_ds_ok(ds_config_get_str(cfg, "database_url", shown, sizeof shown,
                                      &err),
                    err);
    ck_assert_str_eq(shown, "postgresql://:***@h");
    ck_assert_ds_ok(ds_config_set(cfg, "database_url", shown, &err), err);
    ck_assert_ds_ok(ds_config_get_str(cfg, "database_url", again, sizeof again,
                                      &err),
                    err);
    ck_assert_str_eq(again, shown);
    ds_config_free(cfg);
}
END_TEST

/* ---- DATABASE_REPLICA_URLS ---------------------------------------------------- */

START_TEST(test_parsers_replica_list_white_space_is_no_url) {
    /* Found by fuzz_config: an entry of white space other than ' ' was kept
     * as a replica URL, which libpq reads as an empty conninfo (all
     * defaults: a local socket). */
    ds_config *cfg = NULL;
    ds_error err = {0};
    char shown[512];
    ck_assert_ds_ok(ds_config_new(&cfg, &err), err);
    ck_assert_ds_ok(ds_config_set(cfg, "database_replica_urls",
                                  " \v\t,postgresql://u:pw@h1/db,\t\r\n"
                                  "host=h2 dbname=db\f",
                                  &err),
                    err);
    ck_assert_ds_ok(ds_config_get_str(cfg, "database_replica_urls", shown,
                                      sizeof shown, &err),
                    err);
    ck_assert_ptr_null(strstr(shown, "pw"));
    ck_assert_msg(shown[0] == 'p', "an empty first entry is shown: '%s'", shown);

    char **urls = NULL;
    size_t n = 0;
    ck_assert_ds_ok(ds__config_split_urls(" \v\t,postgresql://h1/db,\t\r\n"
                                          "host=h2 dbname=db\f",
                                          &urls, &n, &err),
                    err);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(urls[0], "postgresql://h1/db");
    ck_assert_str_eq(urls[1], "host=h2 dbname=db");
    ck_assert_ptr_null(urls[2]);
    ds__config_free_urls(urls);
    ds_config_free(cfg);
}
END_TEST

/* ---- cache entries ------------------------------------------------------------ */

START_TEST(test_parsers_cache_entry_reads_what_it_writes) {
    /* Found by fuzz_cache_entry's round trip: the digit loop refused
     * numbers from 922337203685477580x up, so an entry written with a
     * fresh-until of INT64_MAX was read back as corrupt. */
    json_t *v = json_pack("{s:i}", "a", 1);
    size_t len;
    char *text = ds__cache_entry_encode(v, INT64_MAX, INT64_MAX - 1, &len);
    ck_assert_ptr_nonnull(text);
    ds__cache_entry e;
    ck_assert(ds__cache_entry_parse(text, len, &e));
    ck_assert_int_eq(e.kind, 'V');
    ck_assert(e.fresh_until_ms == INT64_MAX && e.load_ms == INT64_MAX - 1);
    json_t *back = ds__cache_entry_body(&e);
    ck_assert(back && json_equal(back, v));
    json_decref(back);
    ds__free(text);
    json_decref(v);

    /* one past INT64_MAX, a sign, a missing body or a stray one: corrupt */
    static const char *const bad[] = {
        "1 V 9223372036854775808 0\n1", "1 V -1 0\n1", "1 V 5 5\n",
        "1 N 5 5\n{}", "1 V 5 5 \n1", "2 V 5 5\n1", "1 V 5\n1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!ds__cache_entry_parse(bad[i], strlen(bad[i]), &e),
                      "accepted: %s", bad[i]);
    ck_assert(ds__cache_entry_parse("1 N 007 0\n", 10, &e));
    ck_assert(e.fresh_until_ms == 7 && e.body_len == 0);
}
END_TEST

/* ---- queue replies ------------------------------------------------------------- */

/* One reply from RESP text, as hiredis reads it off the socket. */
static redisReply *resp(const char *text, size_t len) {
    redisReader *r = redisReaderCreate();
    void *reply = NULL;
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(redisReaderFeed(r, text, len), REDIS_OK);
    ck_assert_int_eq(redisReaderGetReply(r, &reply), REDIS_OK);
    ck_assert_ptr_nonnull(reply);
    redisReaderFree(r);
    return reply;
}
#define RESP(lit) resp(lit, sizeof(lit) - 1)

START_TEST(test_parsers_queue_reserve_answer_of_strings_only) {
    /* Found by fuzz_queue_entry: an integer where the script answers text
     * was read through a NULL string (strtoll(NULL)). */
    redisReply *r = RESP("*9\r\n$0\r\n\r\n$0\r\n\r\n$0\r\n\r\n$0\r\n\r\n"
                         "$0\r\n\r\n$0\r\n\r\n:1500\r\n$1\r\n0\r\n$1\r\n0\r\n");
    ds_queue_job *job = (ds_queue_job *)&job;
    ds__queue_reserve_info info;
    ds_error err = {0};
    ds_status st = ds__queue_job_from_reserve(r, &job, &info, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert_ptr_null(job);
    ck_assert_ptr_nonnull(strstr(err.message, "integer"));
    freeReplyObject(r);

    r = RESP("*9\r\n$0\r\n\r\n$0\r\n\r\n$0\r\n\r\n$0\r\n\r\n"
             "$0\r\n\r\n$0\r\n\r\n$4\r\n1500\r\n$1\r\n2\r\n$1\r\n0\r\n");
    st = ds__queue_job_from_reserve(r, &job, &info, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_ptr_null(job);
    ck_assert_int_eq(info.next_due_ms, 1500);
    ck_assert_int_eq(info.dead_lettered, 2);
    ck_assert(!info.reclaimed);
    freeReplyObject(r);

    /* the answer of an older script (seven fields) is not this one's */
    r = RESP("*7\r\n$0\r\n\r\n$0\r\n\r\n$0\r\n\r\n$0\r\n\r\n"
             "$0\r\n\r\n$0\r\n\r\n$4\r\n1500\r\n");
    st = ds__queue_job_from_reserve(r, &job, &info, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert_ptr_null(job);
    freeReplyObject(r);
}
END_TEST

START_TEST(test_parsers_queue_entry_id_kept_whole_or_refused) {
    /* Found by fuzz_queue_entry: an entry id with a NUL byte (or longer
     * than the job holds) was cut short, so ack and replay would have
     * named another entry. */
    static const char with_nul[] =
        "*2\r\n$4\r\n1-\0002\r\n*2\r\n$1\r\np\r\n$2\r\n{}\r\n";
    static const char too_long[] =
        "*2\r\n$50\r\n12345678901234567890123456789-12345678901234567890\r\n"
        "*2\r\n$1\r\np\r\n$2\r\n{}\r\n";
    static const char fine[] =
        "*2\r\n$15\r\n1765000000000-7\r\n*4\r\n$1\r\np\r\n$2\r\n{}\r\n"
        "$1\r\na\r\n$2\r\n-5\r\n";
    ds_queue_job *job = (ds_queue_job *)&job;
    ds_error err = {0};
    redisReply *r = resp(with_nul, sizeof with_nul - 1);
    ck_assert_ds_status(ds__queue_job_from_entry(r, 1, &job, &err),
                        DS_ERR_INTERNAL, err);
    ck_assert_ptr_null(job);
    freeReplyObject(r);

    r = resp(too_long, sizeof too_long - 1);
    ck_assert_ds_status(ds__queue_job_from_entry(r, 1, &job, &err),
                        DS_ERR_INTERNAL, err);
    ck_assert_ptr_null(job);
    freeReplyObject(r);

    r = resp(fine, sizeof fine - 1);
    ck_assert_ds_ok(ds__queue_job_from_entry(r, 1, &job, &err), err);
    ck_assert_str_eq(job->entry_id, "1765000000000-7");
    ck_assert_int_eq(job->attempt, 1); /* a negative count is held at 0 */
    ck_assert_int_eq(job->enqueued_at_ms, 1765000000000);
    ds_queue_job_free(job);
    freeReplyObject(r);
}
END_TEST

/* ---- migration file names -------------------------------------------------- */

START_TEST(test_parsers_migration_pair_spells_version_once) {
    /* Found by fuzz_migrate_files: 00003_x.up.sql paired with
     * 0003_x.down.sql because both parse to version 3. */
#define RAW(name, text) {name, text, sizeof(text) - 1}
    ds__raw_file two_spellings[] = {RAW("00003_x.up.sql", "SELECT 1;"),
                                    RAW("0003_x.down.sql", "SELECT 2;")};
    ds__raw_file one_spelling[] = {RAW("0003_x.up.sql", "SELECT 1;"),
                                   RAW("0003_x.down.sql", "SELECT 2;")};
#undef RAW
    ds__migration_set *set = (ds__migration_set *)&set;
    ds_error err = {0};
    ds_status st = ds__migration_set_build(two_spellings, 2, &set, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_null(set);
    ck_assert_ptr_nonnull(strstr(err.message, "00003_x.up.sql"));
    ck_assert_ptr_nonnull(strstr(err.message, "0003_x.down.sql"));
    ck_assert_ptr_nonnull(strstr(err.message, "00003_x.down.sql"));

    st = ds__migration_set_build(one_spelling, 2, &set, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(set->count, 1);
    ck_assert_int_eq(set->files[0].version, 3);
    ck_assert_str_eq(set->files[0].down_file, "0003_x.down.sql");
    ds__migration_set_free(set);
}
END_TEST

/* ---- the COPY buffer of ds_event_record_batch ------------------------------------ */

START_TEST(test_parsers_copy_buf_sizes_never_wrap) {
    /* growth: doubled from the first chunk, never below what is needed,
     * and exactly what is needed where doubling would pass SIZE_MAX */
    ck_assert_uint_eq(ds__copy_buf_grown_cap(0, 10), DS_COPY_CHUNK);
    ck_assert_uint_eq(ds__copy_buf_grown_cap(DS_COPY_CHUNK, DS_COPY_CHUNK + 1),
                      2 * DS_COPY_CHUNK);
    size_t huge = SIZE_MAX / 2 + 2;
    ck_assert_uint_eq(ds__copy_buf_grown_cap(DS_COPY_CHUNK, huge), huge);
    ck_assert_uint_eq(ds__copy_buf_grown_cap(DS_COPY_CHUNK, SIZE_MAX), SIZE_MAX);
    ck_assert_uint_ge(ds__copy_buf_grown_cap(SIZE_MAX / 2 + 1, SIZE_MAX - 1),
                      SIZE_MAX - 1);

    ds__copy_buf b = {0};
    ck_assert(ds__copy_buf_reserve(&b, 19));
    ck_assert_ptr_nonnull(b.p);
    ck_assert_uint_eq(b.cap, DS_COPY_CHUNK);
    memset(b.p, 'x', 19);
    b.len = 19;
    char *p = b.p;
    /* len + more past SIZE_MAX: refused before anything is allocated */
    ck_assert(!ds__copy_buf_reserve(&b, SIZE_MAX - 18));
    ck_assert(!ds__copy_buf_reserve(&b, SIZE_MAX));
    ck_assert_ptr_eq(b.p, p);
    ck_assert_uint_eq(b.len, 19);
    ck_assert_uint_eq(b.cap, DS_COPY_CHUNK);
    /* an allocation that fails leaves the buffer as it was */
    ds__test_fail_alloc_after(1);
    ck_assert(!ds__copy_buf_reserve(&b, DS_COPY_CHUNK));
    ds__test_fail_alloc_after(0);
    ck_assert_ptr_eq(b.p, p);
    ck_assert_uint_eq(b.cap, DS_COPY_CHUNK);
    ck_assert(ds__copy_buf_reserve(&b, DS_COPY_CHUNK));
    ck_assert_uint_eq(b.cap, 2 * DS_COPY_CHUNK);
    ck_assert_int_eq(b.p[18], 'x');
    ds__free(b.p);

    /* one row's size: each field fits a COPY field (int32 length) */
    ck_assert_uint_eq(ds__copy_event_row_size(5, 2), 2 + 12 + 4 + 5 + 4 + 2 + 12);
    ck_assert_uint_eq(ds__copy_event_row_size(INT32_MAX, 0),
                      (size_t)INT32_MAX + 34);
    ck_assert_uint_eq(ds__copy_event_row_size((size_t)INT32_MAX + 1, 0), 0);
    ck_assert_uint_eq(ds__copy_event_row_size(0, SIZE_MAX), 0);
    ck_assert_uint_eq(ds__copy_event_row_size(SIZE_MAX - 10, 10), 0);
}
END_TEST

Suite *ds_test_parsers_suite(void) {
    Suite *s = suite_create("parsers");
    TCase *tc = tcase_create("config_shown");
    tcase_add_test(tc, test_parsers_redis_url_shown_is_the_same_setting);
    tcase_add_test(tc, test_parsers_pg_url_shown_is_shown_the_same_again);
    suite_add_tcase(s, tc);
    tc = tcase_create("config_replica_urls");
    tcase_add_test(tc, test_parsers_replica_list_white_space_is_no_url);
    suite_add_tcase(s, tc);
    tc = tcase_create("cache_entry");
    tcase_add_test(tc, test_parsers_cache_entry_reads_what_it_writes);
    suite_add_tcase(s, tc);
    tc = tcase_create("queue_replies");
    tcase_add_test(tc, test_parsers_queue_reserve_answer_of_strings_only);
    tcase_add_test(tc, test_parsers_queue_entry_id_kept_whole_or_refused);
    suite_add_tcase(s, tc);
    tc = tcase_create("copy_buffer");
    tcase_add_test(tc, test_parsers_copy_buf_sizes_never_wrap);
    suite_add_tcase(s, tc);
    tc = tcase_create("migration_files");
    tcase_add_test(tc, test_parsers_migration_pair_spells_version_once);
    suite_add_tcase(s, tc);
    return s;
}
