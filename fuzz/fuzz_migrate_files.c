/*
 * libFuzzer target for the migration file set (`make fuzz`): file names
 * (NNNN_name.up.sql / .down.sql), up/down pairing, the first-line
 * directive "-- ds:no-transaction", NUL bytes and checksums, then the
 * splitter over every accepted file, as a directory given to the runner
 * would go through them.
 *
 * The input is a list of files separated by 0x1e; in each, the name runs
 * to the first '\n' and the rest is the file's contents.
 *
 * Properties checked on every input:
 *  - a success pairs every file: versions ascending and positive, names
 *    rebuilt from version and name, the contents borrowed from the right
 *    file, the directive read from the first line only, the checksum the
 *    SHA-256 of the up file, and every version found by lookup;
 *  - a failure is DS_ERR_MIGRATION naming one of the files.
 * Any violated property traps, which libFuzzer reports as a crash.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/migrate_internal.h"

#define MAX_FILES 8

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
    if (ds_init(NULL) != DS_OK)
        abort();
    return 0;
}

/* The directive, as documented: the exact mark, then only blanks to the
 * end of the first line. */
static bool expect_no_tx(const char *s, size_t len) {
    static const char mark[] = "-- ds:no-transaction";
    size_t n = sizeof mark - 1;
    if (len < n || memcmp(s, mark, n) != 0)
        return false;
    for (size_t k = n; k < len && s[k] != '\n'; k++)
        if (!strchr(" \t\r", s[k]))
            return false;
    return true;
}

static const ds__raw_file *by_name(const ds__raw_file *raw, size_t n,
                                   const char *name) {
    for (size_t k = 0; k < n; k++)
        if (strcmp(raw[k].name, name) == 0)
            return &raw[k];
    return NULL;
}

static ds_status count_stmt(void *ud, const ds__sql_stmt *s, ds_error *err) {
    (void)s;
    (void)err;
    (*(size_t *)ud)++;
    return DS_OK;
}

static void check_split(const char *name, const char *text, size_t len) {
    size_t n = 0;
    ds_error err;
    ds_status st = ds__sql_split(name, text, len, count_stmt, &n, &err);
    CHECK(st == DS_OK || (st == DS_ERR_MIGRATION &&
                          strncmp(err.message, name, strlen(name)) == 0));
}

static void check_set(const ds__migration_set *set, const ds__raw_file *raw,
                      size_t n) {
    CHECK(set->count * 2 == n);
    for (size_t k = 0; k < set->count; k++) {
        const ds__migration_file *f = &set->files[k];
        CHECK(f->version > 0);
        if (k > 0)
            CHECK(f->version > set->files[k - 1].version);
        char *rest;
        CHECK(strtoll(f->up_file, &rest, 10) == f->version && *rest == '_');
        size_t nl = strlen(f->name);
        CHECK(nl > 0 && strncmp(rest + 1, f->name, nl) == 0 &&
              strcmp(rest + 1 + nl, ".up.sql") == 0);
        const ds__raw_file *up = by_name(raw, n, f->up_file);
        const ds__raw_file *down = by_name(raw, n, f->down_file);
        CHECK(up && down && up != down);
        CHECK(f->up == up->data && f->up_len == up->len);
        CHECK(f->down == down->data && f->down_len == down->len);
        size_t ul = strlen(f->up_file), dl = strlen(f->down_file);
        CHECK(ul > 7 && strcmp(f->up_file + ul - 7, ".up.sql") == 0);
        CHECK(dl > 9 && strcmp(f->down_file + dl - 9, ".down.sql") == 0);
        CHECK(ul - 7 == dl - 9 && memcmp(f->up_file, f->down_file, ul - 7) == 0);
        CHECK(f->up_no_tx == expect_no_tx(f->up, f->up_len));
        CHECK(f->down_no_tx == expect_no_tx(f->down, f->down_len));
        CHECK(memchr(f->up, '\0', f->up_len) == NULL);

        unsigned char h[crypto_hash_sha256_BYTES];
        crypto_hash_sha256(h, (const unsigned char *)f->up, f->up_len);
        char hex[65];
        sodium_bin2hex(hex, sizeof hex, h, sizeof h);
        CHECK(strcmp(hex, f->checksum) == 0);

        CHECK(ds__migration_set_find(set, f->version) == f);
        check_split(f->up_file, f->up, f->up_len);
        check_split(f->down_file, f->down, f->down_len);
    }
    CHECK(ds__migration_set_find(set, 0) == NULL);
    if (set->count)
        CHECK(ds__migration_set_find(set, set->files[set->count - 1].version +
                                              1) == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ds__raw_file raw[MAX_FILES];
    char *names[MAX_FILES], *bodies[MAX_FILES];
    size_t n = 0;
    const char *p = (const char *)data, *end = p + size;
    while (p <= end && n < MAX_FILES) {
        const char *rec_end = memchr(p, 0x1e, (size_t)(end - p));
        if (!rec_end)
            rec_end = end;
        const char *nl = memchr(p, '\n', (size_t)(rec_end - p));
        const char *name_end = nl ? nl : rec_end;
        const char *body = nl ? nl + 1 : rec_end;
        names[n] = strndup(p, (size_t)(name_end - p));
        /* exactly the body's bytes, so ASan sees a read past the end */
        size_t blen = (size_t)(rec_end - body);
        bodies[n] = malloc(blen ? blen : 1);
        CHECK(names[n] && bodies[n]);
        memcpy(bodies[n], body, blen);
        raw[n].name = names[n];
        raw[n].data = bodies[n];
        raw[n].len = blen;
        n++;
        p = rec_end + 1;
    }

    ds__migration_set *set = (ds__migration_set *)&set;
    ds_error err;
    memset(&err, 0, sizeof err);
    ds_status st = ds__migration_set_build(raw, n, &set, &err);
    if (st == DS_OK) {
        check_set(set, raw, n);
        ds__migration_set_free(set);
    } else {
        CHECK(st == DS_ERR_MIGRATION && err.code == st && set == NULL);
        bool names_a_file = false;
        for (size_t k = 0; k < n; k++) {
            /* a name longer than the message is cut with it */
            size_t len = strlen(raw[k].name);
            if (len > sizeof err.message - 1)
                len = sizeof err.message - 1;
            if (strncmp(err.message, raw[k].name, len) == 0)
                names_a_file = true;
        }
        CHECK(names_a_file);
    }
    for (size_t k = 0; k < n; k++) {
        free(names[k]);
        free(bodies[k]);
    }
    return 0;
}
