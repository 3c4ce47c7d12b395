/*
 * ds_migrate_rehearse(): the pending migrations applied to a populated copy
 * of the target's schema while a second connection watches the locks.
 *
 * What a static linter cannot know, this measures: a statement hidden in a
 * DO block or a function takes its locks like any other, and the sampler
 * sees them in pg_locks whatever the text looked like. The steps:
 *
 *   1. read the target (its migration record; nothing else is touched),
 *      refuse a file that cannot be split or a history the runner would
 *      refuse, before anything is created;
 *   2. create the scratch database on the target's server (or take the
 *      empty one given), restore `pg_dump --schema-only` of the target into
 *      it with psql and copy the migration record;
 *   3. fill each table with synthetic rows (fill_tables below);
 *   4. run ds_migrate_up() on it. The runner reports each statement through
 *      its statement hook: the sampler thread polls pg_locks (joined to
 *      pg_stat_activity and pg_class) every few ms, and once more, waited
 *      for, when a statement starts (what is held already is not its) and
 *      when it ends, so every lock a statement of a transactional file
 *      takes is seen while still held and attributed to it. After each statement the runner's own connection reads
 *      pg_class.relfilenode (inside the file's transaction, where the new
 *      file is visible): a changed one is a rewrite;
 *   5. drop the scratch database (unless asked to keep it).
 *
 * Child processes get the connection through libpq's environment variables
 * (PGHOST, PGPASSWORD, ...), never on their command line, which other users
 * of the machine can read.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "core/config_internal.h"
#include "core/internal.h"
#include "core/strbuf.h"
#include "migrate/migrate_internal.h"

extern char **environ;

#define MODULE "rehearse"
#define DEFAULT_ROWS 10000
#define DEFAULT_THRESHOLD_MS 1000
#define DEFAULT_INTERVAL_MS 5
#define FILL_ATTEMPTS 40
#define SQL_EXCERPT 120


/* Grows `*arr` (of `*cap` items of `size`) to hold `need`; false on OOM. */
static bool grow(void *arr, size_t *cap, size_t need, size_t size) {
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < need)
        n *= 2;
    void *bigger = ds__reallocarray(*(void **)arr, n, size);
    if (!bigger)
        return false;
    *(void **)arr = bigger;
    *cap = n;
    return true;
}

/* The first line of a server or libpq message, without its prefix. */
static void first_line(const char *msg, char *out, size_t cap) {
    if (!msg)
        msg = "";
    if (!strncmp(msg, "ERROR:  ", 8))
        msg += 8;
    size_t n = strcspn(msg, "\n");
    if (n >= cap)
        n = cap - 1;
    memcpy(out, msg, n);
    out[n] = '\0';
}

/* ---- the report ------------------------------------------------------------- */

typedef struct report_box {
    ds_migrate_rehearse_report pub; /* first: the public pointer is the box */
    char **strings;
    size_t nstrings, capstrings;
    size_t capstatements, caplocks, captables;
    bool oom;
} report_box;

/* A copy that lives as long as the report (NULL stays NULL). */
static const char *keep(report_box *b, const char *s) {
    if (!s)
        return NULL;
    char *c = ds__strdup(s);
    if (!c || !grow(&b->strings, &b->capstrings, b->nstrings + 1,
                    sizeof *b->strings)) {
        ds__free(c);
        b->oom = true;
        return "";
    }
    b->strings[b->nstrings++] = c;
    return c;
}

DS_EXPORT void ds_migrate_rehearse_report_free(ds_migrate_rehearse_report *report) {
    if (!report)
        return;
    report_box *b = (report_box *)report;
    for (size_t k = 0; k < b->nstrings; k++)
        ds__free(b->strings[k]);
    ds__free(b->strings);
    ds__free(b->pub.statements);
    ds__free(b->pub.locks);
    ds__free(b->pub.tables);
    ds__free(b);
}

DS_EXPORT void ds_migrate_rehearse_options_init(ds_migrate_rehearse_options *opts) {
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
}

/* ---- connection strings ----------------------------------------------------- */

/* A key=value conninfo of `url` with dbname replaced when `dbname` is not
 * NULL. Holds the password: free with ds__secret_free(). */
static char *conninfo_with_db(const char *url, const char *dbname) {
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &msg);
    PQfreemem(msg);
    if (!opts)
        return NULL;
    ds__strbuf b = {0};
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        const char *v = o->val;
        if (!strcmp(o->keyword, "dbname") && dbname)
            v = dbname;
        if (!v)
            continue;
        ds__strbuf_printf(&b, "%s%s='", b.len ? " " : "", o->keyword);
        for (const char *p = v; *p; p++) {
            if (*p == '\'' || *p == '\\')
                ds__strbuf_add(&b, "\\", 1);
            ds__strbuf_add(&b, p, 1);
        }
        ds__strbuf_add(&b, "'", 1);
    }
    if (!b.s && !b.failed)
        ds__strbuf_printf(&b, "dbname='%s'", dbname ? dbname : "");
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val)
            ds__wipe(o->val, strlen(o->val));
    PQconninfoFree(opts);
    if (b.failed) {
        if (b.s)
            ds__wipe(b.s, b.len);
        ds__free(b.s);
        return NULL;
    }
    char *out = ds__secret_strdup(b.s);
    ds__wipe(b.s, b.len);
    ds__free(b.s);
    return out;
}

/* Connects with a bounded wait unless the conninfo sets its own. */
static PGconn *connect_to(const char *conninfo) {
    const char *keys[] = {"connect_timeout", "application_name", "dbname",
                          NULL};
    const char *vals[] = {"10", "ds-migrate rehearse", conninfo, NULL};
    return PQconnectdbParams(keys, vals, 1);
}

/* Whether environment entry `e` ("NAME=value") sets a variable that an
 * option of `opts` sets too. */
static bool env_overridden(const char *e, const PQconninfoOption *opts) {
    size_t n = strcspn(e, "=");
    for (const PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && o->envvar && strlen(o->envvar) == n &&
            !strncmp(e, o->envvar, n))
            return true;
    return false;
}

/* The environment of a child: ours, with libpq's variable of each option
 * of `conninfo` set to its value (what the URL leaves out, such as
 * PGPASSFILE or PGSSLROOTCERT, comes from our environment as it does for
 * our own connections). Free with env_free(). */
static char **child_env(const char *conninfo) {
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);
    PQfreemem(msg);
    if (!opts)
        return NULL;
    size_t n = 0, k = 0;
    for (char **e = environ; *e; e++)
        n++;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        n++;
    char **env = ds__calloc(n + 1, sizeof *env);
    bool ok = env != NULL;
    for (char **e = environ; ok && *e; e++)
        if (!env_overridden(*e, opts) && !(env[k++] = ds__strdup(*e)))
            ok = false;
    for (PQconninfoOption *o = opts; ok && o->keyword; o++) {
        if (!o->val || !o->envvar)
            continue;
        size_t len = strlen(o->envvar) + strlen(o->val) + 2;
        char *v = ds__malloc(len);
        if (!v) {
            ok = false;
            break;
        }
        snprintf(v, len, "%s=%s", o->envvar, o->val);
        env[k++] = v;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val)
            ds__wipe(o->val, strlen(o->val));
    PQconninfoFree(opts);
    if (!ok) {
        for (size_t j = 0; env && j < k; j++) {
            ds__wipe(env[j], strlen(env[j]));
            ds__free(env[j]);
        }
        ds__free(env);
        return NULL;
    }
    return env;
}

static void env_free(char **env) {
    if (!env)
        return;
    for (char **e = env; *e; e++) {
        ds__wipe(*e, strlen(*e));
        ds__free(*e);
    }
    ds__free(env);
}

/* ---- child processes ------------------------------------------------------- */

/* A private temporary file's path (created, mode 0600); NULL on failure. */
static char *temp_file(const char *tag) {
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = P_tmpdir;
    size_t len = strlen(dir) + strlen(tag) + 32;
    char *path = ds__malloc(len);
    if (!path)
        return NULL;
    snprintf(path, len, "%s/ds-rehearse-%s-XXXXXX", dir, tag);
    int fd = mkstemp(path);
    if (fd < 0) {
        ds__free(path);
        return NULL;
    }
    close(fd);
    return path;
}

/* Runs argv with `env`, stdin and stdout from/to /dev/null, stderr into a
 * temporary file whose first line names a failure. */
