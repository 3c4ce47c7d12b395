/* The migration files: the set built into the library or a directory's,
 * paired up/down by version, validated and checksummed. Both sources go
 * through the same validation, so a file that is refused from a directory
 * is refused when embedded too. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "migrate/migrate_internal.h"

#define MAX_FILE_BYTES (64L * 1024 * 1024)
#define MAX_FILES 100000

/* NNNN_name.up.sql / NNNN_name.down.sql. On success `name` is the part
 * between the first '_' and ".up"/".down" (not NUL-terminated). */
static bool parse_file_name(const char *fname, int64_t *version,
                            const char **name, size_t *name_len, bool *up) {
    const char *p = fname;
    int64_t v = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9') {
        if (digits == 18)
            return false;
        v = v * 10 + (*p - '0');
        digits++;
        p++;
    }
    if (!digits || v <= 0 || *p != '_')
        return false;
    p++;
    const char *start = p;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
           (*p >= '0' && *p <= '9') || *p == '_')
        p++;
    if (p == start)
        return false;
    if (strcmp(p, ".up.sql") == 0)
        *up = true;
    else if (strcmp(p, ".down.sql") == 0)
        *up = false;
    else
        return false;
    *version = v;
    *name = start;
    *name_len = (size_t)(p - start);
    return true;
}

static bool starts_no_tx(const char *data, size_t len) {
    size_t mark = strlen(DS_MIGRATE_NO_TX_MARK);
    if (len < mark || memcmp(data, DS_MIGRATE_NO_TX_MARK, mark) != 0)
        return false;
    for (size_t k = mark; k < len && data[k] != '\n'; k++)
        if (data[k] != ' ' && data[k] != '\t' && data[k] != '\r')
            return false;
    return true;
}

/*
 * Shipped migrations rewritten in place so that they run online (the
 * schema they leave is the same): the checksum each file had before. A
 * database that applied the earlier text is at the same version and stays
 * valid; the runner never runs the file again there. Only these exact
 * checksums are accepted, for that version and name: any other edit of an
 * applied file is still refused.
 */
static const struct {
    int64_t version;
    const char *name;
    const char *checksum;
} superseded[] = {
    {2, "analytics_partitions",
     "de4020aadf46afdd51edf143771edb080ec839ce7f0b8843e613964027f0dd08"},
    {3, "memory_embeddings",
     "94412cc54b322e17b9c45062e38117539c274a7630fa1ea87ef9ac1e36bc7ab4"},
    {4, "users_soft_delete_status",
     "3580b0c7ebdea254145b12399c0af38ce1925a6633e62c984f7509e8cca8e4b1"},
    /* 0004 in one transaction (its backfill held users' ACCESS EXCLUSIVE) */
    {4, "users_soft_delete_status",
     "e4e56993c01ac52478078ed401f73a4675079024347f3ea6379979f2916269b8"},
};

bool ds__migration_checksum_matches(const ds__migration_file *f,
                                    const char *name, const char *checksum) {
    if (strcmp(f->name, name) != 0)
        return false;
    if (strcmp(f->checksum, checksum) == 0)
        return true;
    for (size_t k = 0; k < sizeof superseded / sizeof superseded[0]; k++)
        if (superseded[k].version == f->version &&
            !strcmp(superseded[k].name, name) &&
            !strcmp(superseded[k].checksum, checksum))
            return true;
    return false;
}

static void sha256_hex(const char *data, size_t len, char out[65]) {
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)data, len);
    static const char hex[] = "0123456789abcdef";
    for (size_t k = 0; k < sizeof h; k++) {
        out[2 * k] = hex[h[k] >> 4];
        out[2 * k + 1] = hex[h[k] & 15];
    }
    out[64] = '\0';
}

typedef struct parsed {
    const ds__raw_file *raw;
    int64_t version;
    const char *name;
    size_t name_len;
    bool up;
} parsed;

