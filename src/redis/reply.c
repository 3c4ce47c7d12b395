/* Redis replies: errors mapped to ds_status (with the server's retryable
 * codes), unexpected reply types, and freeing. Used by the connection
 * layer (conn.c) and the handle (redis.c) alike. */
#include <string.h>

#include "redis/handle.h"

/* Server errors worth retrying: the server is starting, busy with a script,
 * failing over, or a replica. */
static bool reply_error_retryable(const char *s) {
    static const char *const codes[] = {"LOADING", "BUSY", "TRYAGAIN",
                                        "MASTERDOWN", "READONLY", "CLUSTERDOWN",
                                        "NOREPLICAS", "OOM"};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        size_t n = strlen(codes[i]);
        if (strncmp(s, codes[i], n) == 0 && (s[n] == ' ' || s[n] == '\0'))
            return true;
    }
    return false;
}

bool ds__redis_reply_is_error(const redisReply *reply, const char *code) {
    if (!reply || reply->type != REDIS_REPLY_ERROR || !reply->str)
        return false;
    size_t n = strlen(code);
    return strncmp(reply->str, code, n) == 0 &&
           (reply->str[n] == ' ' || reply->str[n] == '\0');
}

ds_status ds__redis_reply_error(const redisReply *reply, const char *context,
                                ds_error *err) {
    const char *msg = reply && reply->str ? reply->str : "error reply";
    ds__error_set(err, DS_ERR_REDIS, "%s: %.400s", context, msg);
    if (err)
        err->retryable = reply_error_retryable(msg);
    return DS_ERR_REDIS;
}

ds_status ds__redis_unexpected(const redisReply *reply, const char *context,
                               ds_error *err) {
    static const char *const names[] = {"?",   "string", "array", "integer",
                                        "nil", "status", "error"};
    int t = reply ? reply->type : 0;
    ds__error_set(err, DS_ERR_REDIS, "%s: unexpected %s reply", context,
                  names[t >= 1 && t <= 6 ? t : 0]);
    if (err)
        err->retryable = false;
    return DS_ERR_REDIS;
}

void ds__redis_replies_free(redisReply **replies, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (replies[i])
            freeReplyObject(replies[i]);
        replies[i] = NULL;
    }
}
