/*
 * ds-migrate: the migration entrypoint that CI and deploys run.
 *
 *   ds-migrate [--database-url URL] [--dir DIR] [--json] COMMAND [ARG]
 *
 * A thin shell over the public API (ds_migrate_*, ds_migrate_check_schema): it
 * reads the usual environment (DATABASE_URL, DS_MIGRATE_LOCK_TIMEOUT_MS,
 * DS_CONNECT_TIMEOUT_MS, ...), prints what happened, and exits 0 on
 * success, 1 on failure, 2 on a usage error.
 */
#include <datastore/datastore.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: ds-migrate [options] COMMAND [ARG]\n"
    "\n"
    "commands:\n"
    "  up                apply every pending migration\n"
    "  down [N]          revert the N newest migrations (default 1)\n"
    "  to VERSION        move to VERSION, up or down (0 reverts everything)\n"
    "  status            list the migrations and their state\n"
    "  verify            check the applied history against the files\n"
    "  dry-run           print the SQL that `up` would run; change nothing\n"
    "  maintain [MONTHS] create the analytics_events partitions of this month\n"
    "                    and the next MONTHS months (default 3), and keep the\n"
    "                    memory lists of large users (ds_memory_maintain);\n"
    "                    safe from cron\n"
    "  check             start-up schema check: the version and every SQL\n"
    "                    statement of the library against the database\n"
    "  lint [FILE...]    static checks for migrations on live, populated\n"
    "                    tables (default: the up files of --dir or of the\n"
    "                    built-in migrations); needs no database; exit 1 on\n"
    "                    an error-level finding. Waive one with a comment\n"
    "                    above the statement: -- ds:lint-ignore RULE: reason\n"
    "  rehearse          apply the pending migrations to a scratch copy of the\n"
    "                    database's schema filled with synthetic rows, watch\n"
    "                    the locks, report per statement table, lock mode,\n"
    "                    held_ms, rows and rewrites; the database itself is\n"
    "                    only read. Exit 1 when a lock that blocks reads or\n"
    "                    writes is held on a table with rows longer than the\n"
    "                    threshold (or a migration fails there), 2 on bad\n"
    "                    input (unreachable database, no scratch database)\n"
    "\n"
    "options:\n"
    "  --database-url URL  the database (default: $DATABASE_URL). Prefer the\n"
    "                      environment: a command line is visible to others.\n"
    "                      Use the direct URL, not a transaction pooler's, when\n"
    "                      a migration runs outside a transaction.\n"
    "  --dir DIR           migrations directory (default: the migrations\n"
    "                      built into libdatastore)\n"
    "  --json              JSON Lines on stdout: a {\"event\":\"progress\"}\n"
    "                      object per step of long work, then the result\n"
    "                      object as the last line\n"
    "  --dry-run           with up, down, to: print the SQL, change nothing\n"
    "  --lock-timeout MS   lock_timeout of migration statements (default\n"
    "                      $DS_MIGRATE_LOCK_TIMEOUT_MS or 5000; 0: none)\n"
    "  --wait MS           longest wait for another runner's lock (default\n"
    "                      600000; 0: fail at once)\n"
    "  --rows N            rehearse: synthetic rows per table (default 10000)\n"
    "  --threshold MS      rehearse: longest blocking lock allowed (default\n"
    "                      1000; 0: any blocking lock on a table with rows)\n"
    "  --scratch DB        rehearse: the scratch database to create (default\n"
    "                      <database>_rehearse_<pid>), or the URL of an empty\n"
    "                      one to use as it is\n"
    "  --keep              rehearse: keep the created scratch database\n"
    "  -v, --verbose       log progress to stderr\n"
    "  -h, --help          this text\n"
    "  --version           the library version\n"
    "\n"
    "exit status: 0 success, 1 failure, 2 usage error (rehearse: also bad\n"
    "input)\n";

typedef struct cli {
    const char *url;
    const char *dir;
    bool json;
    bool dry_run;
    bool verbose;
    int lock_timeout_ms; /* 0: default */
    int wait_ms;         /* 0: default */
    const char *command;
    const char *arg;
    const char *const *files; /* lint: the files (argv entries) */
    long long rows;           /* rehearse: -1 default */
    long long threshold_ms;   /* rehearse: -1 default */
    const char *scratch;
    bool keep;
    size_t nfiles;
    json_t *steps; /* --json: what ran */
    bool line_open; /* a progress line waits on the terminal (stderr) */
    /* the rate is per item and phase: since the event before its first */
    char rate_key[256];
    int64_t rate_t0_ms, last_ms;
} cli;

static int usage_error(const char *fmt, const char *what) {
    fprintf(stderr, "ds-migrate: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, "\nrun `ds-migrate --help` for usage\n");
    return EXIT_USAGE;
}

/* A non-negative int; false when `s` is not one. */
static bool parse_int(const char *s, long long max, long long *out) {
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < 0 || v > max)
        return false;
    *out = v;
    return true;
}