static ds_status run_child(const char *what, char *const argv[], char **env,
                           ds_error *err) {
    char *errpath = temp_file("stderr");
    if (!errpath)
        return ds__error_set(err, DS_ERR_DB,
                             "rehearse: cannot create a temporary file: %s",
                             strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, errpath, O_WRONLY | O_TRUNC, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    ds_status st = DS_OK;
    if (rc != 0) {
        st = ds__error_set(err, DS_ERR_DB, "rehearse: cannot run %s (%s): %s",
                           what, argv[0], strerror(rc));
    } else {
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            char text[400] = "", line[300];
            FILE *f = fopen(errpath, "r");
            if (f) {
                size_t n = fread(text, 1, sizeof text - 1, f);
                text[n] = '\0';
                fclose(f);
            }
            first_line(text, line, sizeof line);
            st = ds__error_set(err, DS_ERR_DB, "rehearse: %s failed (%s %d)%s%s",
                               what, WIFEXITED(status) ? "exit" : "signal",
                               WIFEXITED(status) ? WEXITSTATUS(status)
                                                 : WTERMSIG(status),
                               *line ? ": " : "", line);
        }
    }
    unlink(errpath);
    ds__free(errpath);
    return st;
}

/* ---- small libpq helpers ------------------------------------------------ */

/* Runs SQL with text parameters; the result, or NULL with err filled
 * ("rehearse: <context>: <server message>"). */
static PGresult *q(PGconn *c, const char *context, const char *sql, int n,
                   const char *const *params, ds_status code, ds_error *err) {
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK)
        return r;
    char line[300];
    first_line(r ? PQresultErrorMessage(r) : PQerrorMessage(c), line,
               sizeof line);
    ds__error_set(err, PQstatus(c) == CONNECTION_BAD ? DS_ERR_CONNECTION : code,
                  "rehearse: %s: %s", context, line);
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (state)
        ds__error_set_sqlstate(err, state);
    PQclear(r);
    return NULL;
}

static ds_status exec_ok(PGconn *c, const char *context, const char *sql,
                         ds_status code, ds_error *err) {
    PGresult *r = q(c, context, sql, 0, NULL, code, err);
    if (!r)
        return err ? err->code : code;
    PQclear(r);
    return DS_OK;
}

/* ---- the rehearsal's state ------------------------------------------------ */

typedef struct rel {
    unsigned oid;
    char *name;  /* schema.table */
    char *qname; /* quoted, for SQL */
    char kind;
    unsigned filenode;
    int64_t rows;
} rel;

typedef struct episode {
    int pid;
    unsigned oid;
    char mode[32];
    int64_t first_us, last_us;
    long statement; /* -1: taken outside a statement (the runner's own) */
    int64_t rows;   /* the table's rows when the lock was first seen */
    bool open;
    bool rewritten;
} episode;

typedef struct rehearsal {
    const ds_migrate_rehearse_options *opts;
    report_box *box;
    char *scratch_conninfo; /* secret */
    PGconn *ctl;            /* the scratch database, for us */
    int ctl_pid;
    PGconn *sampler;
    int64_t interval_us;

    pthread_mutex_t mu;
    pthread_cond_t wake, done_cv;
    rel *rels;
    size_t nrels, caprels;
    episode *eps;
    size_t neps, capeps;
    long current; /* statement index, -1 none */
    long force_req, force_done;
    bool stop, sampler_dead;
    char sampler_error[300];
    int64_t statement_start_us;
} rehearsal;

static rel *find_rel(rehearsal *r, unsigned oid) {
    for (size_t k = 0; k < r->nrels; k++)
        if (r->rels[k].oid == oid)
            return &r->rels[k];
    return NULL;
}

static void rels_free(rehearsal *r) {
    for (size_t k = 0; k < r->nrels; k++) {
        ds__free(r->rels[k].name);
        ds__free(r->rels[k].qname);
    }
    ds__free(r->rels);
    r->rels = NULL;
    r->nrels = r->caprels = 0;
}

/* Reads the scratch database's tables: new ones are added with their row
 * count; known ones get their committed relfilenode and count again.
 * Called before the run and after each migration. */
static ds_status refresh_rels(rehearsal *r, ds_error *err) {
    PGresult *res = q(r->ctl, "reading the tables",
                      "SELECT c.oid::int8, n.nspname || '.' || c.relname, "
                      "quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
                      "c.relkind, c.relfilenode::int8 "
                      "FROM pg_class c JOIN pg_namespace n "
                      "ON n.oid = c.relnamespace "
                      "WHERE c.relkind IN ('r', 'p', 'm') "
                      "AND n.nspname <> 'information_schema' "
                      "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1",
                      0, NULL, DS_ERR_DB, err);
    if (!res)
        return err ? err->code : DS_ERR_DB;
    ds_status st = DS_OK;
    for (int i = 0; i < PQntuples(res) && st == DS_OK; i++) {
        unsigned oid = (unsigned)strtoul(PQgetvalue(res, i, 0), NULL, 10);
        char sql[600];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s",
                 PQgetvalue(res, i, 2));
        PGresult *c = q(r->ctl, "counting rows", sql, 0, NULL, DS_ERR_DB, err);
        if (!c) {
            st = err ? err->code : DS_ERR_DB;
            break;
        }
        int64_t rows = strtoll(PQgetvalue(c, 0, 0), NULL, 10);
        PQclear(c);
        pthread_mutex_lock(&r->mu);
        rel *x = find_rel(r, oid);
        if (!x) {
            if (!grow(&r->rels, &r->caprels, r->nrels + 1, sizeof *r->rels)) {
                st = ds__error_set(err, DS_ERR_NOMEM, "rehearse: out of memory");
            } else {
                x = &r->rels[r->nrels];
                memset(x, 0, sizeof *x);
                x->oid = oid;
                x->name = ds__strdup(PQgetvalue(res, i, 1));
                x->qname = ds__strdup(PQgetvalue(res, i, 2));
                x->kind = PQgetvalue(res, i, 3)[0];
                if (!x->name || !x->qname) {
                    ds__free(x->name);
                    ds__free(x->qname);
                    st = ds__error_set(err, DS_ERR_NOMEM,
                                       "rehearse: out of memory");
                } else {
                    r->nrels++;
                }
            }
        }
        if (st == DS_OK) {
            x->filenode = (unsigned)strtoul(PQgetvalue(res, i, 4), NULL, 10);
            x->rows = rows;
        }
        pthread_mutex_unlock(&r->mu);
    }
    PQclear(res);
    return st;
}

/* ---- the sampler ---------------------------------------------------------- */

static const char sample_sql[] =
    "SELECT l.pid, l.relation::int8, l.mode FROM pg_locks l "
    "JOIN pg_stat_activity a ON a.pid = l.pid "
    "JOIN pg_class c ON c.oid = l.relation "
    "WHERE l.locktype = 'relation' AND l.granted "
    "AND a.datname = current_database() AND a.backend_type = 'client backend' "
    "AND l.pid <> pg_backend_pid() AND l.pid <> $1::int4 "
    "AND c.relkind IN ('r', 'p', 'm')";

/* One sample: opens, extends and closes episodes. false when the sampler's
 * connection failed (the message is kept). */
static bool sample(rehearsal *r) {
    char pid[16];
    snprintf(pid, sizeof pid, "%d", r->ctl_pid);
    const char *params[1] = {pid};
    int64_t t0 = ds__now_us();
    PGresult *res = PQexecPrepared(r->sampler, "ds_migrate_rehearse_sample", 1, params,
                                   NULL, NULL, 0);
    int64_t t = (t0 + ds__now_us()) / 2;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pthread_mutex_lock(&r->mu);
        first_line(res ? PQresultErrorMessage(res)
                       : PQerrorMessage(r->sampler),
                   r->sampler_error, sizeof r->sampler_error);
        pthread_mutex_unlock(&r->mu);
        PQclear(res);
        return false;
    }
    pthread_mutex_lock(&r->mu);
    bool *seen = ds__calloc(r->neps + 1, sizeof *seen);
    size_t before = r->neps;
    for (int i = 0; seen && i < PQntuples(res); i++) {
        int p = atoi(PQgetvalue(res, i, 0));
        unsigned oid = (unsigned)strtoul(PQgetvalue(res, i, 1), NULL, 10);
        const char *mode = PQgetvalue(res, i, 2);
        bool found = false;
        for (size_t k = 0; k < r->neps; k++) {
            episode *e = &r->eps[k];
            if (e->open && e->pid == p && e->oid == oid &&
                !strcmp(e->mode, mode)) {
                e->last_us = t;
                if (k < before)
                    seen[k] = true;
                found = true;
                break;
            }
        }
        /* A table unknown here was created by the running file (no
         * traffic can wait for it). A lock first seen outside any
         * statement is the runner's own bookkeeping: followed (so that it
         * is not taken for a statement's later) but not reported. */
        rel *x = found ? NULL : find_rel(r, oid);
        if (!x)
            continue;
        if (!grow(&r->eps, &r->capeps, r->neps + 1, sizeof *r->eps))
            continue;
        episode *e = &r->eps[r->neps++];
        memset(e, 0, sizeof *e);
        e->pid = p;
        e->oid = oid;
        snprintf(e->mode, sizeof e->mode, "%s", mode);
        e->first_us = e->last_us = t;
        e->statement = r->current;
        e->rows = x->rows;
        e->open = true;
    }
    for (size_t k = 0; seen && k < before; k++)
        if (r->eps[k].open && !seen[k])
            r->eps[k].open = false;
    ds__free(seen);
    pthread_mutex_unlock(&r->mu);
    PQclear(res);
    return true;
}

