/* Jobs from what the queue reads back from Redis (queue_internal.h):
 * stream entries and the reserve script's answer. */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue_internal.h"
#include "redis/redis_internal.h"

int ds__queue_count(const char *s) {
    long long v = s ? strtoll(s, NULL, 10) : 0;
    return v < 0 ? 0 : v > INT_MAX ? INT_MAX : (int)v;
}

/* A job from reply strings (attempt at least 1). `enq` may be NULL. */
/* "<ms>-<seq>", as Redis writes every stream entry id: the job keeps it
 * whole, since ack, touch, fail and replay name the entry by it. */
static bool is_stream_id(const char *s, size_t len, size_t cap) {
    if (len == 0 || len >= cap)
        return false;
    size_t k = 0, digits = 0;
    while (k < len && s[k] >= '0' && s[k] <= '9')
        k++, digits++;
    if (!digits || k == len || s[k++] != '-')
        return false;
    digits = 0;
    while (k < len && s[k] >= '0' && s[k] <= '9')
        k++, digits++;
    return digits > 0 && k == len;
}

static ds_status make_job(const char *entry, size_t entry_len, const char *id,
                          int attempt, const char *enq,
                          const redisReply *payload, const char *last_error,
                          ds_queue_job **out, ds_error *err) {
    *out = NULL;
    if (!is_stream_id(entry, entry_len, sizeof(*out)->entry_id))
        return ds__error_set(err, DS_ERR_INTERNAL,
                             "queue: an entry id that is not a stream id "
                             "(%zu bytes)",
                             entry_len);
    ds_queue_job *j = ds__calloc(1, sizeof *j);
    if (!j)
        return ds__error_set(err, DS_ERR_NOMEM, "queue: out of memory");
    snprintf(j->entry_id, sizeof j->entry_id, "%.*s", (int)entry_len, entry);
    snprintf(j->id, sizeof j->id, "%s", id ? id : "");
    j->attempt = attempt < 1 ? 1 : attempt;
    j->enqueued_at_ms = enq ? strtoll(enq, NULL, 10) : 0;
    snprintf(j->last_error, sizeof j->last_error, "%s",
             last_error ? last_error : "");
    json_error_t jerr;
    j->payload = payload && payload->type == REDIS_REPLY_STRING
                     ? json_loadb(payload->str, payload->len, JSON_DECODE_ANY,
                                  &jerr)
                     : NULL;
    if (!j->payload) {
        ds__free(j);
        return ds__error_set(err, DS_ERR_INTERNAL,
                             "queue: entry %.*s holds no valid JSON payload",
                             (int)entry_len, entry);
    }
    *out = j;
    return DS_OK;
}

/* Field `name` of a flat [k, v, k, v...] array reply. */
static const redisReply *field(const redisReply *kv, const char *name) {
    if (!kv || kv->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < kv->elements; i += 2)
        if (kv->element[i]->type == REDIS_REPLY_STRING &&
            strcmp(kv->element[i]->str, name) == 0)
            return kv->element[i + 1];
    return NULL;
}

static const char *field_str(const redisReply *kv, const char *name) {
    const redisReply *v = field(kv, name);
    return v && v->type == REDIS_REPLY_STRING ? v->str : NULL;
}

ds_status ds__queue_job_from_entry(const redisReply *e, int attempt_base,
                                   ds_queue_job **out, ds_error *err) {
    *out = NULL;
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
        return ds__redis_unexpected(e, "queue entry", err);
    const redisReply *kv = e->element[1];
    int made = ds__queue_count(field_str(kv, "a"));
    int attempt = made > INT_MAX - attempt_base ? INT_MAX : made + attempt_base;
    const char *enq = field_str(kv, "e");
    char enq_buf[24];
    if (!enq) {
        snprintf(enq_buf, sizeof enq_buf, "%lld",
                 strtoll(e->element[0]->str, NULL, 10));
        enq = enq_buf;
    }
    return make_job(e->element[0]->str, e->element[0]->len, field_str(kv, "id"),
                    attempt, enq, field(kv, "p"), field_str(kv, "err"), out,
                    err);
}

ds_status ds__queue_job_from_reserve(const redisReply *r, ds_queue_job **job,
                                     ds__queue_reserve_info *info,
                                     ds_error *err) {
    *job = NULL;
    *info = (ds__queue_reserve_info){.next_due_ms = -1};
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 9)
        return ds__redis_unexpected(r, "queue reserve", err);
    /* the script answers strings only; anything else is not its answer */
    for (size_t i = 0; i < 9; i++)
        if (r->element[i]->type != REDIS_REPLY_STRING)
            return ds__redis_unexpected(r->element[i], "queue reserve", err);
    /* the script's moves happened even when its job cannot be decoded */
    info->dead_lettered = ds__queue_count(r->element[7]->str);
    if (r->element[0]->len == 0) {
        info->next_due_ms = strtoll(r->element[6]->str, NULL, 10);
        return DS_OK;
    }
    ds_status st = make_job(r->element[0]->str, r->element[0]->len,
                            r->element[1]->str,
                            ds__queue_count(r->element[2]->str),
                            r->element[3]->str, r->element[4],
                            r->element[5]->str, job, err);
    if (st == DS_OK)
        info->reclaimed = strcmp(r->element[8]->str, "1") == 0;
    return st;
}