static void log_to_stderr(void *ud, ds_log_level level, const char *module,
                          const char *msg) {
    (void)ud;
    fprintf(stderr, "ds-migrate: %s: %s: %s\n", ds_log_level_str(level),
            module, msg);
}

/* ---- output ------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..len), or 0 (jansson's rules:
 * no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_seq_len(const unsigned char *s, size_t len) {
    unsigned char c = s[0];
    size_t n = 0;
    if (c < 0x80)
        n = 1;
    else if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4;
    if (n == 0 || n > len)
        return 0;
    for (size_t k = 1; k < n; k++)
        if ((s[k] & 0xC0) != 0x80)
            return 0;
    if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F) ||
        (c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F))
        return 0;
    return n;
}

/*
 * A JSON string of `s`. JSON strings are UTF-8, and an error message cut
 * at DS_ERROR_MESSAGE_MAX bytes, a server message or a migration file need
 * not be: each byte that starts no valid sequence becomes U+FFFD, so the
 * field is never dropped. NULL only when out of memory.
 */
static json_t *json_text(const char *s) {
    size_t len = strlen(s);
    json_t *j = json_stringn(s, len);
    if (j)
        return j;
    char *clean = malloc(3 * len + 1); /* each byte at most U+FFFD */
    if (!clean)
        return NULL;
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq_len(u + i, len - i);
        if (n) {
            memcpy(clean + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(clean + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(clean, o);
    free(clean);
    return j;
}

/* One line: with --json stdout is JSON Lines (progress events, then the
 * result). */
static void print_json(json_t *obj) {
    char *s = json_dumps(obj, JSON_PRESERVE_ORDER);
    if (s) {
        puts(s);
        free(s);
    }
}

static const char *event_word(ds_migrate_event_kind ev) {
    switch (ev) {
    case DS_MIGRATE_EVENT_APPLIED: return "applied";
    case DS_MIGRATE_EVENT_REVERTED: return "reverted";
    default: return "";
    }
}

/* A step of the "ran" / "steps" array: which migration, which way. */
static json_t *step_json(const ds_migrate_event *p) {
    return json_pack("{s:I, s:s, s:s}", "version", (json_int_t)p->version,
                     "name", p->name, "direction", p->up ? "up" : "down");
}

/* Clears the progress line on the terminal before other output. */
static void end_progress_line(cli *c) {
    if (c->line_open) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        c->line_open = false;
    }
}

/* Long work (ds_progress, any operation): with --json one JSON object a
 * line on stdout; on a terminal one line on stderr that rewrites itself
 * (what, done/total, rate, ETA); with -v a plain line on stderr; else
 * nothing. */
static int print_progress(void *ud, const ds_progress *p) {
    cli *c = ud;
    char key[256];
    snprintf(key, sizeof key, "%s/%s/%s", p->operation, p->item, p->phase);
    if (strcmp(key, c->rate_key) != 0) {
        snprintf(c->rate_key, sizeof c->rate_key, "%s", key);
        /* a whole operation's count runs from its start; an item's from
         * where the one before ended */
        c->rate_t0_ms = p->item[0] ? c->last_ms : 0;
    }
    c->last_ms = p->elapsed_ms;
    double secs = (double)(p->elapsed_ms - c->rate_t0_ms) / 1e3;
    double rate = secs > 0 ? (double)p->done / secs : 0;
    rate = (double)(int64_t)(rate * 10 + 0.5) / 10;
    bool known = p->total >= 0;
    double eta = known && rate > 0 ? (double)(p->total - p->done) / rate : 0;
    if (c->json) {
        json_t *j = json_pack(
            "{s:s, s:s, s:o, s:s, s:s, s:I, s:I, s:I, s:f, s:o}", "event",
            "progress", "operation", p->operation, "item", json_text(p->item),
            "phase", p->phase, "unit", p->unit, "done", (json_int_t)p->done,
            "total", (json_int_t)p->total, "elapsed_ms",
            (json_int_t)p->elapsed_ms, "rate_per_s", rate, "eta_s",
            known && rate > 0 ? json_real((double)(int64_t)(eta * 10 + 0.5) / 10)
                              : json_null());
        char *line = j ? json_dumps(j, JSON_PRESERVE_ORDER | JSON_COMPACT)
                       : NULL;
        if (line) {
            puts(line);
            fflush(stdout);
        }
        free(line);
        json_decref(j);
        return 0;
    }
    bool tty = isatty(2);
    if (!tty && !c->verbose)
        return 0;
    char what[160];
    snprintf(what, sizeof what, "%s/%s", p->item[0] ? p->item : p->operation,
             p->phase);
    char total[32], eta_text[32];
    if (known)
        snprintf(total, sizeof total, "%lld", (long long)p->total);
    else
        snprintf(total, sizeof total, "?");
    if (known && rate > 0)
        snprintf(eta_text, sizeof eta_text, "ETA %.0fs", eta);
    else
        snprintf(eta_text, sizeof eta_text, "ETA -");
    fprintf(stderr, "%s%s  %lld/%s %s  %.1f/s  %s%s", tty ? "\r\033[K" : "",
            what, (long long)p->done, total, p->unit, rate, eta_text,
            tty ? "" : "\n");
    fflush(stderr);
    c->line_open = tty;
    return 0;
}

static void on_event(void *ud, const ds_migrate_event *p) {
    cli *c = ud;
    if (p->kind != DS_MIGRATE_EVENT_PROGRESS)
        end_progress_line(c);
    switch (p->kind) {
    case DS_MIGRATE_EVENT_WAITING:
        if (!c->json)
            fprintf(stderr, "ds-migrate: another runner holds the migration "
                            "lock; waiting\n");
        break;
    case DS_MIGRATE_EVENT_APPLYING:
    case DS_MIGRATE_EVENT_REVERTING:
        if (c->verbose)
            fprintf(stderr, "ds-migrate: %s %04lld_%s%s\n",
                    p->kind == DS_MIGRATE_EVENT_APPLYING ? "applying"
                                                         : "reverting",
                    (long long)p->version, p->name,
                    p->no_transaction ? " (outside a transaction)" : "");
        break;
    case DS_MIGRATE_EVENT_APPLIED:
    case DS_MIGRATE_EVENT_REVERTED:
        if (c->json) {
            json_t *step = step_json(p);
            json_object_set_new(step, "duration_ms",
                                json_integer(p->elapsed_us / 1000));
            json_array_append_new(c->steps, step);
        } else
            printf("%s %04lld_%s (%lld ms)\n", event_word(p->kind),
                   (long long)p->version, p->name,
                   (long long)(p->elapsed_us / 1000));
        break;
    case DS_MIGRATE_EVENT_SQL:
        if (c->json) {
            json_t *step = step_json(p);
            json_object_set_new(step, "no_transaction",
                                json_boolean(p->no_transaction));
            json_object_set_new(step, "sql", json_text(p->sql));
            json_array_append_new(c->steps, step);
        } else
            printf("%s\n", p->sql);
        break;
    case DS_MIGRATE_EVENT_PROGRESS:
        break; /* the same reports reach print_progress */
    }
}

static void format_time(int64_t epoch_us, char *buf, size_t cap) {
    time_t t = (time_t)(epoch_us / 1000000);
    struct tm tm;
    if (!epoch_us || !gmtime_r(&t, &tm) ||
        !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, cap, "%s", "");
}

static json_t *list_json(const ds_migration_list *l) {
    json_t *items = json_array();
    for (size_t k = 0; k < l->count; k++) {
        const ds_migration *m = &l->items[k];
        char when[32];
        format_time(m->applied_at_us, when, sizeof when);
        json_t *o = json_pack(
            "{s:I, s:s, s:s, s:b, s:s, s:s}", "version", (json_int_t)m->version,
            "name", m->name, "state", ds_migrate_state_str(m->state),
            "no_transaction", m->no_transaction, "checksum", m->checksum,
            "applied_checksum", m->applied_checksum);
        if (o && m->applied_at_us) {
            json_object_set_new(o, "applied_at", json_string(when));
            json_object_set_new(o, "duration_ms",
                                json_integer((json_int_t)m->duration_ms));
        }
        json_array_append_new(items, o);
    }
    return json_pack("{s:I, s:I, s:I, s:b, s:o}", "current_version",
                     (json_int_t)l->current_version, "latest_version",
                     (json_int_t)l->latest_version, "pending",
                     (json_int_t)l->pending, "consistent", l->consistent,
                     "migrations", items);
}

static void print_list(const ds_migration_list *l) {
    printf("%-8s %-32s %-13s %s\n", "version", "name", "state", "applied at");
    for (size_t k = 0; k < l->count; k++) {
        const ds_migration *m = &l->items[k];
        char when[32];
        format_time(m->applied_at_us, when, sizeof when);
        printf("%04lld     %-32s %-13s %s", (long long)m->version, m->name,
               ds_migrate_state_str(m->state), when);
        if (m->applied_at_us)
            printf(" (%lld ms)", (long long)m->duration_ms);
        printf("%s\n", m->no_transaction ? " [no transaction]" : "");
    }
    printf("current version %lld, latest %lld, %zu pending%s\n",
           (long long)l->current_version, (long long)l->latest_version,
           l->pending, l->consistent ? "" : "; the history is inconsistent "
                                            "(see `ds-migrate verify`)");
}

/* ---- commands --------------------------------------------------------------- */

typedef struct outcome {
    ds_status st;
    ds_error err;
    json_t *extra; /* fields added to the JSON object */
    char summary[256];
} outcome;

/* The memory lists of large users (ds_memory_maintain), where the database
 * has a memory schema; *clustered: users (re-)clustered, -1 when skipped. */
static ds_status maintain_memory(ds_pool *pool, long long *clustered,
                                 ds_error *err) {
    *clustered = -1;
    ds_config *cfg = NULL;
    ds_memory *mem = NULL;
    ds_status st = ds_config_from_env(&cfg, err);
    if (st == DS_OK)
        st = ds_memory_open(pool, cfg, &mem, err);
    ds_config_free(cfg);
    if (st == DS_ERR_SCHEMA && strstr(err->message, "memory schema is missing")) {
        /* a database without the memory tables: nothing to keep */
        memset(err, 0, sizeof *err);
        return DS_OK;
    }
    size_t n = 0;
    if (st == DS_OK)
        st = ds_memory_maintain(mem, NULL, &n, err);
    ds_memory_close(mem);
    if (st == DS_OK)
        *clustered = (long long)n;
    return st;
}

static void run_command(cli *c, ds_pool *pool, outcome *o) {
    ds_migrate_options opts = DS_MIGRATE_OPTIONS_INIT;
    opts.dir = c->dir;
    opts.lock_timeout_ms = c->lock_timeout_ms;
    opts.lock_wait_ms = c->wait_ms;
    opts.dry_run = c->dry_run;
    opts.on_event = on_event;
    opts.on_event_ud = c;
    opts.on_progress = print_progress;
    opts.on_progress_ud = c;
    ds_error *err = &o->err;
    const char *cmd = c->command;
    int n = 0;
    long long v = 0;

    if (!strcmp(cmd, "up") || !strcmp(cmd, "dry-run")) {
        o->st = ds_migrate_up(pool, &opts, &n, err);
        snprintf(o->summary, sizeof o->summary, "%d migration(s) %s", n,
                 opts.dry_run ? "would run" : "applied");
    } else if (!strcmp(cmd, "down")) {
        if (c->arg)
            parse_int(c->arg, INT_MAX, &v);
        o->st = ds_migrate_down(pool, &opts, c->arg ? (int)v : 1, &n, err);
        snprintf(o->summary, sizeof o->summary, "%d migration(s) %s", n,
                 opts.dry_run ? "would be reverted" : "reverted");
    } else if (!strcmp(cmd, "to")) {
        parse_int(c->arg, LLONG_MAX, &v);
        o->st = ds_migrate_to(pool, &opts, (int64_t)v, &n, err);
        snprintf(o->summary, sizeof o->summary, "%d migration(s) %s", n,
                 opts.dry_run ? "would run" : "ran");
    } else if (!strcmp(cmd, "verify")) {
        o->st = ds_migrate_verify(pool, &opts, err);
        snprintf(o->summary, sizeof o->summary,
                 "the applied history matches the migrations");
    } else if (!strcmp(cmd, "maintain")) {
        if (c->arg)
            parse_int(c->arg, 120, &v);
        else
            v = 3;
        o->st = ds_migrate_maintain(pool, &opts, (int)v, &n, err);
        long long clustered = -1;
        if (o->st == DS_OK && !opts.dry_run)
            o->st = maintain_memory(pool, &clustered, err);
        snprintf(o->summary, sizeof o->summary,
                 "%d analytics_events partition(s) created, %lld memory "
                 "user(s) clustered", n, clustered < 0 ? 0 : clustered);
        if (o->st == DS_OK)
            o->extra = json_pack("{s:i, s:i, s:I}", "months_ahead", (int)v,
                                 "created", n, "memory_users_clustered",
                                 (json_int_t)clustered);
        return;
    } else if (!strcmp(cmd, "check")) {
        o->st = ds_migrate_check_schema(pool, err);
        snprintf(o->summary, sizeof o->summary,
                 "the database matches this build (schema version %d)",
                 DS_SCHEMA_VERSION);
        if (o->st == DS_OK)
            o->extra = json_pack("{s:i}", "schema_version", DS_SCHEMA_VERSION);
        return;
    }
    if (o->st != DS_OK && strcmp(cmd, "verify") != 0)
        return;
    /* Where the database stands now (also for a failed verify). */
    ds_migration_list *list = NULL;
    ds_error serr = {0};
    if (ds_migrate_status(pool, &opts, &list, &serr) == DS_OK) {
        if (!strcmp(cmd, "status")) {
            if (c->json)
                o->extra = list_json(list);
            else
                print_list(list);
        } else {
            o->extra = json_pack("{s:I, s:I, s:I}", "current_version",
                                 (json_int_t)list->current_version,
                                 "latest_version",
                                 (json_int_t)list->latest_version, "pending",
                                 (json_int_t)list->pending);
            size_t used = strlen(o->summary);
            snprintf(o->summary + used, sizeof o->summary - used,
                     "; at version %lld of %lld",
                     (long long)list->current_version,
                     (long long)list->latest_version);
        }
        ds_migrate_list_free(list);
    } else if (o->st == DS_OK) {
        o->st = serr.code;
        o->err = serr;
    }
}

static const char *const commands[] = {"up",       "down",  "to",
                                       "status",   "verify", "dry-run",
                                       "maintain", "check",  "lint",
                                       "rehearse"};

/* A flag without a value: true when `a` is one (help and version exit). */
static bool parse_flag(const char *a, cli *c) {
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
        fputs(usage_text, stdout);
        exit(0);
    }
    if (!strcmp(a, "--version")) {
        printf("ds-migrate (libdatastore %s, schema version %d)\n",
               ds_version(), DS_SCHEMA_VERSION);
        exit(0);
    }
    if (!strcmp(a, "--json"))
        c->json = true;
    else if (!strcmp(a, "--dry-run"))
        c->dry_run = true;
    else if (!strcmp(a, "--keep"))
        c->keep = true;
    else if (!strcmp(a, "-v") || !strcmp(a, "--verbose"))
        c->verbose = true;
    else
        return false;
    return true;
}

/* Stores the value of option `opt` (one of those that take one). */
static int set_option(const char *opt, const char *value, cli *c) {
    long long v = 0;
    if (!strcmp(opt, "--database-url")) {
        c->url = value;
    } else if (!strcmp(opt, "--dir")) {
        c->dir = value;
    } else if (!strcmp(opt, "--scratch")) {
        c->scratch = value;
    } else if (!strcmp(opt, "--rows")) {
        if (!parse_int(value, INT64_MAX, &v))
            return usage_error("%s takes a number of rows (0 or more)", opt);
        c->rows = v;
    } else if (!strcmp(opt, "--threshold")) {
        if (!parse_int(value, INT_MAX, &v))
            return usage_error("%s takes milliseconds (0 or more)", opt);
        c->threshold_ms = v;
    } else if (!parse_int(value, INT_MAX, &v)) {
        return usage_error("%s takes milliseconds (0 or more)", opt);
    } else if (!strcmp(opt, "--lock-timeout")) {
        c->lock_timeout_ms = v == 0 ? -1 : (int)v;
    } else {
        c->wait_ms = v == 0 ? -1 : (int)v;
    }
    return 0;
}

/* `--name=value` or `--name value` (argv[*i + 1], then *i moves on). */
static int parse_option(int argc, char **argv, int *i, cli *c) {
    const char *a = argv[*i];
    const char *eq = strchr(a, '=');
    size_t name_len = eq ? (size_t)(eq - a) : strlen(a);
    static const char *const with_value[] = {
        "--database-url", "--dir",       "--lock-timeout", "--wait",
        "--rows",         "--threshold", "--scratch"};
    const char *opt = NULL;
    for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++)
        if (strlen(with_value[k]) == name_len &&
            !strncmp(a, with_value[k], name_len))
            opt = with_value[k];
    if (!opt)
        return usage_error("unknown option %s", a);
    const char *value = NULL;
    if (eq)
        value = eq + 1;
    else if (*i + 1 < argc)
        value = argv[++*i];
    if (!value || !*value)
        return usage_error("%s needs a value", opt);
    return set_option(opt, value, c);
}