static void *sampler_main(void *ud) {
    rehearsal *r = ud;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        long req = r->force_req;
        pthread_mutex_unlock(&r->mu);
        bool alive = sample(r);
        pthread_mutex_lock(&r->mu);
        r->force_done = req;
        if (!alive)
            r->sampler_dead = true;
        pthread_cond_broadcast(&r->done_cv);
        if (!alive || r->stop)
            break;
        if (r->force_req == req) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t ns = ts.tv_nsec + r->interval_us * 1000;
            ts.tv_sec += (time_t)(ns / 1000000000);
            ts.tv_nsec = (long)(ns % 1000000000);
            pthread_cond_timedwait(&r->wake, &r->mu, &ts);
        }
    }
    r->sampler_dead = true;
    pthread_cond_broadcast(&r->done_cv);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* Asks for a sample that starts now and waits for it. */
static void sample_now(rehearsal *r) {
    pthread_mutex_lock(&r->mu);
    long want = ++r->force_req;
    pthread_cond_signal(&r->wake);
    while (r->force_done < want && !r->sampler_dead)
        pthread_cond_wait(&r->done_cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

/* ---- the runner's statement hook ----------------------------------------- */

static void add_statement(rehearsal *r, const char *file,
                          const ds__sql_stmt *s) {
    /* What is held already (the runner's own record, an earlier
     * statement's locks) is not this statement's. */
    sample_now(r);
    report_box *b = r->box;
    ds_migrate_rehearse_report *p = &b->pub;
    if (!grow(&p->statements, &b->capstatements, p->nstatements + 1,
              sizeof *p->statements)) {
        b->oom = true;
        return;
    }
    char text[SQL_EXCERPT + 8];
    size_t o = 0;
    bool space = false;
    for (size_t i = 0; i < s->len && o < SQL_EXCERPT; i++) {
        char ch = s->text[i];
        if (ch == '\n' || ch == '\r' || ch == '\t' || ch == ' ') {
            space = o > 0;
            continue;
        }
        if (space)
            text[o++] = ' ';
        space = false;
        if (o < SQL_EXCERPT)
            text[o++] = ch;
    }
    if (o >= SQL_EXCERPT)
        o = SQL_EXCERPT - 3, memcpy(text + o, "...", 3), o += 3;
    text[o] = '\0';
    ds_migrate_rehearse_statement *st = &p->statements[p->nstatements];
    memset(st, 0, sizeof *st);
    st->file = keep(b, file);
    st->line = s->line;
    st->sql = keep(b, text);
    st->ok = true;
    pthread_mutex_lock(&r->mu);
    r->current = (long)p->nstatements++;
    r->statement_start_us = ds__now_us();
    pthread_mutex_unlock(&r->mu);
}

/* After a statement succeeded: which tables have a new file. Runs on the
 * runner's connection, inside the file's transaction when it has one. */
static void check_rewrites(rehearsal *r, ds_conn *conn) {
    PGresult *res = ds__conn_simple(
        conn, "SELECT oid::int8, relfilenode::int8 FROM pg_catalog.pg_class "
              "WHERE relkind IN ('r', 'm') AND relfilenode <> 0");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        PQclear(res);
        return;
    }
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < PQntuples(res); i++) {
        unsigned oid = (unsigned)strtoul(PQgetvalue(res, i, 0), NULL, 10);
        unsigned node = (unsigned)strtoul(PQgetvalue(res, i, 1), NULL, 10);
        rel *x = find_rel(r, oid);
        if (!x || x->filenode == node || x->filenode == 0)
            continue;
        x->filenode = node;
        bool marked = false;
        for (size_t k = 0; k < r->neps; k++) {
            episode *e = &r->eps[k];
            if (e->oid == oid && (e->open || e->statement == r->current) &&
                !strcmp(e->mode, "AccessExclusiveLock")) {
                e->rewritten = true;
                marked = true;
            }
        }
        /* Released before any sample saw it (a statement outside a
         * transaction shorter than the sampling period): a rewrite always
         * holds ACCESS EXCLUSIVE, so report that, held for ~0 ms. */
        if (!marked && r->current >= 0 &&
            grow(&r->eps, &r->capeps, r->neps + 1, sizeof *r->eps)) {
            episode *e = &r->eps[r->neps++];
            memset(e, 0, sizeof *e);
            e->oid = oid;
            snprintf(e->mode, sizeof e->mode, "AccessExclusiveLock");
            e->first_us = e->last_us = ds__now_us();
            e->statement = r->current;
            e->rows = x->rows;
            e->rewritten = true;
        }
    }
    pthread_mutex_unlock(&r->mu);
    PQclear(res);
}

static void on_statement(void *ud, bool done, bool ok, const char *file,
                         const ds__sql_stmt *s, ds_conn *conn) {
    rehearsal *r = ud;
    if (!done) {
        add_statement(r, file, s);
        return;
    }
    if (ok) {
        sample_now(r); /* the statement's locks, still held in a transaction */
        check_rewrites(r, conn);
    }
    pthread_mutex_lock(&r->mu);
    long cur = r->current;
    int64_t start = r->statement_start_us;
    r->current = -1;
    pthread_mutex_unlock(&r->mu);
    if (cur >= 0 && (size_t)cur < r->box->pub.nstatements) {
        ds_migrate_rehearse_statement *st = &r->box->pub.statements[cur];
        st->duration_ms = (ds__now_us() - start) / 1000;
        st->ok = ok;
    }
}

static void on_event(void *ud, const ds_migrate_event *p) {
    rehearsal *r = ud;
    if (p->kind == DS_MIGRATE_EVENT_APPLIED) {
        r->box->pub.applied++;
        ds_error ignored = {0};
        (void)refresh_rels(r, &ignored); /* tables the file created */
    }
}

/* ---- filling the tables ----------------------------------------------- */

typedef struct fill_col {
    int attnum;
    char *name;    /* quoted */
    char *type;    /* format_type */
    bool notnull;
    bool skip;     /* default, identity or generated: the server fills it */
    int fk;        /* index of its foreign key + 1, 0: none */
    char *fkcol;   /* the referenced column (quoted) */
    char **cand;   /* candidate expressions of g */
    size_t ncand, capcand, at;
} fill_col;

typedef struct fill_fk {
    unsigned ref;
    char *refq; /* quoted table */
    int64_t refrows;
} fill_fk;

typedef struct fill_table {
    unsigned oid;
    char *name, *qname;
    unsigned *parents;
    size_t nparents;
    bool done;
} fill_table;

static void add_cand(fill_col *c, const char *expr) {
    for (size_t k = 0; k < c->ncand; k++)
        if (!strcmp(c->cand[k], expr))
            return;
    if (!grow(&c->cand, &c->capcand, c->ncand + 1, sizeof *c->cand))
        return;
    char *e = ds__strdup(expr);
    if (e)
        c->cand[c->ncand++] = e;
}

/* Candidate values by type, most generic first; a CHECK that refuses one
 * moves the column to the next. */
