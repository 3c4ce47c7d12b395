/*
 * libFuzzer target for queue jobs as read back from Redis (`make fuzz`):
 * stream entries (XRANGE, XREADGROUP) that another process may have
 * written, and the reserve script's answer.
 *
 * Each input is used twice:
 *  1. as RESP bytes from the server, read by hiredis's own reply reader,
 *     then decoded as a stream entry and as a reserve answer: a failure is
 *     DS_ERR_REDIS or DS_ERR_INTERNAL with no job; a job holds a payload,
 *     an attempt of at least 1 and the entry id exactly as sent;
 *  2. as the fields of an entry (split at 0x1f: id, attempts, enqueued,
 *     payload, last error) sent as RESP: when they fit, the job holds them.
 * Any violated property traps, which libFuzzer reports as a crash.
 */
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue_internal.h"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            __builtin_trap();                                                  \
        }                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whether an array header announces more than 4096 elements: the hiredis
 * reader of Debian 12 (0.14, no maxelements) allocates an announced array
 * up front, and the decoder is under test here, not hiredis's limits. */
static bool huge_array(const char *buf, size_t len) {
    for (size_t k = 0; k < len; k++) {
        if (buf[k] != '*')
            continue;
        long n = 0;
        for (size_t d = k + 1; d < len && buf[d] >= '0' && buf[d] <= '9'; d++)
            if ((n = n * 10 + (buf[d] - '0')) > 4096)
                return true;
    }
    return false;
}

/* One reply from RESP bytes, NULL when they hold none. `trusted`: headers
 * of our own making (bulk contents may look like anything). */
static redisReply *read_reply(const char *buf, size_t len, bool trusted) {
    if (!trusted && huge_array(buf, len))
        return NULL;
    redisReader *r = redisReaderCreate();
    CHECK(r);
    r->maxbuf = 0;
    void *reply = NULL;
    if (redisReaderFeed(r, buf, len) != REDIS_OK ||
        redisReaderGetReply(r, &reply) != REDIS_OK)
        reply = NULL;
    redisReaderFree(r);
    return reply;
}

static void check_job(const ds_queue_job *job) {
    CHECK(job->payload != NULL);
    CHECK(job->attempt >= 1);
    CHECK(memchr(job->id, '\0', sizeof job->id));
    CHECK(memchr(job->entry_id, '\0', sizeof job->entry_id));
    CHECK(memchr(job->last_error, '\0', sizeof job->last_error));
}

static void check_failure(ds_status st, const ds_error *err,
                          const ds_queue_job *job) {
    CHECK(st == DS_ERR_REDIS || st == DS_ERR_INTERNAL);
    CHECK(err->code == st && err->message[0] != '\0');
    CHECK(job == NULL);
}

static void as_reply(const char *buf, size_t len, int attempt_base) {
    redisReply *r = read_reply(buf, len, false);
    if (!r)
        return;
    ds_queue_job *job = (ds_queue_job *)&job;
    ds_error err;
    ds_status st = ds__queue_job_from_entry(r, attempt_base, &job, &err);
    if (st == DS_OK) {
        check_job(job);
        /* the entry id is the one sent, whole */
        CHECK(strlen(job->entry_id) == r->element[0]->len &&
              memcmp(job->entry_id, r->element[0]->str, r->element[0]->len) ==
                  0);
        ds_queue_job_free(job);
    } else {
        check_failure(st, &err, job);
    }
    ds__queue_reserve_info info;
    job = (ds_queue_job *)&job;
    st = ds__queue_job_from_reserve(r, &job, &info, &err);
    if (st == DS_OK && job) {
        check_job(job);
        CHECK(strlen(job->entry_id) == r->element[0]->len);
        CHECK(info.next_due_ms == -1);
        CHECK(info.dead_lettered >= 0);
        ds_queue_job_free(job);
    } else if (st != DS_OK) {
        check_failure(st, &err, job);
    }
    freeReplyObject(r);
}

/* RESP bulk string. */
static size_t put_bulk(char *out, const char *s, size_t n) {
    size_t o = (size_t)sprintf(out, "$%zu\r\n", n);
    memcpy(out + o, s, n);
    o += n;
    memcpy(out + o, "\r\n", 2);
    return o + 2;
}

static void as_fields(const char *buf, size_t len) {
    const char *f[5] = {"", "", "", "", ""};
    size_t fl[5] = {0, 0, 0, 0, 0};
    size_t k = 0;
    const char *p = buf, *end = buf + len;
    while (k < 5) {
        const char *sep = memchr(p, 0x1f, (size_t)(end - p));
        f[k] = p;
        fl[k] = (size_t)((sep ? sep : end) - p);
        k++;
        if (!sep)
            break;
        p = sep + 1;
    }
    static const char *const names[5] = {"id", "a", "e", "p", "err"};
    char *resp = malloc(len + 256);
    CHECK(resp);
    size_t o = (size_t)sprintf(resp, "*2\r\n");
    o += put_bulk(resp + o, "1765000000000-7", 15);
    o += (size_t)sprintf(resp + o, "*%zu\r\n", 2 * k);
    for (size_t i = 0; i < k; i++) {
        o += put_bulk(resp + o, names[i], strlen(names[i]));
        o += put_bulk(resp + o, f[i], fl[i]);
    }
    redisReply *r = read_reply(resp, o, true);
    CHECK(r);
    ds_queue_job *job;
    ds_error err;
    ds_status st = ds__queue_job_from_entry(r, 1, &job, &err);
    if (st == DS_OK) {
        check_job(job);
        CHECK(strcmp(job->entry_id, "1765000000000-7") == 0);
        /* text without NUL that fits is kept whole */
        if (fl[0] < sizeof job->id && !memchr(f[0], '\0', fl[0]))
            CHECK(strlen(job->id) == fl[0] && memcmp(job->id, f[0], fl[0]) == 0);
        if (k > 4 && fl[4] < sizeof job->last_error && !memchr(f[4], '\0', fl[4]))
            CHECK(strlen(job->last_error) == fl[4]);
        char *a = k > 1 ? strndup(f[1], fl[1]) : NULL;
        int made = ds__queue_count(a);
        free(a);
        CHECK(job->attempt == (made == INT_MAX ? INT_MAX : made + 1));
        ds_queue_job_free(job);
    } else {
        /* only a payload that is not JSON is refused */
        CHECK(st == DS_ERR_INTERNAL && job == NULL);
        json_error_t jerr;
        json_t *pl = k > 3 ? json_loadb(f[3], fl[3], JSON_DECODE_ANY, &jerr)
                           : NULL;
        CHECK(pl == NULL);
    }
    freeReplyObject(r);
    free(resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    int attempt_base = data[0] & 1;
    as_reply((const char *)data + 1, size - 1, attempt_base);
    as_fields((const char *)data + 1, size - 1);
    return 0;
}