/* The command, lint's files, or the command's argument. */
static int parse_word(char **argv, int i, cli *c) {
    const char *a = argv[i];
    if (!c->command) {
        for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
            if (!strcmp(a, commands[k]))
                c->command = commands[k];
        if (!c->command)
            return usage_error("unknown command \"%s\"", a);
    } else if (!strcmp(c->command, "lint")) {
        if (!c->nfiles)
            c->files = (const char *const *)&argv[i];
        if (&c->files[c->nfiles] != (const char *const *)&argv[i])
            return usage_error("%s", "lint: options go before the files");
        c->nfiles++;
    } else if (!c->arg) {
        c->arg = a;
    } else {
        return usage_error("unexpected argument \"%s\"", a);
    }
    return 0;
}

/* What the command makes of its argument and the options. */
static int check_command(cli *c) {
    if (!c->command)
        return usage_error("%s", "no command given");
    const char *cmd = c->command;
    long long v;
    bool takes_arg = !strcmp(cmd, "down") || !strcmp(cmd, "to") ||
                     !strcmp(cmd, "maintain");
    if (c->arg && !takes_arg)
        return usage_error("%s takes no argument", cmd);
    if (!strcmp(cmd, "to") && (!c->arg || !parse_int(c->arg, LLONG_MAX, &v)))
        return usage_error("%s", "to needs a VERSION (0 or more)");
    if (!strcmp(cmd, "down") && c->arg &&
        (!parse_int(c->arg, INT_MAX, &v) || v < 1))
        return usage_error("%s", "down takes a number of steps (1 or more)");
    if (!strcmp(cmd, "maintain") && c->arg && !parse_int(c->arg, 120, &v))
        return usage_error("%s", "maintain takes MONTHS from 0 to 120");
    if (c->dry_run && strcmp(cmd, "up") && strcmp(cmd, "down") &&
        strcmp(cmd, "to") && strcmp(cmd, "dry-run"))
        return usage_error("--dry-run does not apply to %s", cmd);
    if (!strcmp(cmd, "dry-run"))
        c->dry_run = true;
    if (strcmp(cmd, "rehearse") != 0 &&
        (c->rows >= 0 || c->threshold_ms >= 0 || c->scratch || c->keep))
        return usage_error("%s", "--rows, --threshold, --scratch and --keep "
                                 "apply to rehearse only");
    if (!strcmp(cmd, "lint"))
        return 0; /* no database */
    if (!c->url) {
        const char *env = getenv("DATABASE_URL");
        c->url = env && *env ? env : NULL;
    }
    if (!c->url)
        return usage_error("%s", "no database: set DATABASE_URL or pass "
                                 "--database-url");
    return 0;
}