static void type_candidates(fill_col *c, const char *base, char typtype,
                            char category, const char *basetype, int typmod) {
    char buf[400];
    if (typtype == 'e') {
        snprintf(buf, sizeof buf,
                 "(enum_range(NULL::%s))[1 + (g - 1) %% "
                 "cardinality(enum_range(NULL::%s))]",
                 basetype, basetype);
        add_cand(c, buf);
    } else if (category == 'A') {
        add_cand(c, "'{}'");
    } else if (!strcmp(base, "int2")) {
        add_cand(c, "(g % 32000)");
        add_cand(c, "1");
        add_cand(c, "0");
    } else if (!strcmp(base, "int4") || !strcmp(base, "int8") ||
               !strcmp(base, "numeric") || !strcmp(base, "float4") ||
               !strcmp(base, "float8")) {
        add_cand(c, "g");
        add_cand(c, "((g % 100) / 100.0)");
        add_cand(c, "1");
        add_cand(c, "0");
    } else if (!strcmp(base, "bool")) {
        add_cand(c, "(g % 2 = 0)");
        add_cand(c, "true");
        add_cand(c, "false");
    } else if (!strcmp(base, "text") || !strcmp(base, "varchar") ||
               !strcmp(base, "bpchar") || !strcmp(base, "name") ||
               !strcmp(base, "citext")) {
        add_cand(c, "('r' || g)");
    } else if (!strcmp(base, "uuid")) {
        add_cand(c, "md5('ds' || g)::uuid");
    } else if (!strcmp(base, "timestamptz") || !strcmp(base, "timestamp")) {
        add_cand(c, "(now() - g * interval '1 second')");
        add_cand(c, "now()");
        add_cand(c, "(now() + g * interval '1 second')");
    } else if (!strcmp(base, "date")) {
        add_cand(c, "(current_date - (g % 3650)::int)");
        add_cand(c, "current_date");
    } else if (!strcmp(base, "time") || !strcmp(base, "timetz")) {
        add_cand(c, "(time '00:00' + (g % 86400) * interval '1 second')");
    } else if (!strcmp(base, "interval")) {
        add_cand(c, "(g * interval '1 second')");
    } else if (!strcmp(base, "json") || !strcmp(base, "jsonb")) {
        add_cand(c, "jsonb_build_object('n', g)");
        add_cand(c, "jsonb_build_array(g)");
        add_cand(c, "'1'");
    } else if (!strcmp(base, "bytea")) {
        add_cand(c, "sha256(g::text::bytea)");
        add_cand(c, "decode(md5(g::text), 'hex')");
    } else if (!strcmp(base, "inet")) {
        add_cand(c, "('10.0.0.0'::inet + g)");
    } else if (!strcmp(base, "cidr")) {
        add_cand(c, "set_masklen('10.0.0.0'::inet + g, 32)::cidr");
    } else if (!strcmp(base, "vector") && typmod > 0) {
        snprintf(buf, sizeof buf,
                 "('[' || array_to_string(array_fill(((g %% 97) + 1)::real "
                 "/ 97, ARRAY[%d]), ',') || ']')",
                 typmod);
        add_cand(c, buf);
    }
}

/* The quoted literals of a CHECK definition ('user'::text ...), as
 * candidates for the text columns it names. */
static void literal_candidates(fill_col *c, const char *def) {
    int found = 0;
    for (const char *p = def; *p && found < 12; p++) {
        if (*p != '\'')
            continue;
        const char *start = p++;
        while (*p && !(*p == '\'' && p[1] != '\''))
            p += (*p == '\'' && p[1] == '\'') ? 2 : 1;
        if (!*p)
            break;
        size_t n = (size_t)(p - start) + 1;
        if (n < 300) {
            char lit[304];
            memcpy(lit, start, n);
            lit[n] = '\0';
            add_cand(c, lit);
            found++;
        }
    }
}

static void cols_free(fill_col *cols, size_t n) {
    for (size_t k = 0; k < n; k++) {
        ds__free(cols[k].name);
        ds__free(cols[k].type);
        ds__free(cols[k].fkcol);
        for (size_t j = 0; j < cols[k].ncand; j++)
            ds__free(cols[k].cand[j]);
        ds__free(cols[k].cand);
    }
    ds__free(cols);
}

static bool attnum_in(const char *arr, int attnum) {
    /* an int2[] as text: {1,3} */
    for (const char *p = arr; *p;) {
        if (*p >= '0' && *p <= '9') {
            char *end;
            long v = strtol(p, &end, 10);
            if (v == attnum)
                return true;
            p = end;
        } else {
            p++;
        }
    }
    return false;
}

static int64_t rows_of(rehearsal *r, const char *qname);

/* What fill_one knows of a table: its columns (cr) and CHECK and
 * foreign key constraints (kr) as the catalog says, the columns' synthetic
 * values and the referenced tables. */
typedef struct fill_plan {
    PGresult *cr, *kr;
    int ncols, nk;
    fill_col *cols;
    fill_fk *fks;
} fill_plan;

static void plan_free(fill_plan *pl) {
    for (size_t k = 0; pl->fks && k < (size_t)pl->nk; k++)
        ds__free(pl->fks[k].refq);
    ds__free(pl->fks);
    if (pl->cols)
        cols_free(pl->cols, (size_t)pl->ncols);
    PQclear(pl->cr);
    PQclear(pl->kr);
}

static ds_status plan_read(rehearsal *r, const fill_table *t, fill_plan *pl,
                           ds_error *err) {
    char oid[16];
    snprintf(oid, sizeof oid, "%u", t->oid);
    const char *p1[1] = {oid};
    pl->cr = q(r->ctl, "reading columns",
               "SELECT a.attnum, quote_ident(a.attname), "
               "format_type(a.atttypid, a.atttypmod), a.attnotnull, "
               "a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '', "
               "bt.typname, bt.typtype, bt.typcategory, "
               "format_type(bt.oid, NULL), "
               "CASE WHEN t.typtype = 'd' THEN t.typtypmod "
               "ELSE a.atttypmod END, a.attgenerated <> '' "
               "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
               "JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' "
               "THEN t.typbasetype ELSE t.oid END "
               "WHERE a.attrelid = $1::oid AND a.attnum > 0 "
               "AND NOT a.attisdropped ORDER BY a.attnum",
               1, p1, DS_ERR_DB, err);
    if (!pl->cr)
        return err ? err->code : DS_ERR_DB;
    pl->kr = q(r->ctl, "reading constraints",
               "SELECT contype, conname, conkey::text, "
               "pg_get_constraintdef(oid), confrelid::int8, "
               "array_to_string(ARRAY(SELECT quote_ident(a.attname) "
               "FROM unnest(confkey) WITH ORDINALITY k(n, i) "
               "JOIN pg_attribute a ON a.attrelid = confrelid "
               "AND a.attnum = k.n ORDER BY k.i), E'\\x1f'), "
               "array_to_string(ARRAY(SELECT k.n FROM unnest(conkey) "
               "WITH ORDINALITY k(n, i) ORDER BY k.i), ','), "
               "(SELECT quote_ident(n.nspname) || '.' || "
               "quote_ident(c.relname) FROM pg_class c JOIN pg_namespace n "
               "ON n.oid = c.relnamespace WHERE c.oid = confrelid) "
               "FROM pg_constraint WHERE conrelid = $1::oid "
               "AND contype IN ('c', 'f') ORDER BY conname",
               1, p1, DS_ERR_DB, err);
    if (!pl->kr)
        return err ? err->code : DS_ERR_DB;
    pl->ncols = PQntuples(pl->cr);
    pl->cols = ds__calloc((size_t)pl->ncols + 1, sizeof *pl->cols);
    pl->nk = PQntuples(pl->kr);
    pl->fks = ds__calloc((size_t)pl->nk + 1, sizeof *pl->fks);
    if (!pl->cols || !pl->fks)
        return ds__error_set(err, DS_ERR_NOMEM, "rehearse: out of memory");
    return DS_OK;
}

/* Column c's foreign key, if one covers it: c->fk and c->fkcol. */
static void column_fk(const fill_plan *pl, fill_col *c) {
    const PGresult *kr = pl->kr;
    for (int k = 0; k < pl->nk; k++) {
        if (PQgetvalue(kr, k, 0)[0] != 'f')
            continue;
        const char *keys = PQgetvalue(kr, k, 6);
        const char *refcols = PQgetvalue(kr, k, 5);
        int pos = 0;
        for (const char *p = keys; *p;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p)
                break;
            if (v == c->attnum) {
                const char *s = refcols;
                for (int j = 0; j < pos && s; j++) {
                    s = strchr(s, '\x1f');
                    if (s)
                        s++;
                }
                if (s) {
                    c->fk = k + 1;
                    c->fkcol = ds__strndup(s, strcspn(s, "\x1f"));
                }
            }
            pos++;
            p = *end ? end + 1 : end;
        }
        if (c->fk)
            return;
    }
}

/* Column i: its name and type, its foreign key, or the values to try;
 * `reason` when there is none. */