static int by_version(const void *a, const void *b) {
    const parsed *x = a, *y = b;
    if (x->version != y->version)
        return x->version < y->version ? -1 : 1;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c)
        return c;
    if (x->name_len != y->name_len)
        return x->name_len < y->name_len ? -1 : 1;
    return (int)y->up - (int)x->up; /* up first */
}

void ds__migration_set_free(ds__migration_set *set) {
    if (!set || set->shared)
        return;
    for (size_t k = 0; k < set->count; k++) {
        ds__free(set->files[k].name);
        ds__free(set->files[k].up_file);
        ds__free(set->files[k].down_file);
    }
    ds__free(set->files);
    for (size_t k = 0; k < set->nbuffers; k++)
        ds__free(set->buffers[k]);
    ds__free(set->buffers);
    ds__free(set);
}

static ds_status build_pairs(parsed *ps, size_t n, ds__migration_set *set,
                             ds_error *err) {
    set->files = ds__calloc(n ? n : 1, sizeof *set->files);
    if (!set->files)
        return ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    for (size_t k = 0; k < n;) {
        /* ps is sorted by version, name, up first: [k, end) is a version */
        size_t end = k + 1;
        while (end < n && ps[end].version == ps[k].version)
            end++;
        const parsed *a = &ps[k];
        for (size_t j = k + 1; j < end; j++)
            if (ps[j].name_len != a->name_len ||
                memcmp(ps[j].name, a->name, a->name_len) != 0)
                return ds__error_set(err, DS_ERR_MIGRATION,
                                     "%s and %s have the same version %lld: "
                                     "each version belongs to one migration",
                                     a->raw->name, ps[j].raw->name,
                                     (long long)a->version);
        const parsed *b = end - k == 2 ? &ps[k + 1] : NULL;
        if (end - k > 2 || (b && a->up == b->up))
            return ds__error_set(err, DS_ERR_MIGRATION,
                                 "%s: version %lld has more than one up or "
                                 "down file",
                                 a->raw->name, (long long)a->version);
        if (!b) {
            bool have_up = a->up;
            return ds__error_set(err, DS_ERR_MIGRATION,
                                 "%s has no matching %.*s.%s.sql: every "
                                 "migration needs an up and a down file",
                                 a->raw->name,
                                 (int)(strlen(a->raw->name) -
                                       (have_up ? 7 : 9)),
                                 a->raw->name, have_up ? "down" : "up");
        }
        /* "0003_x.up.sql" pairs with "0003_x.down.sql", not "3_x.down.sql":
         * one version, one spelling, so that a file is found by its name. */
        size_t stem = strlen(a->raw->name) - 7; /* a: the up file */
        if (strlen(b->raw->name) - 9 != stem ||
            memcmp(a->raw->name, b->raw->name, stem) != 0)
            return ds__error_set(err, DS_ERR_MIGRATION,
                                 "%s and %s spell version %lld differently: "
                                 "name the down file %.*s.down.sql",
                                 a->raw->name, b->raw->name,
                                 (long long)a->version, (int)stem,
                                 a->raw->name);
        ds__migration_file *f = &set->files[set->count++];
        f->version = a->version;
        f->name = ds__strndup(a->name, a->name_len);
        f->up_file = ds__strdup(a->raw->name);
        f->down_file = ds__strdup(b->raw->name);
        if (!f->name || !f->up_file || !f->down_file)
            return ds__error_set(err, DS_ERR_NOMEM,
                                 "migrations: out of memory");
        f->up = a->raw->data;
        f->up_len = a->raw->len;
        f->down = b->raw->data;
        f->down_len = b->raw->len;
        f->up_no_tx = starts_no_tx(f->up, f->up_len);
        f->down_no_tx = starts_no_tx(f->down, f->down_len);
        sha256_hex(f->up, f->up_len, f->checksum);
        k = end;
    }
    return DS_OK;
}