static int parse_args(int argc, char **argv, cli *c) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int rc = 0;
        if (parse_flag(a, c))
            continue;
        if (!strncmp(a, "--", 2))
            rc = parse_option(argc, argv, &i, c);
        else if (a[0] == '-' && a[1])
            rc = usage_error("unknown option %s", a);
        else
            rc = parse_word(argv, i, c);
        if (rc)
            return rc;
    }
    return check_command(c);
}

static ds_status open_pool(const cli *c, ds_pool **pool, ds_error *err) {
    ds_config *cfg = NULL;
    ds_status st = ds_config_from_env(&cfg, err);
    if (st == DS_OK)
        st = ds_config_set(cfg, "database_url", c->url, err);
    /* Only the primary matters, and every statement runs once or twice:
     * unnamed statements cost nothing extra and work behind any pooler
     * (the runner tells a pooler from a direct connection by itself). */
    if (st == DS_OK)
        st = ds_config_set(cfg, "database_replica_urls", NULL, err);
    if (st == DS_OK)
        st = ds_config_set(cfg, "statement_mode", "pooler", err);
    if (st == DS_OK)
        st = ds_config_set_int(cfg, "pool_min", 1, err);
    if (st == DS_OK)
        st = ds_config_set_int(cfg, "pool_max", 2, err);
    const char *app = getenv("DS_APPLICATION_NAME");
    if (st == DS_OK && !(app && *app))
        st = ds_config_set(cfg, "application_name", "ds-migrate", err);
    if (st == DS_OK)
        st = ds_pool_open(cfg, pool, err);
    ds_config_free(cfg);
    return st;
}