static ds_status plan_column(fill_plan *pl, int i, char *reason,
                             size_t reason_cap, ds_error *err) {
    const PGresult *cr = pl->cr, *kr = pl->kr;
    fill_col *c = &pl->cols[i];
    c->attnum = atoi(PQgetvalue(cr, i, 0));
    c->name = ds__strdup(PQgetvalue(cr, i, 1));
    c->type = ds__strdup(PQgetvalue(cr, i, 2));
    c->notnull = PQgetvalue(cr, i, 3)[0] == 't';
    c->skip = PQgetvalue(cr, i, 4)[0] == 't';
    bool generated = PQgetvalue(cr, i, 10)[0] == 't';
    if (!c->name || !c->type)
        return ds__error_set(err, DS_ERR_NOMEM, "rehearse: out of memory");
    /* Foreign keys win over defaults: a default id rarely matches a
     * parent's row. */
    if (!generated)
        column_fk(pl, c);
    if (c->fk) {
        c->skip = false;
        return DS_OK;
    }
    if (c->skip)
        return DS_OK;
    type_candidates(c, PQgetvalue(cr, i, 5), PQgetvalue(cr, i, 6)[0],
                    PQgetvalue(cr, i, 7)[0], PQgetvalue(cr, i, 8),
                    atoi(PQgetvalue(cr, i, 9)));
    bool texty = !strcmp(PQgetvalue(cr, i, 7), "S");
    for (int k = 0; texty && k < pl->nk; k++)
        if (PQgetvalue(kr, k, 0)[0] == 'c' &&
            attnum_in(PQgetvalue(kr, k, 2), c->attnum))
            literal_candidates(c, PQgetvalue(kr, k, 3));
    if (texty)
        add_cand(c, "('r' || g || '@example.org')");
    if (!c->notnull)
        add_cand(c, "NULL");
    if (c->ncand == 0)
        snprintf(reason, reason_cap,
                 "column %s: no synthetic value for type %s", c->name,
                 c->type);
    return DS_OK;
}

/* The referenced tables: their row counts decide the join. */
static ds_status plan_references(rehearsal *r, const fill_table *t,
                                 fill_plan *pl, char *reason,
                                 size_t reason_cap, ds_error *err) {
    for (int k = 0; k < pl->nk; k++) {
        fill_fk *f = &pl->fks[k];
        if (PQgetvalue(pl->kr, k, 0)[0] != 'f')
            continue;
        f->ref = (unsigned)strtoul(PQgetvalue(pl->kr, k, 4), NULL, 10);
        f->refq = ds__strdup(PQgetvalue(pl->kr, k, 7));
        if (!f->refq)
            return ds__error_set(err, DS_ERR_NOMEM, "rehearse: out of memory");
        f->refrows = f->ref == t->oid ? 0 : rows_of(r, f->refq);
    }
    for (int i = 0; !reason[0] && i < pl->ncols; i++) {
        fill_col *c = &pl->cols[i];
        if (c->fk && pl->fks[c->fk - 1].refrows <= 0 && c->notnull)
            snprintf(reason, reason_cap,
                     "column %s references %s, which has no rows", c->name,
                     pl->fks[c->fk - 1].refq);
    }
    return DS_OK;
}

/* INSERT ... SELECT of `n` rows from the columns' current candidates,
 * joined to the referenced tables' rows. */
static void insert_sql(const fill_table *t, const fill_plan *pl, int64_t n,
                       ds__strbuf *b) {
    const fill_col *cols = pl->cols;
    ds__strbuf_printf(b, "INSERT INTO %s (", t->qname);
    bool any = false;
    for (int i = 0; i < pl->ncols; i++) {
        if (cols[i].skip)
            continue;
        ds__strbuf_printf(b, "%s%s", any ? ", " : "", cols[i].name);
        any = true;
    }
    if (!any) {
        ds__free(b->s);
        *b = (ds__strbuf){0};
        /* DEFAULT VALUES for every row: a plain SELECT of no column
         * inserts a row of defaults in PostgreSQL. */
        ds__strbuf_printf(b,
                          "INSERT INTO %s SELECT FROM generate_series(1, "
                          "%lld) g",
                          t->qname, (long long)n);
        return;
    }
    ds__strbuf_puts(b, ") SELECT ");
    bool first = true;
    for (int i = 0; i < pl->ncols; i++) {
        const fill_col *c = &cols[i];
        if (c->skip)
            continue;
        if (c->fk && pl->fks[c->fk - 1].refrows > 0)
            ds__strbuf_printf(b, "%sf%d.%s", first ? "" : ", ", c->fk,
                              c->fkcol);
        else if (c->fk)
            ds__strbuf_printf(b, "%sNULL::%s", first ? "" : ", ", c->type);
        else
            ds__strbuf_printf(b, "%s(%s)::%s", first ? "" : ", ",
                              c->cand[c->at], c->type);
        first = false;
    }
    ds__strbuf_printf(b, " FROM generate_series(1, %lld) g", (long long)n);
    for (int k = 0; k < pl->nk; k++) {
        const fill_fk *f = &pl->fks[k];
        if (!f->refq || f->refrows <= 0)
            continue;
        bool used = false;
        for (int i = 0; i < pl->ncols; i++)
            used |= cols[i].fk == k + 1;
        if (!used)
            continue;
        ds__strbuf_printf(b,
                          " LEFT JOIN (SELECT *, row_number() OVER () AS "
                          "ds_rn FROM %s) f%d ON f%d.ds_rn = 1 + (g - 1) %% "
                          "%lld",
                          f->refq, k + 1, k + 1, (long long)f->refrows);
    }
}

/* After an INSERT failed with `state` on constraint `con`: moves a column
 * to its next candidate (a CHECK refused a value) or asks for fewer rows
 * (a unique key); false when nothing is left to try. */
static bool try_next(fill_plan *pl, const char *state, const char *con,
                     int64_t *n, bool *tried_parent_rows) {
    if (state && !strcmp(state, "23514") && con) {
        /* a CHECK refused a value: the next candidate of one of the
         * columns it names */
        for (int k = 0; k < pl->nk; k++) {
            if (strcmp(PQgetvalue(pl->kr, k, 1), con) != 0)
                continue;
            for (int i = 0; i < pl->ncols; i++) {
                fill_col *c = &pl->cols[i];
                if (!c->skip && !c->fk && c->at + 1 < c->ncand &&
                    attnum_in(PQgetvalue(pl->kr, k, 2), c->attnum)) {
                    c->at++;
                    return true;
                }
            }
        }
        return false;
    }
    if (state && !strcmp(state, "23505") && *n > 1) {
        /* A unique key over a foreign key (one row per parent) allows
         * as many rows as the smallest parent has; else one. */
        int64_t fewer = 1;
        for (int k = 0; k < pl->nk; k++) {
            const fill_fk *f = &pl->fks[k];
            if (f->refq && f->refrows > 1 && f->refrows < *n &&
                (fewer == 1 || f->refrows < fewer))
                fewer = f->refrows;
        }
        if (fewer == 1 || *tried_parent_rows)
            fewer = 1;
        *tried_parent_rows = true;
        *n = fewer;
        return true;
    }
    return false;
}

/* Inserts `want` rows, trying other candidates (and fewer rows) when a
 * constraint refuses them. */
static ds_status fill_insert(rehearsal *r, const fill_table *t, fill_plan *pl,
                             int64_t want, int64_t *rows, char *reason,
                             size_t reason_cap, ds_error *err) {
    int64_t n = want;
    bool tried_parent_rows = false;
    for (int attempt = 0; attempt < FILL_ATTEMPTS; attempt++) {
        ds__strbuf b = {0};
        insert_sql(t, pl, n, &b);
        if (b.failed) {
            ds__free(b.s);
            return ds__error_set(err, DS_ERR_NOMEM, "rehearse: out of memory");
        }
        PGresult *res = PQexec(r->ctl, b.s);
        ds__free(b.s);
        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
            *rows = strtoll(PQcmdTuples(res), NULL, 10);
            PQclear(res);
            if (n < want && !reason[0])
                snprintf(reason, reason_cap,
                         n == 1 ? "a unique key allows only 1 synthetic row"
                                : "a unique key allows one row per row of "
                                  "the table it references");
            return DS_OK;
        }
        if (PQstatus(r->ctl) == CONNECTION_BAD) {
            PQclear(res);
            return ds__error_set(err, DS_ERR_CONNECTION,
                                 "rehearse: the scratch database connection "
                                 "was lost while filling %s",
                                 t->name);
        }
        char msg[300];
        first_line(PQresultErrorMessage(res), msg, sizeof msg);
        bool moved =
            try_next(pl, PQresultErrorField(res, PG_DIAG_SQLSTATE),
                     PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME), &n,
                     &tried_parent_rows);
        PQclear(res);
        if (!moved) {
            snprintf(reason, reason_cap, "%s", msg);
            return DS_OK;
        }
        if (attempt + 1 == FILL_ATTEMPTS)
            snprintf(reason, reason_cap, "%s (after %d attempts)", msg,
                     FILL_ATTEMPTS);
    }
    return DS_OK;
}

/* Fills one table; `*rows` the rows inserted, `reason` why fewer than
 * asked (empty when all). */
