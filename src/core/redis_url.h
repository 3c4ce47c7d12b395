/* REDIS_URL parsing: core's config validates the setting with it and the
 * Redis handle connects with it.
 * No third-party headers here. */
#ifndef DS_CORE_REDIS_URL_H
#define DS_CORE_REDIS_URL_H

#include <stdbool.h>

#include "datastore/core.h"

#define DS_REDIS_HOST_MAX 256
#define DS_REDIS_PATH_MAX 108 /* sun_path */

typedef struct ds__redis_url {
    bool tls;                       /* rediss:// */
    bool unix_socket;               /* unix:// */
    char host[DS_REDIS_HOST_MAX];   /* without IPv6 brackets */
    int port;
    char path[DS_REDIS_PATH_MAX];   /* unix socket path */
    char *user;                     /* ds__strdup'd, NULL: password-only AUTH */
    char *password;                 /* secret string, NULL: no AUTH */
    int db;
} ds__redis_url;

/*
 * Parses `redis://[[user]:password@]host[:port][/db]`, the same with
 * `rediss://` (TLS), or `unix://[[user]:password@]/path[?db=N]`. User and
 * password are percent-decoded; an empty user means password-only AUTH.
 * `varname` names the setting in messages, which never repeat the URL or the
 * password. `out` may be NULL to only validate. Free with
 * ds__redis_url_clear().
 */
ds_status ds__redis_url_parse(const char *url, const char *varname,
                              ds__redis_url *out, ds_error *err);
void ds__redis_url_clear(ds__redis_url *u);

#endif