/* ---- lint ---------------------------------------------------------------- */

static json_t *finding_json(const ds_migrate_lint_finding *f) {
    json_t *j = json_pack("{s:s, s:s, s:o, s:i, s:o, s:s, s:s, s:b}", "rule",
                          f->rule, "level",
                          f->level == DS_MIGRATE_LINT_ERROR ? "error" : "warning",
                          "file", json_text(f->file), "line", f->line,
                          "message", json_text(f->message), "why", f->why,
                          "fix", f->fix, "waived", f->waived);
    if (j && f->waiver)
        json_object_set_new(j, "waiver", json_text(f->waiver));
    return j;
}

static int run_lint(const cli *c) {
    ds_migrate_options opts = DS_MIGRATE_OPTIONS_INIT;
    opts.dir = c->dir;
    ds_migrate_lint_report *r = NULL;
    ds_error err = {0};
    ds_status st = ds_migrate_lint(&opts, c->files, c->nfiles, &r, &err);
    bool ok = st == DS_OK && r->errors == 0;
    if (c->json) {
        json_t *out = json_pack("{s:b, s:s}", "ok", ok, "command", "lint");
        if (st == DS_OK) {
            json_t *items = json_array();
            for (size_t k = 0; k < r->count; k++)
                json_array_append_new(items, finding_json(&r->items[k]));
            json_object_set_new(out, "findings", items);
            json_object_set_new(out, "files", json_integer((json_int_t)r->files));
            json_object_set_new(out, "errors", json_integer((json_int_t)r->errors));
            json_object_set_new(out, "warnings",
                                json_integer((json_int_t)r->warnings));
            json_object_set_new(out, "waived", json_integer((json_int_t)r->waived));
        } else {
            json_object_set_new(
                out, "error",
                json_pack("{s:s, s:s, s:o}", "code", ds_status_str(st),
                          "sqlstate", err.sqlstate, "message",
                          json_text(err.message)));
        }
        print_json(out);
        json_decref(out);
    } else if (st != DS_OK) {
        fprintf(stderr, "ds-migrate: lint: %s: %s\n", ds_status_str(st),
                err.message);
    } else {
        for (size_t k = 0; k < r->count; k++) {
            const ds_migrate_lint_finding *f = &r->items[k];
            if (f->waived && !c->verbose)
                continue;
            printf("%s:%d: %s [%s] %s\n", f->file, f->line,
                   f->waived ? "waived"
                   : f->level == DS_MIGRATE_LINT_ERROR ? "error"
                                               : "warning",
                   f->rule, f->message);
            if (f->waived)
                printf("    reason: %s\n", f->waiver ? f->waiver : "");
            else
                printf("    why: %s\n    fix: %s\n", f->why, f->fix);
        }
        fprintf(ok ? stdout : stderr,
                "%s: %zu file(s), %zu error(s), %zu warning(s), %zu waived\n",
                ok ? "ok" : "ds-migrate: lint failed", r->files, r->errors,
                r->warnings, r->waived);
    }
    ds_migrate_lint_report_free(r);
    return ok ? 0 : 1;
}