static ds_status fill_one(rehearsal *r, fill_table *t, int64_t want,
                          int64_t *rows, char *reason, size_t reason_cap,
                          ds_error *err) {
    *rows = 0;
    reason[0] = '\0';
    fill_plan pl = {0};
    ds_status st = plan_read(r, t, &pl, err);
    for (int i = 0; st == DS_OK && !reason[0] && i < pl.ncols; i++)
        st = plan_column(&pl, i, reason, reason_cap, err);
    if (st == DS_OK && !reason[0])
        st = plan_references(r, t, &pl, reason, reason_cap, err);
    if (st == DS_OK && !reason[0])
        st = fill_insert(r, t, &pl, want, rows, reason, reason_cap, err);
    plan_free(&pl);
    return st;
}

/* Rows of a table already filled (exact: it is small and just written). */
static int64_t rows_of(rehearsal *r, const char *qname) {
    char sql[600];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", qname);
    PGresult *res = PQexec(r->ctl, sql);
    int64_t n = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1
                    ? strtoll(PQgetvalue(res, 0, 0), NULL, 10)
                    : 0;
    PQclear(res);
    return n;
}

static void add_table_line(report_box *b, const char *name, int64_t rows,
                           const char *skipped) {
    ds_migrate_rehearse_report *p = &b->pub;
    if (!grow(&p->tables, &b->captables, p->ntables + 1, sizeof *p->tables)) {
        b->oom = true;
        return;
    }
    ds_migrate_rehearse_table *t = &p->tables[p->ntables++];
    t->table = keep(b, name);
    t->rows = rows;
    t->skipped = skipped && *skipped ? keep(b, skipped) : NULL;
}

/* Every table that is not a partition (partitions fill through their
 * parent) or part of an extension, parents before children. */
static ds_status fill_tables(rehearsal *r, int64_t want, ds_error *err) {
    PGresult *res = q(
        r->ctl, "listing tables",
        "SELECT c.oid::int8, n.nspname || '.' || c.relname, "
        "quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
        "array_to_string(ARRAY(SELECT DISTINCT f.confrelid::int8 FROM "
        "pg_constraint f WHERE f.conrelid = c.oid AND f.contype = 'f' "
        "AND f.confrelid <> c.oid), ',') "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' "
        "AND c.relname <> 'ds_schema_migrations' "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = "
        "'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') "
        "ORDER BY 2",
        0, NULL, DS_ERR_DB, err);
    if (!res)
        return err ? err->code : DS_ERR_DB;
    size_t n = (size_t)PQntuples(res);
    fill_table *tabs = ds__calloc(n + 1, sizeof *tabs);
    ds_status st = tabs ? DS_OK
                        : ds__error_set(err, DS_ERR_NOMEM,
                                        "rehearse: out of memory");
    for (size_t i = 0; st == DS_OK && i < n; i++) {
        fill_table *t = &tabs[i];
        t->oid = (unsigned)strtoul(PQgetvalue(res, (int)i, 0), NULL, 10);
        t->name = ds__strdup(PQgetvalue(res, (int)i, 1));
        t->qname = ds__strdup(PQgetvalue(res, (int)i, 2));
        const char *ps = PQgetvalue(res, (int)i, 3);
        t->parents = ds__calloc(strlen(ps) / 2 + 2, sizeof *t->parents);
        if (!t->name || !t->qname || !t->parents) {
            st = ds__error_set(err, DS_ERR_NOMEM, "rehearse: out of memory");
            break;
        }
        for (const char *p = ps; *p;) {
            char *end;
            unsigned long v = strtoul(p, &end, 10);
            if (end == p)
                break;
            t->parents[t->nparents++] = (unsigned)v;
            p = *end ? end + 1 : end;
        }
    }
    PQclear(res);
    size_t left = n;
    while (st == DS_OK && left > 0) {
        bool progress = false;
        for (size_t i = 0; st == DS_OK && i < n; i++) {
            fill_table *t = &tabs[i];
            if (t->done)
                continue;
            bool ready = true;
            for (size_t j = 0; j < t->nparents && ready; j++)
                for (size_t k = 0; k < n; k++)
                    if (tabs[k].oid == t->parents[j] && !tabs[k].done)
                        ready = false;
            if (!ready)
                continue;
            int64_t rows = 0;
            char reason[400] = "";
            if (want > 0)
                st = fill_one(r, t, want, &rows, reason,
                              sizeof reason, err);
            if (st != DS_OK)
                break;
            add_table_line(r->box, t->name, rows, reason);
            if (reason[0])
                ds__log(DS_LOG_WARN, MODULE, "%s: filled %lld of %lld rows: %s",
                        t->name, (long long)rows, (long long)want, reason);
            t->done = true;
            left--;
            progress = true;
        }
        if (!progress && st == DS_OK) {
            /* a cycle of foreign keys: fill the first one left anyway (its
             * references to tables not filled yet stay NULL or fail) */
            for (size_t i = 0; i < n; i++)
                if (!tabs[i].done) {
                    tabs[i].nparents = 0;
                    break;
                }
        }
    }
    for (size_t i = 0; tabs && i < n; i++) {
        ds__free(tabs[i].name);
        ds__free(tabs[i].qname);
        ds__free(tabs[i].parents);
    }
    ds__free(tabs);
    if (st == DS_OK)
        st = exec_ok(r->ctl, "ANALYZE", "ANALYZE", DS_ERR_DB, err);
    return st;
}

/* ---- the target -------------------------------------------------------- */

typedef struct applied_row {
    char *v[7]; /* version, name, checksum, no_transaction, applied_at,
                   duration_ms, applied_by */
} applied_row;

static ds_status noop_stmt(void *ud, const ds__sql_stmt *s, ds_error *err) {
    (void)ud;
    (void)s;
    (void)err;
    return DS_OK;
}

/* The record of the target, checked against the files the way the runner
 * would before anything runs. `*pending` counts the files to apply. */
static ds_status read_target(PGconn *target, const ds__migration_set *set,
                             PGresult **record, int64_t *version,
                             size_t *pending, ds_error *err) {
    *record = NULL;
    *version = 0;
    PGresult *res = PQexec(target,
                           "SELECT version, name, checksum, no_transaction, "
                           "applied_at, duration_ms, applied_by "
                           "FROM ds_schema_migrations ORDER BY version");
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        bool missing = state && !strcmp(state, "42P01");
        char line[300];
        first_line(PQresultErrorMessage(res), line, sizeof line);
        PQclear(res);
        if (!missing)
            return ds__error_set(err, DS_ERR_DB,
                                 "rehearse: reading the target's migration "
                                 "record: %s",
                                 line);
        res = NULL; /* never migrated: every file is pending */
    }
    int n = res ? PQntuples(res) : 0;
    for (int i = 0; i < n; i++) {
        int64_t v = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        const ds__migration_file *f = ds__migration_set_find(set, v);
        if (!f || !ds__migration_checksum_matches(f, PQgetvalue(res, i, 1),
                                                  PQgetvalue(res, i, 2))) {
            ds_status st = ds__error_set(
                err, DS_ERR_MIGRATION,
                "rehearse: the target applied version %lld (%s), which %s; "
                "`ds-migrate verify` explains",
                (long long)v, PQgetvalue(res, i, 1),
                f ? "differs from its file" : "no migration file has");
            PQclear(res);
            return st;
        }
        *version = v;
    }
    size_t p = 0;
    for (size_t k = 0; k < set->count; k++) {
        bool done = false;
        for (int i = 0; i < n && !done; i++)
            done = strtoll(PQgetvalue(res, i, 0), NULL, 10) ==
                   set->files[k].version;
        if (!done) {
            if (set->files[k].version < *version) {
                ds_status st = ds__error_set(
                    err, DS_ERR_MIGRATION,
                    "rehearse: %s was never applied to the target but is "
                    "older than its version %lld; `ds-migrate verify` explains",
                    set->files[k].up_file, (long long)*version);
                PQclear(res);
                return st;
            }
            p++;
        }
    }
    *pending = p;
    *record = res;
    return DS_OK;
}

