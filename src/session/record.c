/* The ds_session record: one allocation holding the struct and its strings,
 * built from a database row (session.c) or a cache entry (cache.c). */
#include <string.h>

#include "session/session_internal.h"

ds_session *ds__session_new(int64_t id, int64_t user_id, int64_t created,
                            int64_t last_seen, int64_t expires,
                            const char *ua, size_t ua_len, const char *ip,
                            size_t ip_len, bool revoked) {
    size_t size = sizeof(ds_session) + (ua ? ua_len + 1 : 0) + (ip ? ip_len + 1 : 0);
    ds_session *s = ds__malloc(size);
    if (!s)
        return NULL;
    s->id = id;
    s->user_id = user_id;
    s->created_at_us = created;
    s->last_seen_at_us = last_seen;
    s->expires_at_us = expires;
    s->revoked = revoked;
    char *p = (char *)(s + 1);
    s->user_agent = NULL;
    s->ip = NULL;
    if (ua) {
        memcpy(p, ua, ua_len);
        p[ua_len] = '\0';
        s->user_agent = p;
        p += ua_len + 1;
    }
    if (ip) {
        memcpy(p, ip, ip_len);
        p[ip_len] = '\0';
        s->ip = p;
    }
    return s;
}

DS_EXPORT void ds_session_free(ds_session *session) { ds__free(session); }

DS_EXPORT void ds_session_list_free(ds_session **sessions, size_t count) {
    if (!sessions)
        return;
    for (size_t i = 0; i < count; i++)
        ds__free(sessions[i]);
    ds__free(sessions);
}