/* ---- rehearse ------------------------------------------------------------- */

static json_t *lock_json(const ds_migrate_rehearse_report *r, const ds_migrate_rehearse_lock *l) {
    const ds_migrate_rehearse_statement *s = &r->statements[l->statement];
    return json_pack("{s:s, s:o, s:i, s:o, s:s, s:s, s:I, s:I, s:b, s:b, s:b, "
                     "s:b}",
                     "event", "lock", "file", json_text(s->file), "line",
                     s->line, "statement", json_text(s->sql), "table",
                     l->table, "mode", l->mode, "held_ms",
                     (json_int_t)l->held_ms, "rows", (json_int_t)l->rows,
                     "rewritten", l->rewritten, "blocks_reads", l->blocks_reads,
                     "blocks_writes", l->blocks_writes, "over_threshold",
                     l->over_threshold);
}

static void print_json_line(json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (s)
        puts(s);
    free(s);
    json_decref(j);
}

static void print_rehearsal(const cli *c, const ds_migrate_rehearse_report *r) {
    if (c->json) {
        for (size_t k = 0; k < r->ntables; k++) {
            const ds_migrate_rehearse_table *t = &r->tables[k];
            json_t *j = json_pack("{s:s, s:s, s:I}", "event", "table", "table",
                                  t->table, "rows", (json_int_t)t->rows);
            if (j && t->skipped)
                json_object_set_new(j, "skipped", json_text(t->skipped));
            print_json_line(j);
        }
        for (size_t k = 0; k < r->nstatements; k++) {
            const ds_migrate_rehearse_statement *s = &r->statements[k];
            print_json_line(json_pack("{s:s, s:o, s:i, s:o, s:I, s:b}", "event",
                                      "statement", "file", json_text(s->file),
                                      "line", s->line, "statement",
                                      json_text(s->sql), "duration_ms",
                                      (json_int_t)s->duration_ms, "ok", s->ok));
        }
        for (size_t k = 0; k < r->nlocks; k++)
            print_json_line(lock_json(r, &r->locks[k]));
        json_t *sum = json_pack(
            "{s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:b}", "event",
            "summary", "ok", r->ok, "from_version",
            (json_int_t)r->from_version, "to_version",
            (json_int_t)r->to_version, "applied", (json_int_t)r->applied,
            "violations", (json_int_t)r->violations, "threshold_ms",
            (json_int_t)r->lock_threshold_ms, "rows_per_table",
            (json_int_t)r->rows_per_table, "scratch_database",
            r->scratch_database ? r->scratch_database : "", "scratch_kept",
            r->scratch_kept);
        if (sum && r->error)
            json_object_set_new(sum, "error", json_text(r->error));
        print_json_line(sum);
        return;
    }
    for (size_t k = 0; k < r->ntables; k++)
        if (r->tables[k].skipped)
            printf("table %s: %lld rows: %s\n", r->tables[k].table,
                   (long long)r->tables[k].rows, r->tables[k].skipped);
    printf("%-40s %-28s %-22s %8s %9s %s\n", "file:line", "table", "lock",
           "held_ms", "rows", "rewritten");
    for (size_t k = 0; k < r->nstatements; k++) {
        const ds_migrate_rehearse_statement *s = &r->statements[k];
        char where[300];
        snprintf(where, sizeof where, "%s:%d", s->file, s->line);
        bool any = false;
        for (size_t j = 0; j < r->nlocks; j++) {
            const ds_migrate_rehearse_lock *l = &r->locks[j];
            if (l->statement != k)
                continue;
            printf("%-40s %-28s %-22s %8lld %9lld %-3s%s\n", any ? "" : where,
                   l->table, l->mode, (long long)l->held_ms,
                   (long long)l->rows, l->rewritten ? "yes" : "no",
                   l->over_threshold ? "  << blocks "
                                       "traffic longer than the threshold"
                                     : "");
            any = true;
        }
        if (!any && c->verbose)
            printf("%-40s (no lock on an existing table)\n", where);
        if (!s->ok)
            printf("%-40s FAILED: %s\n", where, s->sql);
    }
    if (r->error)
        fprintf(stderr, "ds-migrate: rehearse: a migration failed on the "
                        "scratch database: %s\n",
                r->error);
    char thr[48];
    if (r->lock_threshold_ms)
        snprintf(thr, sizeof thr, "%lld ms", (long long)r->lock_threshold_ms);
    else
        snprintf(thr, sizeof thr, "0: any blocking lock");
    fprintf(r->ok ? stdout : stderr,
            "%s: version %lld -> %lld, %zu migration(s) applied to %s with "
            "%lld rows per table; %zu blocking lock(s) on populated tables "
            "over the threshold (%s)\n",
            r->ok ? "ok" : "ds-migrate: rehearse failed",
            (long long)r->from_version, (long long)r->to_version, r->applied,
            r->scratch_database ? r->scratch_database : "(nothing pending)",
            (long long)r->rows_per_table, r->violations, thr);
}