ds_status ds__migration_set_build(const ds__raw_file *raw, size_t n,
                                  ds__migration_set **out, ds_error *err) {
    *out = NULL;
    ds_status st = ds__ensure_init(err); /* libsodium for SHA-256 */
    if (st != DS_OK)
        return st;
    parsed *ps = ds__calloc(n ? n : 1, sizeof *ps);
    if (!ps)
        return ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    for (size_t k = 0; k < n; k++) {
        parsed *p = &ps[k];
        p->raw = &raw[k];
        if (!parse_file_name(raw[k].name, &p->version, &p->name, &p->name_len,
                             &p->up)) {
            ds__free(ps);
            return ds__error_set(err, DS_ERR_MIGRATION,
                                 "%s: not a migration file name (expected "
                                 "NNNN_name.up.sql or NNNN_name.down.sql, "
                                 "NNNN > 0, name of letters, digits and '_')",
                                 raw[k].name);
        }
        if (memchr(raw[k].data, '\0', raw[k].len)) {
            ds__free(ps);
            return ds__error_set(err, DS_ERR_MIGRATION,
                                 "%s: contains a NUL byte", raw[k].name);
        }
    }
    qsort(ps, n, sizeof *ps, by_version);
    ds__migration_set *set = ds__calloc(1, sizeof *set);
    if (!set) {
        ds__free(ps);
        return ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    }
    st = build_pairs(ps, n, set, err);
    ds__free(ps);
    if (st != DS_OK) {
        ds__migration_set_free(set);
        return st;
    }
    *out = set;
    return DS_OK;
}

/* ---- a directory ------------------------------------------------------ */

static ds_status read_file(const char *path, const char *fname, char **out,
                           size_t *len, ds_error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return ds__error_set(err, DS_ERR_MIGRATION, "%s: cannot open: %s",
                             fname, strerror(errno));
    ds_status st = DS_OK;
    size_t cap = 8192, n = 0;
    char *buf = ds__malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            if (cap > (size_t)MAX_FILE_BYTES) {
                st = ds__error_set(err, DS_ERR_MIGRATION,
                                   "%s: larger than %ld MiB", fname,
                                   MAX_FILE_BYTES >> 20);
                break;
            }
            char *bigger = ds__realloc(buf, cap * 2);
            if (!bigger)
                break;
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                st = ds__error_set(err, DS_ERR_MIGRATION,
                                   "%s: read error: %s", fname,
                                   strerror(errno));
            break;
        }
    }
    fclose(f);
    if (!buf)
        return ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    if (st == DS_OK && n + 1 >= cap) /* stopped by a failed realloc */
        st = ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    if (st != DS_OK) {
        ds__free(buf);
        return st;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return DS_OK;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

typedef struct dir_files {
    ds__raw_file *raw;
    char **names;
    char **data;
    size_t n, cap;
} dir_files;

static void dir_files_free(dir_files *d) {
    for (size_t k = 0; k < d->n; k++) {
        ds__free(d->names[k]);
        ds__free(d->data[k]);
    }
    ds__free(d->raw);
    ds__free(d->names);
    ds__free(d->data);
}

static ds_status dir_files_push(dir_files *d, const char *name, char *data,
                                size_t len, ds_error *err) {
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        ds__raw_file *raw = ds__reallocarray(d->raw, cap, sizeof *raw);
        if (raw)
            d->raw = raw;
        char **names = raw ? ds__reallocarray(d->names, cap, sizeof *names)
                           : NULL;
        if (names)
            d->names = names;
        char **datas = names ? ds__reallocarray(d->data, cap, sizeof *datas)
                             : NULL;
        if (datas)
            d->data = datas;
        if (!datas) {
            ds__free(data);
            return ds__error_set(err, DS_ERR_NOMEM,
                                 "migrations: out of memory");
        }
        d->cap = cap;
    }
    char *copy = ds__strdup(name);
    if (!copy) {
        ds__free(data);
        return ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    }
    d->names[d->n] = copy;
    d->data[d->n] = data;
    d->raw[d->n] = (ds__raw_file){copy, data, len};
    d->n++;
    return DS_OK;
}