static ds_status copy_record(PGconn *scratch, PGresult *record,
                             ds_error *err) {
    for (int i = 0; record && i < PQntuples(record); i++) {
        const char *v[7];
        for (int j = 0; j < 7; j++)
            v[j] = PQgetvalue(record, i, j);
        PGresult *res = q(scratch, "copying the migration record",
                          "INSERT INTO ds_schema_migrations (version, name, "
                          "checksum, no_transaction, applied_at, duration_ms, "
                          "applied_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                          7, v, DS_ERR_DB, err);
        if (!res)
            return err ? err->code : DS_ERR_DB;
        PQclear(res);
    }
    return DS_OK;
}

/* pg_dump --schema-only of the target, restored into the scratch with
 * psql. */
static ds_status copy_schema(const ds_migrate_rehearse_options *o,
                             const char *target_conninfo,
                             const char *scratch_conninfo, ds_error *err) {
    char *dump = temp_file("schema");
    if (!dump)
        return ds__error_set(err, DS_ERR_DB,
                             "rehearse: cannot create a temporary file: %s",
                             strerror(errno));
    const char *pg_dump = o->pg_dump ? o->pg_dump : "pg_dump";
    const char *psql = o->psql ? o->psql : "psql";
    char *dump_argv[] = {(char *)pg_dump,     "--schema-only",
                         "--no-owner",        "--no-privileges",
                         "--no-publications", "--no-subscriptions",
                         "--lock-wait-timeout=10000", "--file",
                         dump,                NULL};
    char *psql_argv[] = {(char *)psql, "-X", "-q", "-v", "ON_ERROR_STOP=1",
                         "--file",     dump, NULL};
    char **env = child_env(target_conninfo);
    ds_status st = env ? run_child("pg_dump of the target's schema", dump_argv,
                                   env, err)
                       : ds__error_set(err, DS_ERR_NOMEM,
                                       "rehearse: out of memory");
    env_free(env);
    if (st == DS_OK) {
        env = child_env(scratch_conninfo);
        st = env ? run_child("psql restoring the schema into the scratch "
                             "database",
                             psql_argv, env, err)
                 : ds__error_set(err, DS_ERR_NOMEM, "rehearse: out of memory");
        env_free(env);
    }
    unlink(dump);
    ds__free(dump);
    return st;
}

/* ---- the entry point ------------------------------------------------------ */

static bool mode_blocks(const char *mode, bool *reads) {
    *reads = !strcmp(mode, "AccessExclusiveLock");
    return *reads || !strcmp(mode, "ExclusiveLock") ||
           !strcmp(mode, "ShareRowExclusiveLock") || !strcmp(mode, "ShareLock");
}

static void build_locks(rehearsal *r, int64_t threshold_ms) {
    report_box *b = r->box;
    ds_migrate_rehearse_report *p = &b->pub;
    for (size_t k = 0; k < r->neps; k++) {
        episode *e = &r->eps[k];
        rel *x = find_rel(r, e->oid);
        if (!x || e->statement < 0 ||
            (size_t)e->statement >= p->nstatements)
            continue;
        /* the same table and mode from another backend of the same
         * statement (parallel workers do not count: client backends only)
         * are separate lines */
        if (!grow(&p->locks, &b->caplocks, p->nlocks + 1, sizeof *p->locks)) {
            b->oom = true;
            return;
        }
        ds_migrate_rehearse_lock *l = &p->locks[p->nlocks++];
        memset(l, 0, sizeof *l);
        l->statement = (size_t)e->statement;
        l->table = keep(b, x->name);
        l->mode = keep(b, e->mode);
        l->held_ms = (e->last_us - e->first_us) / 1000;
        l->rows = e->rows;
        l->rewritten = e->rewritten;
        bool reads = false;
        bool blocks = mode_blocks(e->mode, &reads);
        l->blocks_reads = reads;
        l->blocks_writes = blocks;
        l->over_threshold = blocks && e->rows > 0 &&
                            (threshold_ms == 0 || l->held_ms > threshold_ms);
        p->violations += l->over_threshold;
    }
}

/* "<target>_rehearse_<pid>", at most 63 bytes. */
static void default_scratch_name(const char *target, char *out, size_t cap) {
    char tail[32];
    snprintf(tail, sizeof tail, "_rehearse_%ld", (long)getpid());
    size_t room = 63 - strlen(tail);
    size_t n = strlen(target);
    if (n > room) {
        n = room;
        while (n > 0 && ((unsigned char)target[n] & 0xC0) == 0x80)
            n--; /* not inside a UTF-8 sequence */
    }
    snprintf(out, cap, "%.*s%s", (int)n, target, tail);
}

static ds_status check_files(const ds__migration_set *set, ds_error *err) {
    for (size_t k = 0; k < set->count; k++) {
        const ds__migration_file *f = &set->files[k];
        ds_status st =
            ds__sql_split(f->up_file, f->up, f->up_len, noop_stmt, NULL, err);
        if (st != DS_OK)
            return st;
    }
    return DS_OK;
}

static ds_status scratch_pool(const ds_config *cfg, const char *conninfo,
                              ds_pool **pool,
                              ds_error *err) {
    ds_config *c = NULL;
    ds_status st = ds_config_clone(cfg, &c, err);
    if (st == DS_OK)
        st = ds_config_set(c, "database_url", conninfo, err);
    if (st == DS_OK)
        st = ds_config_set(c, "database_replica_urls", NULL, err);
    if (st == DS_OK)
        st = ds_config_set(c, "statement_mode", "pooler", err);
    if (st == DS_OK)
        st = ds_config_set_int(c, "pool_min", 1, err);
    if (st == DS_OK)
        st = ds_config_set_int(c, "pool_max", 2, err);
    if (st == DS_OK)
        st = ds_pool_open(c, pool, err);
    ds_config_free(c);
    return st;
}

/* The rehearsal proper, on a scratch database whose schema is in place. */
static ds_status rehearse_in(rehearsal *r, const ds_config *cfg,
                             const ds_migrate_rehearse_options *o, int64_t rows,
                             int64_t threshold, ds_error *err) {
    report_box *b = r->box;
    r->ctl = connect_to(r->scratch_conninfo);
    if (PQstatus(r->ctl) != CONNECTION_OK) {
        char line[300];
        first_line(PQerrorMessage(r->ctl), line, sizeof line);
        return ds__error_set(err, DS_ERR_CONNECTION,
                             "rehearse: cannot reach the scratch database: %s",
                             line);
    }
    r->ctl_pid = PQbackendPID(r->ctl);
    ds_status st = exec_ok(r->ctl, "session settings",
                           "SELECT set_config('statement_timeout', '0', false), "
                           "set_config('lock_timeout', '0', false)",
                           DS_ERR_DB, err);
    if (st == DS_OK)
        st = fill_tables(r, rows, err);
    if (st == DS_OK)
        st = refresh_rels(r, err);
    if (st != DS_OK)
        return st;

    r->sampler = connect_to(r->scratch_conninfo);
    if (PQstatus(r->sampler) != CONNECTION_OK)
        return ds__error_set(err, DS_ERR_CONNECTION,
                             "rehearse: the lock sampler cannot connect to "
                             "the scratch database");
    PGresult *prep = PQprepare(r->sampler, "ds_migrate_rehearse_sample", sample_sql, 1,
                               NULL);
    bool prepared = PQresultStatus(prep) == PGRES_COMMAND_OK;
    PQclear(prep);
    if (!prepared)
        return ds__error_set(err, DS_ERR_DB,
                             "rehearse: cannot prepare the lock sample");

    ds_pool *pool = NULL;
    if ((st = scratch_pool(cfg, r->scratch_conninfo, &pool, err)) != DS_OK)
        return st;
    pthread_t th;
    r->current = -1;
    if (pthread_create(&th, NULL, sampler_main, r) != 0) {
        ds_pool_close(pool);
        return ds__error_set(err, DS_ERR_INTERNAL,
                             "rehearse: cannot start the sampler thread");
    }
    ds_migrate_options mo = DS_MIGRATE_OPTIONS_INIT;
    mo.dir = o->dir;
    mo.lock_timeout_ms = o->lock_timeout_ms > 0   ? (int)o->lock_timeout_ms
                         : o->lock_timeout_ms < 0 ? -1
                                                  : 0;
    mo.on_event = on_event;
    mo.on_event_ud = r;
    ds_error merr = {0};
    int applied = 0;
    ds__migrate_set_stmt_hook(on_statement, r);
    ds_status mst = ds_migrate_up(pool, &mo, &applied, &merr);
    ds__migrate_set_stmt_hook(NULL, NULL);
    ds_pool_close(pool);
    sample_now(r); /* everything committed or rolled back: closes episodes */
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->mu);
    pthread_join(th, NULL);

    if (mst != DS_OK) {
        b->pub.error = keep(b, merr.message);
    } else if (r->sampler_error[0]) {
        b->pub.error = keep(b, r->sampler_error);
    }
    PGresult *v = PQexec(r->ctl, "SELECT coalesce(max(version), 0) FROM "
                                 "ds_schema_migrations");
    if (PQresultStatus(v) == PGRES_TUPLES_OK && PQntuples(v) == 1)
        b->pub.to_version = strtoll(PQgetvalue(v, 0, 0), NULL, 10);
    PQclear(v);
    build_locks(r, threshold);
    return DS_OK;
}

/* No password of the target's or the scratch's URL in a message, whatever
 * a server or a child process wrote. */