static int run_rehearse(const cli *c) {
    ds_migrate_rehearse_options o;
    ds_migrate_rehearse_options_init(&o);
    o.dir = c->dir;
    o.keep = c->keep;
    o.lock_timeout_ms = c->lock_timeout_ms;
    if (c->rows >= 0)
        o.rows_per_table = c->rows == 0 ? -1 : c->rows;
    if (c->threshold_ms >= 0)
        o.lock_threshold_ms = c->threshold_ms == 0 ? -1 : c->threshold_ms;
    if (c->scratch && (strstr(c->scratch, "://") || strchr(c->scratch, '=')))
        o.scratch_url = c->scratch;
    else
        o.scratch_name = c->scratch;
    ds_config *cfg = NULL;
    ds_error err = {0};
    ds_migrate_rehearse_report *r = NULL;
    ds_status st = ds_config_from_env(&cfg, &err);
    if (st == DS_OK)
        st = ds_config_set(cfg, "database_url", c->url, &err);
    if (st == DS_OK)
        st = ds_migrate_rehearse(cfg, &o, &r, &err);
    ds_config_free(cfg);
    if (st != DS_OK) {
        if (c->json)
            print_json_line(json_pack("{s:s, s:b, s:{s:s, s:s, s:o}}", "event",
                                      "summary", "ok", 0, "error", "code",
                                      ds_status_str(st), "sqlstate",
                                      err.sqlstate, "message",
                                      json_text(err.message)));
        else
            fprintf(stderr, "ds-migrate: rehearse: %s: %s\n",
                    ds_status_str(st), err.message);
        return EXIT_USAGE;
    }
    print_rehearsal(c, r);
    int rc = r->ok ? 0 : 1;
    ds_migrate_rehearse_report_free(r);
    return rc;
}

