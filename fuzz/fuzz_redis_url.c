/*
 * libFuzzer target for the REDIS_URL parser (`make fuzz`).
 *
 * The input is a URL. When its first byte is odd, a fixed password is
 * spliced in as the userinfo ("redis://u:<marker>@" + the rest), and no
 * error message may repeat it (unless the rest spells it too). Properties checked on every input:
 *  - validating (out NULL) and parsing agree on the status;
 *  - a failure is DS_ERR_CONFIG with a message, and leaves nothing to free;
 *  - a success has its fields in range and NUL-terminated within bounds;
 *  - a success round-trips: the URL rebuilt from the fields, with user and
 *    password fully percent-encoded, parses to the same fields.
 * Any violated property traps, which libFuzzer reports as a crash.
 */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/redis_url.h"

#define MARKER "Mk7pQ2xZw9"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            __builtin_trap();                                                  \
        }                                                                      \
    } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (ds_init(NULL) != DS_OK) /* secret strings live in libsodium memory */
        abort();
    return 0;
}

static bool nul_within(const char *s, size_t cap) {
    return memchr(s, '\0', cap) != NULL;
}

/* Appends s, percent-encoding every byte. */
static size_t encode_all(char *out, const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        out[o++] = '%';
        out[o++] = hex[*c >> 4];
        out[o++] = hex[*c & 15];
    }
    return o;
}

static void check_fields(const ds__redis_url *u) {
    CHECK(!(u->tls && u->unix_socket));
    CHECK(nul_within(u->host, sizeof u->host));
    CHECK(nul_within(u->path, sizeof u->path));
    CHECK(u->db >= 0 && u->db <= 1000000);
    if (u->unix_socket) {
        CHECK(u->path[0] == '/');
        CHECK(!strpbrk(u->path, "?#@"));
    } else {
        CHECK(u->host[0] != '\0');
        CHECK(u->port >= 1 && u->port <= 65535);
    }
    if (u->user) {
        CHECK(u->user[0] != '\0' && !strpbrk(u->user, " \t\r\n"));
        CHECK(u->password != NULL);
    }
    if (u->password)
        CHECK(u->password[0] != '\0');
}

static void round_trip(const ds__redis_url *u) {
    size_t cap = 64 + 3 * (u->user ? strlen(u->user) : 0) +
                 3 * (u->password ? strlen(u->password) : 0) +
                 sizeof u->host + sizeof u->path;
    char *url = malloc(cap);
    CHECK(url);
    size_t o = (size_t)sprintf(url, "%s",
                               u->unix_socket ? "unix://"
                               : u->tls       ? "rediss://"
                                              : "redis://");
    if (u->password) {
        if (u->user)
            o += encode_all(url + o, u->user);
        url[o++] = ':';
        o += encode_all(url + o, u->password);
        url[o++] = '@';
    }
    if (u->unix_socket)
        sprintf(url + o, "%s?db=%d", u->path, u->db);
    else if (strpbrk(u->host, ":%")) /* only inside [brackets] */
        sprintf(url + o, "[%s]:%d/%d", u->host, u->port, u->db);
    else
        sprintf(url + o, "%s:%d/%d", u->host, u->port, u->db);

    ds__redis_url again;
    ds_error err;
    CHECK(ds__redis_url_parse(url, "REDIS_URL", &again, &err) == DS_OK);
    CHECK(again.tls == u->tls && again.unix_socket == u->unix_socket);
    CHECK(strcmp(again.host, u->host) == 0 && strcmp(again.path, u->path) == 0);
    CHECK(again.db == u->db);
    if (!u->unix_socket)
        CHECK(again.port == u->port);
    CHECK(!u->user == !again.user && (!u->user || !strcmp(u->user, again.user)));
    CHECK(!u->password == !again.password &&
          (!u->password || !strcmp(u->password, again.password)));
    ds__redis_url_clear(&again);
    free(url);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    bool splice = data[0] & 1;
    static const char *const schemes[] = {"redis://", "rediss://", "unix://"};
    const char *scheme = splice ? schemes[(data[0] >> 1) % 3] : "";
    data++;
    size--;
    size_t cap = strlen(scheme) + sizeof "u:" MARKER "@" + size;
    char *url = malloc(cap);
    CHECK(url);
    size_t o = 0;
    if (splice)
        o = (size_t)sprintf(url, "%su:" MARKER "@", scheme);
    memcpy(url + o, data, size);
    url[o + size] = '\0'; /* a NUL in the input ends the URL early */

    ds__redis_url u;
    ds_error err, verr;
    memset(&err, 0, sizeof err);
    memset(&verr, 0, sizeof verr);
    ds_status st = ds__redis_url_parse(url, "REDIS_URL", &u, &err);
    ds_status vst = ds__redis_url_parse(url, "REDIS_URL", NULL, &verr);
    CHECK(st == vst);
    if (st != DS_OK) {
        CHECK(st == DS_ERR_CONFIG && err.code == st);
        CHECK(strncmp(err.message, "REDIS_URL: ", 11) == 0);
        CHECK(strcmp(err.message, verr.message) == 0);
        /* (the input may spell the marker itself, e.g. as a query key) */
        CHECK(!strstr(err.message, MARKER) ||
              memmem(data, size, MARKER, strlen(MARKER)));
        CHECK(u.user == NULL && u.password == NULL);
    } else {
        check_fields(&u);
        if (splice) {
            /* the marker is inside the password, wherever the last '@' is */
            CHECK(u.password && strstr(u.password, MARKER));
        }
        round_trip(&u);
        ds__redis_url_clear(&u);
    }
    free(url);
    return 0;
}