static ds_status load_dir(const char *dir, ds__migration_set **out,
                          ds_error *err) {
    DIR *dp = opendir(dir);
    if (!dp)
        return ds__error_set(err, DS_ERR_MIGRATION,
                             "migrations directory %s: %s", dir,
                             strerror(errno));
    dir_files d = {0};
    ds_status st = DS_OK;
    struct dirent *e;
    while (st == DS_OK && (e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.' || !ends_with(e->d_name, ".sql"))
            continue;
        if (d.n >= MAX_FILES) {
            st = ds__error_set(err, DS_ERR_MIGRATION,
                               "migrations directory %s: more than %d files",
                               dir, MAX_FILES);
            break;
        }
        size_t plen = strlen(dir) + strlen(e->d_name) + 2;
        char *path = ds__malloc(plen);
        if (!path) {
            st = ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
            break;
        }
        snprintf(path, plen, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            ds__free(path);
            continue; /* a directory or dangling link named *.sql */
        }
        char *data = NULL;
        size_t len = 0;
        st = read_file(path, e->d_name, &data, &len, err);
        ds__free(path);
        if (st == DS_OK)
            st = dir_files_push(&d, e->d_name, data, len, err);
    }
    closedir(dp);
    ds__migration_set *set = NULL;
    if (st == DS_OK)
        st = ds__migration_set_build(d.raw, d.n, &set, err);
    if (st == DS_OK) {
        /* The set takes the contents; the names were copied into it. */
        set->buffers = d.data;
        set->nbuffers = d.n;
        d.data = NULL;
        for (size_t k = 0; k < d.n; k++)
            ds__free(d.names[k]);
        ds__free(d.names);
        ds__free(d.raw);
        *out = set;
        return DS_OK;
    }
    dir_files_free(&d);
    return st;
}

/* The embedded set never changes: it is built (and hashed) once per
 * process and shared, which keeps ds_migrate_status() to about one round
 * trip. A failed build (out of memory) is not cached. */
static pthread_mutex_t embedded_mu = PTHREAD_MUTEX_INITIALIZER;
static ds__migration_set *embedded_set;

static ds_status load_embedded(ds__migration_set **out, ds_error *err) {
    size_t n = ds__embedded_file_count;
    ds__raw_file *raw = ds__calloc(n ? n : 1, sizeof *raw);
    if (!raw)
        return ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    for (size_t k = 0; k < n; k++)
        raw[k] = (ds__raw_file){ds__embedded_files[k].name,
                                (const char *)ds__embedded_files[k].data,
                                ds__embedded_files[k].len};
    ds_status st = ds__migration_set_build(raw, n, out, err);
    ds__free(raw);
    return st;
}

ds_status ds__migration_set_load(const char *dir, ds__migration_set **out,
                                 ds_error *err) {
    *out = NULL;
    if (dir)
        return load_dir(dir, out, err);
    ds_status st = DS_OK;
    pthread_mutex_lock(&embedded_mu);
    if (!embedded_set) {
        st = load_embedded(&embedded_set, err);
        if (st == DS_OK)
            embedded_set->shared = true;
    }
    *out = embedded_set;
    pthread_mutex_unlock(&embedded_mu);
    return st;
}

const ds__migration_file *ds__migration_set_find(const ds__migration_set *set,
                                                 int64_t version) {
    size_t lo = 0, hi = set->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (set->files[mid].version == version)
            return &set->files[mid];
        if (set->files[mid].version < version)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int64_t ds__migrate_embedded_latest(void) {
    int64_t latest = 0;
    for (size_t k = 0; k < ds__embedded_file_count; k++) {
        int64_t v;
        const char *name;
        size_t name_len;
        bool up;
        if (parse_file_name(ds__embedded_files[k].name, &v, &name, &name_len,
                            &up) &&
            v > latest)
            latest = v;
    }
    return latest;
}