int main(int argc, char **argv) {
    cli c = {0};
    c.rows = -1;
    c.threshold_ms = -1;
    int rc = parse_args(argc, argv, &c);
    if (rc)
        return rc;
    ds_log_set_fn(log_to_stderr, NULL, c.verbose ? DS_LOG_INFO : DS_LOG_WARN);
    if (!strcmp(c.command, "lint"))
        return run_lint(&c);
    if (!strcmp(c.command, "rehearse"))
        return run_rehearse(&c);
    if (c.json)
        c.steps = json_array();

    outcome o = {0};
    ds_pool *pool = NULL;
    o.st = open_pool(&c, &pool, &o.err);
    if (o.st == DS_OK)
        run_command(&c, pool, &o);
    ds_pool_close(pool);
    end_progress_line(&c);

    if (c.json) {
        json_t *out = json_pack("{s:b, s:s}", "ok", o.st == DS_OK, "command",
                                c.command);
        if (json_array_size(c.steps) ||
            (strcmp(c.command, "status") && strcmp(c.command, "verify") &&
             strcmp(c.command, "maintain") && strcmp(c.command, "check")))
            json_object_set(out, c.dry_run ? "steps" : "ran", c.steps);
        if (o.extra)
            json_object_update(out, o.extra);
        if (o.st != DS_OK)
            json_object_set_new(
                out, "error",
                json_pack("{s:s, s:s, s:o}", "code", ds_status_str(o.st),
                          "sqlstate", o.err.sqlstate, "message",
                          json_text(o.err.message)));
        print_json(out);
        json_decref(out);
    } else if (o.st == DS_OK) {
        if (strcmp(c.command, "status") && strcmp(c.command, "dry-run") &&
            !c.dry_run)
            printf("ok: %s\n", o.summary);
        else if (c.dry_run)
            fprintf(stderr, "ds-migrate: dry run: %s\n", o.summary);
    } else {
        fprintf(stderr, "ds-migrate: %s: %s\n", ds_status_str(o.st),
                o.err.message);
    }
    json_decref(o.extra);
    json_decref(c.steps);
    return o.st == DS_OK ? 0 : 1;
}