static void scrub_passwords(ds_error *err, const char *url,
                            const char *scratch_url) {
    const char *urls[2] = {url, scratch_url};
    for (int i = 0; i < 2; i++) {
        char *pw = urls[i] ? ds__conninfo_password(urls[i]) : NULL;
        if (pw) {
            ds__error_scrub(err, pw);
            ds__secret_free(pw);
        }
    }
}

DS_EXPORT ds_status ds_migrate_rehearse(const ds_config *cfg,
                                        const ds_migrate_rehearse_options *opts,
                                        ds_migrate_rehearse_report **out,
                                        ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, cfg, "cfg is NULL");
    ds_migrate_rehearse_options o;
    ds_migrate_rehearse_options_init(&o);
    if (opts) {
        DS_CHECK_ARG(err, opts->size >= offsetof(ds_migrate_rehearse_options, psql) +
                                            sizeof opts->psql &&
                              opts->size <= sizeof o,
                     "opts->size: set it with ds_migrate_rehearse_options_init()");
        memcpy(&o, opts, opts->size);
    }
    const char *url = cfg->database_url;
    DS_CHECK_ARG(err, url && *url, "cfg has no database_url (the target)");
    int64_t rows = o.rows_per_table > 0   ? o.rows_per_table
                   : o.rows_per_table < 0 ? 0
                                          : DEFAULT_ROWS;
    int64_t threshold = o.lock_threshold_ms > 0   ? o.lock_threshold_ms
                        : o.lock_threshold_ms < 0 ? 0
                                                  : DEFAULT_THRESHOLD_MS;
    int64_t interval_ms =
        o.sample_interval_ms > 0 ? o.sample_interval_ms : DEFAULT_INTERVAL_MS;

    ds__migration_set *set = NULL;
    ds_status st = ds__migration_set_load(o.dir, &set, err);
    if (st == DS_OK)
        st = check_files(set, err);
    if (st != DS_OK) {
        ds__migration_set_free(set);
        return st;
    }

    PGconn *target = connect_to(url);
    if (PQstatus(target) != CONNECTION_OK) {
        char line[300];
        first_line(PQerrorMessage(target), line, sizeof line);
        PQfinish(target);
        ds__migration_set_free(set);
        st = ds__error_set(err, DS_ERR_CONNECTION,
                           "rehearse: cannot reach the target database: %s",
                           line);
        scrub_passwords(err, url, NULL);
        return st;
    }
    PGresult *record = NULL;
    int64_t version = 0;
    size_t pending = 0;
    st = read_target(target, set, &record, &version, &pending, err);
    ds__migration_set_free(set);

    report_box *box = NULL;
    rehearsal r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.wake, NULL);
    pthread_cond_init(&r.done_cv, NULL);
    r.opts = &o;
    r.interval_us = interval_ms * 1000;
    r.current = -1;
    if (st == DS_OK && !(box = ds__calloc(1, sizeof *box)))
        st = ds__error_set(err, DS_ERR_NOMEM, "rehearse: out of memory");
    r.box = box;
    if (box) {
        box->pub.from_version = version;
        box->pub.to_version = version;
        box->pub.lock_threshold_ms = threshold;
        box->pub.rows_per_table = rows;
    }

    char name[64] = "";
    bool created = false;
    char *target_conninfo = NULL;
    if (st == DS_OK && pending > 0) {
        target_conninfo = conninfo_with_db(url, NULL);
        if (!target_conninfo)
            st = ds__error_set(err, DS_ERR_NOMEM, "rehearse: out of memory");
    }
    if (st == DS_OK && pending > 0) {
        if (o.scratch_url) {
            r.scratch_conninfo = conninfo_with_db(o.scratch_url, NULL);
            if (!r.scratch_conninfo)
                st = ds__error_set(err, DS_ERR_INVALID,
                                   "rehearse: the scratch URL does not parse");
            PGconn *s = st == DS_OK ? connect_to(r.scratch_conninfo) : NULL;
            if (s && PQstatus(s) != CONNECTION_OK) {
                char line[300];
                first_line(PQerrorMessage(s), line, sizeof line);
                st = ds__error_set(err, DS_ERR_CONNECTION,
                                   "rehearse: cannot reach the scratch "
                                   "database: %s",
                                   line);
            } else if (s) {
                snprintf(name, sizeof name, "%s", PQdb(s));
                PGresult *c = PQexec(
                    s, "SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                       "ON n.oid = c.relnamespace WHERE c.relkind IN "
                       "('r', 'p', 'v', 'm', 'S') AND n.nspname <> "
                       "'information_schema' AND n.nspname NOT LIKE 'pg\\_%'");
                if (PQresultStatus(c) != PGRES_TUPLES_OK ||
                    strcmp(PQgetvalue(c, 0, 0), "0") != 0)
                    st = ds__error_set(err, DS_ERR_INVALID,
                                       "rehearse: the scratch database \"%s\" "
                                       "is not empty; give an empty one",
                                       name);
                PQclear(c);
            }
            PQfinish(s);
        } else {
            if (o.scratch_name)
                snprintf(name, sizeof name, "%s", o.scratch_name);
            else
                default_scratch_name(PQdb(target), name, sizeof name);
            char *ident = PQescapeIdentifier(target, name, strlen(name));
            char sql[200];
            snprintf(sql, sizeof sql, "CREATE DATABASE %s TEMPLATE template0",
                     ident ? ident : "\"\"");
            PQfreemem(ident);
            if (!o.scratch_name || strlen(o.scratch_name) < 64)
                st = exec_ok(target, "creating the scratch database", sql,
                             DS_ERR_DB, err);
            else
                st = ds__error_set(err, DS_ERR_INVALID,
                                   "rehearse: scratch_name is longer than 63 "
                                   "bytes");
            created = st == DS_OK;
            if (created) {
                r.scratch_conninfo = conninfo_with_db(url, name);
                if (!r.scratch_conninfo)
                    st = ds__error_set(err, DS_ERR_NOMEM,
                                       "rehearse: out of memory");
            }
        }
    }
    if (st == DS_OK && pending > 0 && box) {
        box->pub.scratch_database = keep(box, name);
        st = copy_schema(&o, target_conninfo, r.scratch_conninfo, err);
        if (st == DS_OK) {
            PGconn *s = connect_to(r.scratch_conninfo);
            if (PQstatus(s) != CONNECTION_OK)
                st = ds__error_set(err, DS_ERR_CONNECTION,
                                   "rehearse: cannot reach the scratch "
                                   "database");
            else
                st = copy_record(s, record, err);
            PQfinish(s);
        }
        if (st == DS_OK)
            st = rehearse_in(&r, cfg, &o, rows, threshold, err);
    }
    PQclear(record);
    if (r.sampler)
        PQfinish(r.sampler);
    if (r.ctl)
        PQfinish(r.ctl);
    if (created && (o.keep || (box && box->oom))) {
        if (box)
            box->pub.scratch_kept = true;
    } else if (created) {
        char *ident = PQescapeIdentifier(target, name, strlen(name));
        char sql[200];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)",
                 ident ? ident : "\"\"");
        PQfreemem(ident);
        ds_error derr = {0};
        if (exec_ok(target, "dropping the scratch database", sql, DS_ERR_DB,
                    &derr) != DS_OK) {
            ds__log(DS_LOG_WARN, MODULE, "%s", derr.message);
            if (box)
                box->pub.scratch_kept = true;
        }
    } else if (o.scratch_url && box) {
        box->pub.scratch_kept = true;
    }
    PQfinish(target);
    if (r.scratch_conninfo)
        ds__secret_free(r.scratch_conninfo);
    if (target_conninfo)
        ds__secret_free(target_conninfo);
    rels_free(&r);
    ds__free(r.eps);
    pthread_mutex_destroy(&r.mu);
    pthread_cond_destroy(&r.wake);
    pthread_cond_destroy(&r.done_cv);
    if (st == DS_OK && box && box->oom)
        st = ds__error_set(err, DS_ERR_NOMEM, "rehearse: out of memory");
    if (st != DS_OK) {
        ds_migrate_rehearse_report_free(box ? &box->pub : NULL);
        scrub_passwords(err, url, o.scratch_url);
        return st;
    }
    if (box->pub.error) { /* the runner's message: no password either */
        ds_error e = {0};
        snprintf(e.message, sizeof e.message, "%s", box->pub.error);
        scrub_passwords(&e, url, o.scratch_url);
        if (strcmp(e.message, box->pub.error) != 0)
            box->pub.error = keep(box, e.message);
    }
    box->pub.ok = !box->pub.error && box->pub.violations == 0;
    *out = &box->pub;
    return DS_OK;
}
