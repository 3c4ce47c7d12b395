/*
 * ds-migrate lint: static rules for migrations that must run against a
 * live, populated database.
 *
 * A file is split into statements the way the runner splits it, and each
 * statement into tokens. The rules look for patterns in the tokens, and
 * they also look inside the bodies of DO blocks and functions and inside
 * string literals that hold SQL (what EXECUTE or format() runs), since that
 * is where a migration hides its riskiest DDL. Tables created earlier in
 * the same file are new: nothing reads them yet, so they may be changed
 * freely. Names built at run time (format's %s / %I) count as existing
 * tables.
 *
 * A finding can be waived on the line(s) directly above its statement:
 *     -- ds:lint-ignore RULE[,RULE...]: the reason it is safe here
 * A waiver without a reason, or naming an unknown rule, is itself an error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/growable.h"
#include "migrate/migrate_internal.h"

#define MAX_LINT_FILE_BYTES (64L * 1024 * 1024)
#define MAX_DEPTH 8
#define WAIVER_MARK "ds:lint-ignore"

/* ---- the rules --------------------------------------------------------- */

typedef struct rule_def {
    const char *id;
    ds_migrate_lint_level level;
    const char *why;
    const char *fix;
} rule_def;

enum {
    R_INDEX,
    R_CONC_IN_TX,
    R_NOT_VALID,
    R_BUILDS_INDEX,
    R_SET_NOT_NULL,
    R_TYPE,
    R_REWRITE,
    R_VOLATILE,
    R_ADD_NOT_NULL,
    R_RENAME_COLUMN,
    R_RENAME_TABLE,
    R_DROP_COLUMN,
    R_VACUUM_FULL,
    R_CLUSTER,
    R_LOCK_TABLE,
    R_REINDEX,
    R_PARTITION_OF,
    R_LOCK_TIMEOUT,
    R_WAIVER_REASON,
    R_WAIVER_RULE,
    R_WAIVER_UNUSED,
    R_COUNT
};

static const rule_def rules[R_COUNT] = {
    [R_INDEX] = {"index-not-concurrent", DS_MIGRATE_LINT_ERROR,
                 "CREATE INDEX without CONCURRENTLY holds a SHARE lock on the "
                 "table for the whole build: every INSERT, UPDATE and DELETE "
                 "waits",
                 "CREATE INDEX CONCURRENTLY IF NOT EXISTS in a file whose "
                 "first line is \"-- ds:no-transaction\" (the runner drops an "
                 "INVALID index a failed build left behind before it runs "
                 "the statement again)"},
    [R_CONC_IN_TX] = {"concurrently-in-transaction", DS_MIGRATE_LINT_ERROR,
                      "CONCURRENTLY cannot run inside a transaction block, "
                      "a DO block or a function: the migration fails",
                      "put the statement at the top level of a file whose "
                      "first line is \"-- ds:no-transaction\""},
    [R_NOT_VALID] = {"constraint-not-valid", DS_MIGRATE_LINT_ERROR,
                     "adding a CHECK or FOREIGN KEY constraint scans the whole "
                     "table under an ACCESS EXCLUSIVE lock (a foreign key "
                     "also locks the referenced table)",
                     "ADD CONSTRAINT ... NOT VALID (instant), then ALTER TABLE "
                     "... VALIDATE CONSTRAINT in a later statement or file "
                     "(it scans under SHARE UPDATE EXCLUSIVE, which blocks "
                     "neither reads nor writes)"},
    [R_BUILDS_INDEX] = {"constraint-builds-index", DS_MIGRATE_LINT_ERROR,
                        "a UNIQUE or PRIMARY KEY constraint builds its index "
                        "under an ACCESS EXCLUSIVE lock",
                        "CREATE UNIQUE INDEX CONCURRENTLY first, then ADD "
                        "CONSTRAINT ... UNIQUE USING INDEX (instant)"},
    [R_SET_NOT_NULL] = {"set-not-null", DS_MIGRATE_LINT_ERROR,
                        "SET NOT NULL scans the whole table under an ACCESS "
                        "EXCLUSIVE lock",
                        "ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID, "
                        "VALIDATE CONSTRAINT c, then SET NOT NULL (PostgreSQL "
                        "12+ skips the scan) and DROP CONSTRAINT c"},
    [R_TYPE] = {"column-type-rewrite", DS_MIGRATE_LINT_ERROR,
                "changing a column's type rewrites the table and its indexes "
                "under an ACCESS EXCLUSIVE lock (except a few binary-"
                "compatible changes: varchar(n) to text or a longer varchar)",
                "expand/contract: add a new column, backfill it in batches, "
                "switch readers and writers, drop the old column in a later "
                "release; waive with the reason when the change is binary-"
                "compatible"},
    [R_REWRITE] = {"table-rewrite", DS_MIGRATE_LINT_ERROR,
                   "SET LOGGED/UNLOGGED and SET TABLESPACE copy the whole "
                   "table under an ACCESS EXCLUSIVE lock",
                   "create a new table and move the rows in batches, or run "
                   "it in a maintenance window"},
    [R_VOLATILE] = {"volatile-default", DS_MIGRATE_LINT_ERROR,
                    "a column added with a volatile default (random(), "
                    "clock_timestamp(), gen_random_uuid(), nextval, serial, "
                    "GENERATED ... STORED) rewrites the table under an ACCESS "
                    "EXCLUSIVE lock",
                    "add the column without a default (or with a constant "
                    "one), set the default afterwards, and backfill existing "
                    "rows in batches"},
    [R_ADD_NOT_NULL] = {"add-column-not-null", DS_MIGRATE_LINT_ERROR,
                        "a NOT NULL column without a default fails on a table "
                        "that has rows",
                        "add it nullable (or with a constant DEFAULT), "
                        "backfill in batches, then the set-not-null recipe"},
    [R_RENAME_COLUMN] = {"rename-column", DS_MIGRATE_LINT_ERROR,
                         "running code still reads and writes the old name: "
                         "every query that names it fails from the moment "
                         "the migration commits",
                         "expand/contract across two releases: add the new "
                         "column, write both, backfill, read the new one, "
                         "then drop the old one"},
    [R_RENAME_TABLE] = {"rename-table", DS_MIGRATE_LINT_ERROR,
                        "running code still uses the old table name",
                        "expand/contract: create the new table (or a view "
                        "with the old name), move readers and writers, drop "
                        "the old name in a later release"},
    [R_DROP_COLUMN] = {"drop-column", DS_MIGRATE_LINT_ERROR,
                       "running code may still read the column (SELECT "
                       "lists, INSERT column lists): it fails as soon as the "
                       "column is gone",
                       "contract step of expand/contract: ship code that no "
                       "longer uses the column first, drop it in a later "
                       "release, and waive with that reason"},
    [R_VACUUM_FULL] = {"vacuum-full", DS_MIGRATE_LINT_ERROR,
                       "VACUUM FULL rewrites the table under an ACCESS "
                       "EXCLUSIVE lock",
                       "plain VACUUM, or rebuild online with an extension "
                       "such as pg_repack outside the migrations"},
    [R_CLUSTER] = {"cluster", DS_MIGRATE_LINT_ERROR,
                   "CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock",
                   "do not cluster in a migration; rebuild online outside "
                   "the migrations if the order matters"},
    [R_LOCK_TABLE] = {"lock-table", DS_MIGRATE_LINT_ERROR,
                      "an explicit EXCLUSIVE or ACCESS EXCLUSIVE lock is held "
                      "until the transaction ends, blocking the table's "
                      "traffic for the rest of the migration",
                      "take no explicit lock: let each short statement take "
                      "the lock it needs, with lock_timeout"},
    [R_REINDEX] = {"reindex-not-concurrent", DS_MIGRATE_LINT_ERROR,
                   "REINDEX without CONCURRENTLY blocks writes to the table "
                   "(and reads that would use the index) for the whole "
                   "rebuild",
                   "REINDEX ... CONCURRENTLY in a file whose first line is "
                   "\"-- ds:no-transaction\""},
    [R_PARTITION_OF] = {"partition-of-existing", DS_MIGRATE_LINT_WARNING,
                        "CREATE TABLE ... PARTITION OF takes an ACCESS "
                        "EXCLUSIVE lock on the parent and scans the default "
                        "partition under it",
                        "create the table on its own with a CHECK matching "
                        "the bounds, then ALTER TABLE ... ATTACH PARTITION "
                        "(SHARE UPDATE EXCLUSIVE on the parent)"},
    [R_LOCK_TIMEOUT] = {"lock-timeout", DS_MIGRATE_LINT_ERROR,
                        "DDL on an existing table queues for its lock; while "
                        "it waits behind a long query every later query on "
                        "the table queues behind it, so the table is down "
                        "for as long as the wait",
                        "SET lock_timeout (SET LOCAL in a transaction) to a "
                        "few seconds before the first such statement; the "
                        "runner retries a statement of a no-transaction "
                        "file that hits it"},
    [R_WAIVER_REASON] = {"waiver-without-reason", DS_MIGRATE_LINT_ERROR,
                         "a waiver must say why the finding is safe here, "
                         "for the reviewer and the next reader",
                         "-- ds:lint-ignore RULE: the reason"},
    [R_WAIVER_RULE] = {"waiver-unknown-rule", DS_MIGRATE_LINT_ERROR,
                       "the waiver names no rule of ds-migrate lint (a typo "
                       "would silently waive nothing)",
                       "use a rule id that ds-migrate lint reports"},
    [R_WAIVER_UNUSED] = {"waiver-unused", DS_MIGRATE_LINT_WARNING,
                         "the waiver matches no finding on the statement "
                         "below it",
                         "put the waiver on the line directly above the "
                         "statement, or remove it"},
};

/* ---- tokens ------------------------------------------------------------- */

typedef enum tok_type { T_WORD, T_STRING, T_NUM, T_PUNCT } tok_type;

typedef struct token {
    tok_type type;
    const char *p; /* T_STRING: the content between the quotes */
    size_t n;
    int line;
    bool dollar;   /* T_STRING: dollar-quoted */
    bool handled;  /* T_STRING: already linted as a body */
    char w[64];    /* T_WORD: lower-case; T_PUNCT: the character */
} token;

typedef struct tokens {
    token *t;
    size_t n, cap;
} tokens;

static bool ident_start(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           c >= 0x80;
}

static bool ident_char(unsigned char c) {
    return ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

static token *push(tokens *ts, tok_type type, const char *p, size_t n,
                   int line) {
    if (ts->n == ts->cap) {
        size_t cap = ts->cap ? ts->cap * 2 : 64;
        token *t = ds__reallocarray(ts->t, cap, sizeof *t);
        if (!t)
            return NULL;
        ts->t = t;
        ts->cap = cap;
    }
    token *t = &ts->t[ts->n++];
    memset(t, 0, sizeof *t);
    t->type = type;
    t->p = p;
    t->n = n;
    t->line = line;
    if (type == T_WORD || type == T_PUNCT) {
        size_t k = 0;
        for (; k < n && k + 1 < sizeof t->w; k++) {
            char c = p[k];
            t->w[k] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
        }
        t->w[k] = '\0';
    }
    return t;
}

/* Where tokenize() is in its text. */
typedef struct scanner {
    const char *s;
    size_t len;
    size_t i;
    int line;
    tokens *ts;
} scanner;

/* At a slash-star: past the (nested) block comment. */
static void skip_block_comment(scanner *sc) {
    const char *s = sc->s;
    int depth = 1;
    sc->i += 2;
    while (sc->i < sc->len && depth > 0) {
        size_t i = sc->i;
        if (s[i] == '\n')
            sc->line++;
        if (i + 1 < sc->len && s[i] == '/' && s[i + 1] == '*') {
            depth++;
            sc->i += 2;
        } else if (i + 1 < sc->len && s[i] == '*' && s[i + 1] == '/') {
            depth--;
            sc->i += 2;
        } else {
            sc->i++;
        }
    }
}

/* At a quote, a double quote or E': one string (or quoted name) token.
 * False when out of memory. */
static bool scan_quoted(scanner *sc) {
    const char *s = sc->s;
    size_t len = sc->len, i = sc->i;
    bool esc = s[i] == 'E' || s[i] == 'e';
    if (esc)
        i++;
    char q = s[i];
    size_t start = ++i;
    int start_line = sc->line;
    while (i < len) {
        if (esc && s[i] == '\\' && i + 1 < len) {
            sc->line += s[i + 1] == '\n';
            i += 2;
            continue;
        }
        if (s[i] == q) {
            if (i + 1 < len && s[i + 1] == q) {
                i += 2;
                continue;
            }
            break;
        }
        sc->line += s[i] == '\n';
        i++;
    }
    token *t = push(sc->ts, q == '"' ? T_WORD : T_STRING, s + start,
                    i - start, start_line);
    sc->i = i < len ? i + 1 : i;
    return t != NULL;
}

/* At a dollar sign: a dollar-quoted string, or a parameter ($1) skipped.
 * False when out of memory. */
static bool scan_dollar(scanner *sc) {
    const char *s = sc->s;
    size_t len = sc->len, i = sc->i;
    size_t k = i + 1;
    if (k < len && ident_start((unsigned char)s[k]))
        while (k < len && ident_char((unsigned char)s[k]) && s[k] != '$')
            k++;
    if (k >= len || s[k] != '$') {
        i++;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        sc->i = i;
        return true;
    }
    size_t tag = k - i + 1;
    size_t start = i + tag;
    size_t end = start;
    while (end + tag <= len && memcmp(s + end, s + i, tag) != 0)
        end++;
    if (end + tag > len)
        end = len;
    token *t = push(sc->ts, T_STRING, s + start, end - start, sc->line);
    if (!t)
        return false;
    t->dollar = true;
    for (size_t m = i; m < end && m < len; m++)
        sc->line += s[m] == '\n';
    sc->i = end + tag < len ? end + tag : len;
    return true;
}

/* Anything else: a format() placeholder, a word, a number or one
 * punctuation character. False when out of memory. */
static bool scan_word(scanner *sc) {
    const char *s = sc->s;
    size_t len = sc->len, i = sc->i, start = i;
    unsigned char c = (unsigned char)s[i];
    tok_type type = T_PUNCT;
    if (c == '%' && i + 1 < len &&
        (s[i + 1] == 's' || s[i + 1] == 'I' || s[i + 1] == 'L')) {
        /* format()'s placeholders: a name known only at run time */
        type = T_WORD;
        i += 2;
    } else if (ident_start(c)) {
        type = T_WORD;
        while (i < len && ident_char((unsigned char)s[i]))
            i++;
    } else if (c >= '0' && c <= '9') {
        type = T_NUM;
        while (i < len && (ident_char((unsigned char)s[i]) || s[i] == '.'))
            i++;
    } else {
        i++;
    }
    sc->i = i;
    return push(sc->ts, type, s + start, i - start, sc->line) != NULL;
}

/* Tokenizes `s`; the SQL was split by ds__sql_split (or is the content of
 * a string that holds SQL), so an unterminated quote here ends the text. */
static ds_status tokenize(const char *s, size_t len, int line, tokens *ts,
                          ds_error *err) {
    scanner sc = {s, len, 0, line, ts};
    bool ok = true;
    while (ok && sc.i < len) {
        size_t i = sc.i;
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') {
            sc.line++;
            sc.i++;
        } else if (c == ' ' || c == '\t' || c == '\r' || c == '\f' ||
                   c == '\v') {
            sc.i++;
        } else if (c == '-' && i + 1 < len && s[i + 1] == '-') {
            while (sc.i < len && s[sc.i] != '\n')
                sc.i++;
        } else if (c == '/' && i + 1 < len && s[i + 1] == '*') {
            skip_block_comment(&sc);
        } else if (c == '\'' || c == '"' ||
                   ((c == 'E' || c == 'e') && i + 1 < len && s[i + 1] == '\'' &&
                    (i == 0 || !ident_char((unsigned char)s[i - 1])))) {
            ok = scan_quoted(&sc);
        } else if (c == '$') {
            ok = scan_dollar(&sc);
        } else {
            ok = scan_word(&sc);
        }
    }
    return ok ? DS_OK
              : ds__error_set(err, DS_ERR_NOMEM, "lint: out of memory");
}

/* ---- the state of one run ---------------------------------------------- */

typedef struct waiver {
    int line;        /* of the comment */
    int target_line; /* the code line it applies to */
    char rules[256]; /* ",rule,rule," */
    bool used;
} waiver;

typedef struct not_null_check {
    char table[64];
    char constraint[64];
    char column[64];
    bool validated;
} not_null_check;

typedef struct lint_file {
    const char *name;
    bool no_tx;
    bool lock_timeout_set;
    char (*tables)[64]; /* created in this file */
    size_t ntables;
    not_null_check *checks;
    size_t nchecks;
    waiver *waivers;
    size_t nwaivers;
} lint_file;

typedef struct linter {
    ds_migrate_lint_report *report;
    size_t cap;
    lint_file *file;
    ds_error *err;
} linter;

typedef struct scope {
    bool in_do;       /* a DO block: runs now, inside the transaction */
    bool in_function; /* a function body: runs later, when called */
    int depth;
} scope;

static const char *strdup_or_null(const char *s) { return s ? ds__strdup(s) : NULL; }

static ds_status add_finding(linter *L, int rule, int line, const char *fmt,
                             ...) DS_PRINTF(4, 5);
static ds_status add_finding(linter *L, int rule, int line, const char *fmt,
                             ...) {
    ds_migrate_lint_report *r = L->report;
    if (r->count == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 16;
        ds_migrate_lint_finding *items = ds__reallocarray(r->items, cap, sizeof *items);
        if (!items)
            return ds__error_set(L->err, DS_ERR_NOMEM, "lint: out of memory");
        r->items = items;
        L->cap = cap;
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ds_migrate_lint_finding *f = &r->items[r->count];
    memset(f, 0, sizeof *f);
    f->rule = rules[rule].id;
    f->level = rules[rule].level;
    f->line = line;
    f->why = rules[rule].why;
    f->fix = rules[rule].fix;
    f->file = strdup_or_null(L->file->name);
    f->message = ds__strdup(msg);
    if (!f->file || !f->message) {
        ds__free((char *)f->file);
        ds__free((char *)f->message);
        return ds__error_set(L->err, DS_ERR_NOMEM, "lint: out of memory");
    }
    /* A waiver on the lines above this statement? */
    if (rule != R_WAIVER_REASON && rule != R_WAIVER_RULE &&
        rule != R_WAIVER_UNUSED) {
        char key[80];
        snprintf(key, sizeof key, ",%s,", f->rule);
        for (size_t k = 0; k < L->file->nwaivers; k++) {
            waiver *w = &L->file->waivers[k];
            if (w->target_line == line && strstr(w->rules, key)) {
                w->used = true;
                f->waived = true;
            }
        }
    }
    r->count++;
    if (f->waived)
        r->waived++;
    else if (f->level == DS_MIGRATE_LINT_ERROR)
        r->errors++;
    else
        r->warnings++;
    return DS_OK;
}

/* ---- waivers ------------------------------------------------------------- */

static bool blank_or_comment(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
        p++;
    return p == end || (end - p >= 2 && p[0] == '-' && p[1] == '-');
}

static int rule_by_name(const char *name, size_t n) {
    for (int k = 0; k < R_COUNT; k++)
        if (strlen(rules[k].id) == n && !memcmp(rules[k].id, name, n))
            return k;
    return -1;
}

/* The line of the first line after `eol` (of line `line`) that holds
 * code: what a waiver on `line` applies to. */
static int waiver_target(int line, const char *eol, const char *end) {
    int target = line + 1;
    const char *n = eol < end ? eol + 1 : end;
    while (n < end) {
        const char *e2 = memchr(n, '\n', (size_t)(end - n));
        if (!e2)
            e2 = end;
        if (!blank_or_comment(n, e2))
            break;
        target++;
        n = e2 < end ? e2 + 1 : end;
    }
    return target;
}

/* The rule names from `q` to `names_end` into w->rules (",a,b,"); an
 * unknown name, or none, is a finding. */
static ds_status waiver_rules(linter *L, waiver *w, const char *q,
                              const char *names_end) {
    strcpy(w->rules, ",");
    const char *r = q;
    bool any = false;
    while (r < names_end) {
        while (r < names_end && (*r == ' ' || *r == '\t' || *r == ','))
            r++;
        const char *s = r;
        while (r < names_end && *r != ' ' && *r != '\t' && *r != ',')
            r++;
        if (r == s)
            break;
        any = true;
        size_t nl = (size_t)(r - s);
        if (rule_by_name(s, nl) < 0) {
            ds_status st = add_finding(
                L, R_WAIVER_RULE, w->line,
                "waiver names \"%.*s\", which is no lint rule",
                (int)(nl > 64 ? 64 : nl), s);
            if (st != DS_OK)
                return st;
        } else if (strlen(w->rules) + nl + 2 < sizeof w->rules) {
            strncat(w->rules, s, nl);
            strcat(w->rules, ",");
        }
    }
    if (!any) {
        ds_status st = add_finding(L, R_WAIVER_RULE, w->line,
                                   "waiver names no rule");
        if (st != DS_OK)
            return st;
    }
    if (!strcmp(w->rules, ","))
        w->used = true; /* nothing valid: reported above */
    return DS_OK;
}

/* The reason after the colon (NULL: none) up to `eol`: kept in *reason,
 * or, when there is none (fewer than three letters), a finding and a
 * waiver that waives nothing. */
static ds_status waiver_reason(linter *L, waiver *w, const char *colon,
                               const char *eol, char **reason_out) {
    const char *reason = colon ? colon + 1 : eol;
    while (reason < eol && (*reason == ' ' || *reason == '\t'))
        reason++;
    const char *rend = eol;
    while (rend > reason &&
           (rend[-1] == ' ' || rend[-1] == '\t' || rend[-1] == '\r'))
        rend--;
    int letters = 0;
    for (const char *c = reason; c < rend; c++)
        letters += (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z');
    if (!colon || letters < 3) {
        w->rules[0] = '\0'; /* waives nothing */
        w->used = true;     /* and is reported once, here */
        return add_finding(L, R_WAIVER_REASON, w->line,
                           "waiver without a reason (write \"-- " WAIVER_MARK
                           " RULE: why it is safe here\")");
    }
    *reason_out = ds__strndup(reason, (size_t)(rend - reason));
    return *reason_out ? DS_OK
                       : ds__error_set(L->err, DS_ERR_NOMEM,
                                       "lint: out of memory");
}

/* One waiver comment: `q` is just past the mark, on line `line`. */
static ds_status read_waiver(linter *L, const char *q, const char *eol,
                             const char *end, int line, char ***reasons) {
    lint_file *lf = L->file;
    waiver *ws = ds__reallocarray(lf->waivers, lf->nwaivers + 1, sizeof *ws);
    char **rs = ds__reallocarray(*reasons, lf->nwaivers + 1, sizeof *rs);
    if (ws)
        lf->waivers = ws;
    if (rs)
        *reasons = rs;
    if (!ws || !rs)
        return ds__error_set(L->err, DS_ERR_NOMEM, "lint: out of memory");
    waiver *w = &lf->waivers[lf->nwaivers];
    memset(w, 0, sizeof *w);
    (*reasons)[lf->nwaivers] = NULL;
    lf->nwaivers++;
    w->line = line;
    w->target_line = waiver_target(line, eol, end);
    const char *colon = memchr(q, ':', (size_t)(eol - q));
    ds_status st = waiver_rules(L, w, q, colon ? colon : eol);
    if (st == DS_OK)
        st = waiver_reason(L, w, colon, eol, &(*reasons)[lf->nwaivers - 1]);
    return st;
}

/* Reads every "-- ds:lint-ignore" comment of the file. The reason is kept
 * with the finding it waives (see attach_reasons). */
static ds_status read_waivers(linter *L, const char *sql, size_t len,
                              char ***reasons) {
    int line = 1;
    const char *p = sql, *end = sql + len;
    size_t mark = strlen(WAIVER_MARK);
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        const char *m = p;
        while (m < eol && (*m == ' ' || *m == '\t'))
            m++;
        if (eol - m >= 2 && m[0] == '-' && m[1] == '-') {
            const char *q = m + 2;
            while (q < eol && (*q == ' ' || *q == '\t'))
                q++;
            if ((size_t)(eol - q) >= mark && !memcmp(q, WAIVER_MARK, mark)) {
                ds_status st = read_waiver(L, q + mark, eol, end, line, reasons);
                if (st != DS_OK)
                    return st;
            }
        }
        line++;
        p = eol < end ? eol + 1 : end;
    }
    return DS_OK;
}

/* ---- helpers over tokens ---------------------------------------------- */

static bool is_word(const tokens *ts, size_t i, const char *w) {
    return i < ts->n && ts->t[i].type == T_WORD && !strcmp(ts->t[i].w, w);
}

static bool is_punct(const tokens *ts, size_t i, char c) {
    return i < ts->n && ts->t[i].type == T_PUNCT && ts->t[i].w[0] == c;
}

/* The end of the statement starting at `i`: the next ';' outside
 * parentheses, or the end of the tokens. */
static size_t stmt_end(const tokens *ts, size_t i) {
    int depth = 0;
    for (; i < ts->n; i++) {
        if (is_punct(ts, i, '('))
            depth++;
        else if (is_punct(ts, i, ')') && depth > 0)
            depth--;
        else if (is_punct(ts, i, ';') && depth == 0)
            return i;
    }
    return ts->n;
}

static bool at_stmt_start(const tokens *ts, size_t i) {
    if (i == 0)
        return true;
    const token *p = &ts->t[i - 1];
    if (p->type == T_PUNCT && p->w[0] == ';')
        return true;
    return p->type == T_WORD &&
           (!strcmp(p->w, "then") || !strcmp(p->w, "else") ||
            !strcmp(p->w, "loop") || !strcmp(p->w, "begin") ||
            !strcmp(p->w, "exception"));
}

/* A (possibly schema-qualified) name at `*i`; the last part, lower-case,
 * into `out` ("%s" for a name known only at run time). */
static bool read_name(const tokens *ts, size_t *i, char out[64]) {
    if (*i >= ts->n || ts->t[*i].type != T_WORD)
        return false;
    snprintf(out, 64, "%s", ts->t[*i].w);
    (*i)++;
    while (is_punct(ts, *i, '.') && *i + 1 < ts->n &&
           ts->t[*i + 1].type == T_WORD) {
        snprintf(out, 64, "%s", ts->t[*i + 1].w);
        *i += 2;
    }
    return true;
}

static bool table_is_new(const lint_file *lf, const char *name) {
    if (name[0] == '%')
        return false;
    for (size_t k = 0; k < lf->ntables; k++)
        if (!strcmp(lf->tables[k], name))
            return true;
    return false;
}

static ds_status remember_table(linter *L, const char *name) {
    lint_file *lf = L->file;
    if (name[0] == '%' || table_is_new(lf, name))
        return DS_OK;
    char(*t)[64] = ds__reallocarray(lf->tables, lf->ntables + 1, sizeof *t);
    if (!t)
        return ds__error_set(L->err, DS_ERR_NOMEM, "lint: out of memory");
    lf->tables = t;
    snprintf(lf->tables[lf->ntables++], 64, "%s", name);
    return DS_OK;
}

static bool range_has(const tokens *ts, size_t from, size_t to, const char *w) {
    for (size_t k = from; k < to; k++)
        if (is_word(ts, k, w))
            return true;
    return false;
}

static bool range_has_pair(const tokens *ts, size_t from, size_t to,
                           const char *a, const char *b) {
    for (size_t k = from; k + 1 < to; k++)
        if (is_word(ts, k, a) && is_word(ts, k + 1, b))
            return true;
    return false;
}

static const char *table_desc(const char *name) {
    return name[0] == '%' ? "a table named at run time" : name;
}

/* ---- the rules over one statement ---------------------------------- */

static ds_status lint_text(linter *L, const char *s, size_t len, int line,
                           scope sc);

static ds_status need_lock_timeout(linter *L, const scope *sc, int line,
                                   const char *what, const char *table) {
    if (sc->in_function || L->file->lock_timeout_set)
        return DS_OK;
    return add_finding(L, R_LOCK_TIMEOUT, line,
                       "%s on %s with no lock_timeout set earlier in the file",
                       what, table_desc(table));
}

static const char *const volatile_fns[] = {
    "random", "clock_timestamp", "timeofday", "gen_random_uuid",
    "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4",
    "nextval", "statement_timestamp", "txid_current", NULL};

/* One ADD COLUMN action in [i, end). */
static ds_status lint_add_column(linter *L, const tokens *ts, size_t i,
                                 size_t end, int line, const char *table) {
    size_t k = i;
    if (is_word(ts, k, "if") && is_word(ts, k + 1, "not") &&
        is_word(ts, k + 2, "exists"))
        k += 3;
    char col[64] = "?";
    if (k < end && ts->t[k].type == T_WORD)
        snprintf(col, sizeof col, "%s", ts->t[k++].w);
    ds_status st = DS_OK;
    bool has_default = range_has(ts, k, end, "default");
    bool is_volatile = false;
    const char *why = NULL;
    for (size_t m = k; m < end && !is_volatile; m++) {
        if (ts->t[m].type != T_WORD)
            continue;
        const char *w = ts->t[m].w;
        if (!strcmp(w, "serial") || !strcmp(w, "bigserial") ||
            !strcmp(w, "smallserial") || !strcmp(w, "serial4") ||
            !strcmp(w, "serial8")) {
            is_volatile = true;
            why = w;
        } else if (!strcmp(w, "stored") && range_has(ts, k, m, "generated")) {
            is_volatile = true;
            why = "GENERATED ... STORED";
        } else if (has_default && is_punct(ts, m + 1, '(')) {
            for (const char *const *f = volatile_fns; *f; f++)
                if (!strcmp(w, *f)) {
                    is_volatile = true;
                    why = w;
                }
        }
    }
    if (is_volatile)
        st = add_finding(L, R_VOLATILE, line,
                         "ADD COLUMN %s on %s with %s rewrites the table", col,
                         table_desc(table), why);
    if (st == DS_OK && range_has_pair(ts, k, end, "not", "null") && !has_default)
        st = add_finding(L, R_ADD_NOT_NULL, line,
                         "ADD COLUMN %s NOT NULL on %s without a DEFAULT", col,
                         table_desc(table));
    if (st == DS_OK && (range_has_pair(ts, k, end, "primary", "key") ||
                        range_has(ts, k, end, "unique")))
        st = add_finding(L, R_BUILDS_INDEX, line,
                         "ADD COLUMN %s on %s builds a unique index under the "
                         "table lock",
                         col, table_desc(table));
    return st;
}

/* "CHECK (col IS NOT NULL)": the column, for the set-not-null recipe. */
static bool not_null_check_column(const tokens *ts, size_t i, size_t end,
                                  char out[64]) {
    for (size_t k = i; k + 5 < end + 1; k++)
        if (is_word(ts, k, "check") && is_punct(ts, k + 1, '(') &&
            k + 2 < end && ts->t[k + 2].type == T_WORD &&
            is_word(ts, k + 3, "is") && is_word(ts, k + 4, "not") &&
            is_word(ts, k + 5, "null") && is_punct(ts, k + 6, ')')) {
            snprintf(out, 64, "%s", ts->t[k + 2].w);
            return true;
        }
    return false;
}

/* ALTER TABLE ... ADD (a constraint or a column): action tokens a..b. */
static ds_status alter_add(linter *L, const tokens *ts, size_t a, size_t b,
                           int aline, const char *table) {
    ds_status st = DS_OK;
    size_t c = a + 1;
    bool constraint = false;
    char cname[64] = "";
    if (is_word(ts, c, "constraint")) {
        constraint = true;
        if (c + 1 < b && ts->t[c + 1].type == T_WORD)
            snprintf(cname, sizeof cname, "%s", ts->t[c + 1].w);
        c += 2;
    }
    if (is_word(ts, c, "check") || is_word(ts, c, "foreign")) {
        bool not_valid = range_has_pair(ts, c, b, "not", "valid");
        if (!not_valid)
            st = add_finding(L, R_NOT_VALID, aline,
                             "ADD %s%s%s on %s without NOT VALID",
                             is_word(ts, c, "check") ? "CHECK"
                                                     : "FOREIGN KEY",
                             cname[0] ? " " : "", cname,
                             table_desc(table));
        char col[64];
        if (st == DS_OK && cname[0] &&
            not_null_check_column(ts, c, b, col)) {
            not_null_check *nc = ds__reallocarray(
                L->file->checks, L->file->nchecks + 1, sizeof *nc);
            if (!nc)
                return ds__error_set(L->err, DS_ERR_NOMEM,
                                     "lint: out of memory");
            L->file->checks = nc;
            nc = &nc[L->file->nchecks++];
            memset(nc, 0, sizeof *nc);
            snprintf(nc->table, sizeof nc->table, "%s", table);
            snprintf(nc->constraint, sizeof nc->constraint, "%s", cname);
            snprintf(nc->column, sizeof nc->column, "%s", col);
            nc->validated = !not_valid;
        }
    } else if (is_word(ts, c, "unique") ||
               (is_word(ts, c, "primary") && is_word(ts, c + 1, "key")) ||
               is_word(ts, c, "exclude")) {
        if (!range_has_pair(ts, c, b, "using", "index") ||
            is_word(ts, c, "exclude"))
            st = add_finding(L, R_BUILDS_INDEX, aline,
                             "ADD %s on %s builds its index under an "
                             "ACCESS EXCLUSIVE lock",
                             ts->t[c].w, table_desc(table));
    } else if (!constraint) {
        if (is_word(ts, c, "column"))
            c++;
        st = lint_add_column(L, ts, c, b, aline, table);
    }
    return st;
}

/* ALTER TABLE ... ALTER [COLUMN] col TYPE / SET NOT NULL. */
static ds_status alter_column(linter *L, const tokens *ts, size_t a, size_t b,
                              int aline, const char *table) {
    ds_status st = DS_OK;
    size_t c = a + 1;
    if (is_word(ts, c, "column"))
        c++;
    char col[64] = "?";
    if (c < b && ts->t[c].type == T_WORD)
        snprintf(col, sizeof col, "%s", ts->t[c++].w);
    if (is_word(ts, c, "type") ||
        (is_word(ts, c, "set") && is_word(ts, c + 1, "data") &&
         is_word(ts, c + 2, "type"))) {
        st = add_finding(L, R_TYPE, aline,
                         "ALTER COLUMN %s TYPE on %s", col,
                         table_desc(table));
    } else if (is_word(ts, c, "set") && is_word(ts, c + 1, "not") &&
               is_word(ts, c + 2, "null")) {
        bool proven = false;
        for (size_t n = 0; n < L->file->nchecks; n++) {
            const not_null_check *nc = &L->file->checks[n];
            proven |= nc->validated && !strcmp(nc->table, table) &&
                      !strcmp(nc->column, col);
        }
        if (!proven)
            st = add_finding(L, R_SET_NOT_NULL, aline,
                             "SET NOT NULL on %s.%s without a "
                             "validated CHECK (%s IS NOT NULL)",
                             table_desc(table), col, col);
    }
    return st;
}

/* ALTER TABLE ... RENAME [COLUMN] / RENAME TO. */
static ds_status alter_rename(linter *L, const tokens *ts, size_t a, size_t b,
                              int aline, const char *table) {
    ds_status st = DS_OK;
    if (is_word(ts, a + 1, "to"))
        st = add_finding(L, R_RENAME_TABLE, aline,
                         "RENAME of table %s", table_desc(table));
    else if (!is_word(ts, a + 1, "constraint"))
        st = add_finding(L, R_RENAME_COLUMN, aline,
                         "RENAME COLUMN %s of %s",
                         is_word(ts, a + 1, "column") && a + 2 < b
                             ? ts->t[a + 2].w
                             : (a + 1 < b ? ts->t[a + 1].w : "?"),
                         table_desc(table));
    return st;
}

/* ALTER TABLE ... DROP [COLUMN] (not a constraint, default or NOT NULL). */
static ds_status alter_drop(linter *L, const tokens *ts, size_t a, size_t b,
                            int aline, const char *table) {
    ds_status st = DS_OK;
    size_t c = a + 1;
    if (!is_word(ts, c, "constraint") && !is_word(ts, c, "default") &&
        !is_word(ts, c, "not")) {
        if (is_word(ts, c, "column"))
            c++;
        if (is_word(ts, c, "if") && is_word(ts, c + 1, "exists"))
            c += 2;
        st = add_finding(L, R_DROP_COLUMN, aline,
                         "DROP COLUMN %s of %s",
                         c < b ? ts->t[c].w : "?", table_desc(table));
    }
    return st;
}

/* One action (tokens a..b) of ALTER TABLE on an existing table. */
static ds_status alter_action(linter *L, const tokens *ts, size_t a, size_t b,
                              int aline, const char *table) {
    const char *w0 = ts->t[a].w;
    if (!strcmp(w0, "add"))
        return alter_add(L, ts, a, b, aline, table);
    if (!strcmp(w0, "alter"))
        return alter_column(L, ts, a, b, aline, table);
    if (!strcmp(w0, "rename"))
        return alter_rename(L, ts, a, b, aline, table);
    if (!strcmp(w0, "drop"))
        return alter_drop(L, ts, a, b, aline, table);
    if (!strcmp(w0, "set") &&
        (is_word(ts, a + 1, "logged") || is_word(ts, a + 1, "unlogged") ||
         is_word(ts, a + 1, "tablespace")))
        return add_finding(L, R_REWRITE, aline, "SET %s on %s",
                           ts->t[a + 1].w, table_desc(table));
    return DS_OK;
}

static ds_status lint_alter_table(linter *L, const tokens *ts, size_t i,
                                  size_t end, const scope *sc) {
    int line = ts->t[i].line;
    size_t k = i + 2;
    if (is_word(ts, k, "if") && is_word(ts, k + 1, "exists"))
        k += 2;
    if (is_word(ts, k, "only"))
        k++;
    char table[64];
    if (!read_name(ts, &k, table))
        return DS_OK;
    bool is_new = table_is_new(L->file, table);
    ds_status st = DS_OK;
    if (!is_new)
        st = need_lock_timeout(L, sc, line, "ALTER TABLE", table);
    /* actions, separated by commas outside parentheses */
    while (st == DS_OK && k < end) {
        size_t a = k;
        int depth = 0;
        while (k < end && !(depth == 0 && is_punct(ts, k, ','))) {
            if (is_punct(ts, k, '('))
                depth++;
            else if (is_punct(ts, k, ')') && depth > 0)
                depth--;
            k++;
        }
        size_t b = k++;
        if (a >= b)
            continue;
        if (!strcmp(ts->t[a].w, "validate") &&
            is_word(ts, a + 1, "constraint") && a + 2 < b) {
            for (size_t c = 0; c < L->file->nchecks; c++)
                if (!strcmp(L->file->checks[c].table, table) &&
                    !strcmp(L->file->checks[c].constraint, ts->t[a + 2].w))
                    L->file->checks[c].validated = true;
            continue;
        }
        if (!is_new) /* findings name the statement's line */
            st = alter_action(L, ts, a, b, line, table);
    }
    return st;
}

static ds_status lint_create_index(linter *L, const tokens *ts, size_t i,
                                   size_t end, const scope *sc) {
    int line = ts->t[i].line;
    size_t on = i;
    while (on < end && !is_word(ts, on, "on"))
        on++;
    if (on >= end)
        return DS_OK;
    bool concurrently = range_has(ts, i, on, "concurrently");
    size_t k = on + 1;
    if (is_word(ts, k, "only"))
        k++;
    char table[64];
    if (!read_name(ts, &k, table))
        return DS_OK;
    if (concurrently) {
        if (sc->in_do || sc->in_function || !L->file->no_tx)
            return add_finding(L, R_CONC_IN_TX, line,
                               "CREATE INDEX CONCURRENTLY on %s %s",
                               table_desc(table),
                               sc->in_do ? "inside a DO block"
                               : sc->in_function
                                   ? "inside a function"
                                   : "in a file that runs in a transaction");
        return DS_OK;
    }
    if (table_is_new(L->file, table))
        return DS_OK;
    return add_finding(L, R_INDEX, line,
                       "CREATE INDEX on existing table %s without CONCURRENTLY",
                       table_desc(table));
}

static bool first_word_is_sql(const char *s, size_t n) {
    static const char *const starts[] = {"alter ", "create ", "drop ",
                                         "vacuum", "cluster", "lock ",
                                         "reindex", NULL};
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' ||
                     s[i] == '\r'))
        i++;
    for (const char *const *w = starts; *w; w++) {
        size_t wl = strlen(*w);
        if (n - i < wl)
            continue;
        bool eq = true;
        for (size_t k = 0; k < wl && eq; k++) {
            char c = s[i + k];
            c = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
            eq = c == (*w)[k] || ((*w)[k] == ' ' && (c == '\n' || c == '\t'));
        }
        if (eq)
            return true;
    }
    return false;
}


/* SQL held in a string is often built from pieces: adjacent literals
 * (which SQL joins), 'a' || expr || 'b'. Joins them from ts[*i] on, an
 * expression becoming the placeholder %s, and leaves *i on the last
 * token used. */
static ds_status join_literals(linter *L, tokens *ts, size_t *i, char **out,
                               size_t *len) {
    size_t cap = 256, n = 0;
    char *buf = ds__malloc(cap);
    if (!buf)
        return ds__error_set(L->err, DS_ERR_NOMEM, "lint: out of memory");
    size_t k = *i;
    for (;;) {
        const char *piece = " %s ";
        size_t plen = 4;
        if (ts->t[k].type == T_STRING) {
            piece = ts->t[k].p;
            plen = ts->t[k].n;
            ts->t[k].handled = true;
        }
        if (n + plen + 1 > cap) {
            while (n + plen + 1 > cap)
                cap *= 2;
            char *bigger = ds__realloc(buf, cap);
            if (!bigger) {
                ds__free(buf);
                return ds__error_set(L->err, DS_ERR_NOMEM,
                                     "lint: out of memory");
            }
            buf = bigger;
        }
        memcpy(buf + n, piece, plen);
        n += plen;
        size_t next = k + 1;
        if (next < ts->n && ts->t[next].type == T_STRING && !ts->t[next].dollar) {
            k = next;
            continue;
        }
        if (is_punct(ts, next, '|') && is_punct(ts, next + 1, '|') &&
            next + 2 < ts->n) {
            k = next + 2;
            if (ts->t[k].type != T_STRING) {
                /* one operand: a name, optionally called: f(...) */
                if (is_punct(ts, k + 1, '(')) {
                    int depth = 0;
                    size_t m = k + 1;
                    for (; m < ts->n; m++) {
                        if (is_punct(ts, m, '('))
                            depth++;
                        else if (is_punct(ts, m, ')') && --depth == 0)
                            break;
                    }
                    if (m >= ts->n)
                        m = ts->n - 1;
                    /* the placeholder stands for the whole call */
                    k = m;
                    if (n + 5 > cap) {
                        char *bigger = ds__realloc(buf, cap * 2);
                        if (!bigger) {
                            ds__free(buf);
                            return ds__error_set(L->err, DS_ERR_NOMEM,
                                                 "lint: out of memory");
                        }
                        buf = bigger;
                        cap *= 2;
                    }
                    memcpy(buf + n, " %s ", 4);
                    n += 4;
                    size_t after = k + 1;
                    if (is_punct(ts, after, '|') && is_punct(ts, after + 1, '|') &&
                        after + 2 < ts->n && ts->t[after + 2].type == T_STRING) {
                        k = after + 2;
                        continue;
                    }
                    break;
                }
            }
            continue;
        }
        break;
    }
    buf[n] = '\0';
    *i = k;
    *out = buf;
    *len = n;
    return DS_OK;
}

/* CREATE INDEX / TRIGGER / FUNCTION / PROCEDURE / TABLE. */
static ds_status lint_create(linter *L, tokens *ts, size_t i, size_t end,
                             const scope *sc) {
    const token *t = &ts->t[i];
    ds_status st = DS_OK;
    size_t k = i + 1;
    if (is_word(ts, k, "or") && is_word(ts, k + 1, "replace"))
        k += 2;
    if (is_word(ts, k, "unique"))
        k++;
    if (is_word(ts, k, "index")) {
        st = lint_create_index(L, ts, i, end, sc);
    } else if (is_word(ts, k, "trigger") ||
               (is_word(ts, k, "constraint") &&
                is_word(ts, k + 1, "trigger"))) {
        /* SHARE ROW EXCLUSIVE on the table: writers queue */
        size_t on = k;
        while (on < end && !is_word(ts, on, "on"))
            on++;
        on++;
        char table[64];
        if (on < end && read_name(ts, &on, table) &&
            !table_is_new(L->file, table))
            st = need_lock_timeout(L, sc, t->line, "CREATE TRIGGER",
                                   table);
    } else if (is_word(ts, k, "function") ||
               is_word(ts, k, "procedure")) {
        for (size_t b = k; b < end; b++)
            if (ts->t[b].type == T_STRING && ts->t[b].dollar &&
                !ts->t[b].handled) {
                ts->t[b].handled = true;
                scope inner = *sc;
                inner.in_function = true;
                inner.depth++;
                if (inner.depth < MAX_DEPTH)
                    st = lint_text(L, ts->t[b].p, ts->t[b].n,
                                   ts->t[b].line, inner);
                break;
            }
    } else {
        while (k < end && (is_word(ts, k, "temp") ||
                           is_word(ts, k, "temporary") ||
                           is_word(ts, k, "unlogged") ||
                           is_word(ts, k, "global") ||
                           is_word(ts, k, "local")))
            k++;
        if (is_word(ts, k, "table")) {
            k++;
            if (is_word(ts, k, "if") && is_word(ts, k + 1, "not") &&
                is_word(ts, k + 2, "exists"))
                k += 3;
            char name[64];
            if (read_name(ts, &k, name)) {
                if (is_word(ts, k, "partition") &&
                    is_word(ts, k + 1, "of")) {
                    size_t p = k + 2;
                    char parent[64];
                    if (read_name(ts, &p, parent) &&
                        !table_is_new(L->file, parent))
                        st = add_finding(
                            L, R_PARTITION_OF, t->line,
                            "CREATE TABLE %s PARTITION OF %s",
                            table_desc(name), table_desc(parent));
                }
                if (st == DS_OK)
                    st = remember_table(L, name);
            }
        }
    }
    return st;
}

/* DO: its body is linted as SQL of its own. */
static ds_status lint_do_block(linter *L, tokens *ts, size_t i, size_t end,
                               const scope *sc) {
    ds_status st = DS_OK;
    for (size_t b = i + 1; b < end; b++)
        if (ts->t[b].type == T_STRING) {
            ts->t[b].handled = true;
            scope inner = *sc;
            inner.in_do = true;
            inner.depth++;
            if (inner.depth < MAX_DEPTH)
                st = lint_text(L, ts->t[b].p, ts->t[b].n,
                               ts->t[b].line, inner);
            break;
        }
    return st;
}

/* REINDEX: CONCURRENTLY, and not inside a transaction. */
static ds_status lint_reindex(linter *L, tokens *ts, size_t i, size_t end,
                              const scope *sc) {
    const token *t = &ts->t[i];
    ds_status st = DS_OK;
    if (!range_has(ts, i + 1, end, "concurrently"))
        st = add_finding(L, R_REINDEX, t->line, "REINDEX");
    else if (sc->in_do || sc->in_function || !L->file->no_tx)
        st = add_finding(L, R_CONC_IN_TX, t->line,
                         "REINDEX CONCURRENTLY %s",
                         sc->in_do || sc->in_function
                             ? "inside a DO block or function"
                             : "in a file that runs in a transaction");
    return st;
}

/* DROP INDEX without CONCURRENTLY: brief ACCESS EXCLUSIVE on the index's
 * table, queued behind every query that uses it. */
static ds_status lint_drop_index(linter *L, tokens *ts, size_t i,
                                 const scope *sc) {
    const token *t = &ts->t[i];
    ds_status st = DS_OK;
    /* brief ACCESS EXCLUSIVE on the index's table, queued behind
     * every query that uses it */
    size_t k = i + 2;
    if (is_word(ts, k, "if") && is_word(ts, k + 1, "exists"))
        k += 2;
    char name[64] = "?";
    read_name(ts, &k, name);
    st = need_lock_timeout(L, sc, t->line, "DROP INDEX", name);
    return st;
}

/* LOCK TABLE in a mode that blocks reads or writes. */
static ds_status lint_lock_table(linter *L, tokens *ts, size_t i, size_t end,
                                 const scope *sc) {
    const token *t = &ts->t[i];
    ds_status st = DS_OK;
    size_t k = i + 1;
    if (is_word(ts, k, "table"))
        k++;
    if (is_word(ts, k, "only"))
        k++;
    char table[64] = "?";
    read_name(ts, &k, table);
    bool in_mode = range_has(ts, k, end, "mode");
    bool strong = !in_mode || range_has(ts, k, end, "exclusive");
    bool weak_excl = range_has_pair(ts, k, end, "row", "exclusive") ||
                     range_has_pair(ts, k, end, "update", "exclusive");
    if (strong && !weak_excl && !table_is_new(L->file, table))
        st = add_finding(L, R_LOCK_TABLE, t->line,
                         "LOCK TABLE %s in %s mode", table_desc(table),
                         range_has(ts, k, end, "access") || !in_mode
                             ? "ACCESS EXCLUSIVE"
                             : "EXCLUSIVE");
    if (st == DS_OK && !table_is_new(L->file, table))
        st = need_lock_timeout(L, sc, t->line, "LOCK TABLE", table);
    return st;
}

/* SET / RESET lock_timeout: whether DDL after it is bounded. */
static void note_lock_timeout(linter *L, const tokens *ts, size_t i,
                              size_t end) {
    const token *t = &ts->t[i];
    size_t k = i + 1;
    if (is_word(ts, k, "local") || is_word(ts, k, "session"))
        k++;
    if (is_word(ts, k, "lock_timeout")) {
        bool zero = !strcmp(t->w, "reset");
        for (size_t v = k + 1; v < end && !zero; v++)
            if ((ts->t[v].type == T_NUM || ts->t[v].type == T_STRING) &&
                ts->t[v].n >= 1 && ts->t[v].p[0] == '0' &&
                (ts->t[v].n == 1 || ts->t[v].p[1] < '0' ||
                 ts->t[v].p[1] > '9'))
                zero = ts->t[v].type == T_NUM
                           ? ts->t[v].n == 1
                           : strspn(ts->t[v].p, "0") >= ts->t[v].n ||
                                 ts->t[v].n == 1;
        L->file->lock_timeout_set = !zero;
    }
}

/* A string that holds SQL (EXECUTE '...'): linted as SQL of its own. */
static ds_status lint_string(linter *L, tokens *ts, size_t *i, scope sc) {
    token *t = &ts->t[*i];
    if (t->handled || !first_word_is_sql(t->p, t->n) || sc.depth >= MAX_DEPTH)
        return DS_OK;
    scope inner = sc;
    inner.depth++;
    char *sql = NULL;
    size_t len = 0;
    ds_status st = join_literals(L, ts, i, &sql, &len);
    if (st == DS_OK)
        st = lint_text(L, sql, len, t->line, inner);
    ds__free(sql);
    return st;
}

static ds_status lint_tokens(linter *L, tokens *ts, scope sc) {
    ds_status st = DS_OK;
    for (size_t i = 0; i < ts->n && st == DS_OK; i++) {
        token *t = &ts->t[i];
        if (t->type == T_STRING) {
            st = lint_string(L, ts, &i, sc);
            continue;
        }
        if (t->type != T_WORD)
            continue;
        bool start = at_stmt_start(ts, i);
        size_t end = stmt_end(ts, i);
        if (!strcmp(t->w, "alter") && is_word(ts, i + 1, "table")) {
            st = lint_alter_table(L, ts, i, end, &sc);
        } else if (!strcmp(t->w, "create")) {
            st = lint_create(L, ts, i, end, &sc);
        } else if (start && !strcmp(t->w, "do")) {
            st = lint_do_block(L, ts, i, end, &sc);
        } else if (start && !strcmp(t->w, "vacuum")) {
            if (range_has(ts, i + 1, end < i + 6 ? end : i + 6, "full"))
                st = add_finding(L, R_VACUUM_FULL, t->line, "VACUUM FULL");
        } else if (start && !strcmp(t->w, "reindex")) {
            st = lint_reindex(L, ts, i, end, &sc);
        } else if (!strcmp(t->w, "drop") && is_word(ts, i + 1, "index") &&
                   !is_word(ts, i + 2, "concurrently")) {
            st = lint_drop_index(L, ts, i, &sc);
        } else if (start && !strcmp(t->w, "cluster")) {
            st = add_finding(L, R_CLUSTER, t->line, "CLUSTER");
        } else if (start && !strcmp(t->w, "lock")) {
            st = lint_lock_table(L, ts, i, end, &sc);
        } else if (start && (!strcmp(t->w, "set") || !strcmp(t->w, "reset")) &&
                   !sc.in_function) {
            note_lock_timeout(L, ts, i, end);
        } else if (!strcmp(t->w, "set_config") && !sc.in_function &&
                   is_punct(ts, i + 1, '(') && i + 2 < ts->n &&
                   ts->t[i + 2].type == T_STRING && ts->t[i + 2].n == 12 &&
                   !memcmp(ts->t[i + 2].p, "lock_timeout", 12)) {
            L->file->lock_timeout_set = true;
        }
    }
    return st;
}

static ds_status lint_text(linter *L, const char *s, size_t len, int line,
                           scope sc) {
    tokens ts = {0};
    ds_status st = tokenize(s, len, line, &ts, L->err);
    if (st == DS_OK)
        st = lint_tokens(L, &ts, sc);
    ds__free(ts.t);
    return st;
}

typedef struct split_ctx {
    linter *L;
} split_ctx;

static ds_status lint_stmt(void *ud, const ds__sql_stmt *stmt, ds_error *err) {
    (void)err;
    split_ctx *c = ud;
    scope sc = {false, false, 0};
    return lint_text(c->L, stmt->text, stmt->len, stmt->line, sc);
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

/* Attaches the waivers' reasons to the findings they waived, and reports
 * waivers that waived nothing. */
static ds_status finish_file(linter *L, size_t first, char **reasons) {
    lint_file *lf = L->file;
    ds_migrate_lint_report *r = L->report;
    for (size_t k = first; k < r->count; k++) {
        ds_migrate_lint_finding *f = &r->items[k];
        if (!f->waived)
            continue;
        char key[80];
        snprintf(key, sizeof key, ",%s,", f->rule);
        for (size_t w = 0; w < lf->nwaivers; w++)
            if (lf->waivers[w].target_line == f->line &&
                strstr(lf->waivers[w].rules, key) && reasons[w] &&
                !f->waiver) {
                f->waiver = ds__strdup(reasons[w]);
                if (!f->waiver)
                    return ds__error_set(L->err, DS_ERR_NOMEM,
                                         "lint: out of memory");
            }
    }
    for (size_t w = 0; w < lf->nwaivers; w++)
        if (!lf->waivers[w].used) {
            /* ",a,b," -> "a,b" */
            const char *names = lf->waivers[w].rules + 1;
            int n = (int)strlen(names);
            ds_status st = add_finding(L, R_WAIVER_UNUSED, lf->waivers[w].line,
                                       "waiver for %.*s waives nothing on "
                                       "line %d",
                                       n > 0 ? n - 1 : 0, names,
                                       lf->waivers[w].target_line);
            if (st != DS_OK)
                return st;
        }
    return DS_OK;
}

ds_status ds__lint_sql(ds_migrate_lint_report *report, const char *file,
                       const char *sql, size_t len, ds_error *err) {
    lint_file lf = {0};
    lf.name = file;
    lf.no_tx = starts_no_tx(sql, len);
    linter L = {report, report->count, &lf, err};
    /* capacity: the items array grows in add_finding from its count */
    L.cap = report->count;
    char **reasons = NULL;
    size_t first = report->count;
    ds_status st = DS_OK;
    if (memchr(sql, '\0', len))
        st = ds__error_set(err, DS_ERR_MIGRATION, "%s: contains a NUL byte",
                           file);
    if (st == DS_OK)
        st = read_waivers(&L, sql, len, &reasons);
    split_ctx c = {&L};
    if (st == DS_OK)
        st = ds__sql_split(file, sql, len, lint_stmt, &c, err);
    if (st == DS_OK)
        st = finish_file(&L, first, reasons);
    if (st == DS_OK)
        report->files++;
    for (size_t k = 0; k < lf.nwaivers; k++)
        ds__free(reasons[k]);
    ds__free(reasons);
    ds__free(lf.waivers);
    ds__free(lf.tables);
    ds__free(lf.checks);
    return st;
}

/* ---- the public entry points -------------------------------------------- */

DS_EXPORT void ds_migrate_lint_report_free(ds_migrate_lint_report *report) {
    if (!report)
        return;
    for (size_t k = 0; k < report->count; k++) {
        ds__free((char *)report->items[k].file);
        ds__free((char *)report->items[k].message);
        ds__free((char *)report->items[k].waiver);
    }
    ds__free(report->items);
    ds__free(report);
}

static ds_status read_whole_file(const char *path, char **out, size_t *len,
                                 ds_error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return ds__error_set(err, DS_ERR_MIGRATION, "%s: cannot open: %s",
                             path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = ds__malloc(cap);
    ds_status st = buf ? DS_OK
                       : ds__error_set(err, DS_ERR_NOMEM, "lint: out of memory");
    while (st == DS_OK) {
        if (n + 1 >= cap) {
            if (cap >= (size_t)MAX_LINT_FILE_BYTES) {
                st = ds__error_set(err, DS_ERR_MIGRATION,
                                   "%s: larger than %ld bytes", path,
                                   MAX_LINT_FILE_BYTES);
                break;
            }
            char *bigger = ds__realloc(buf, cap * 2);
            if (!bigger) {
                st = ds__error_set(err, DS_ERR_NOMEM, "lint: out of memory");
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                st = ds__error_set(err, DS_ERR_MIGRATION, "%s: read error",
                                   path);
            break;
        }
    }
    fclose(f);
    if (st != DS_OK) {
        ds__free(buf);
        return st;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return DS_OK;
}

DS_EXPORT ds_status ds_migrate_lint(const ds_migrate_options *opts,
                                    const char *const *paths, size_t npaths,
                                    ds_migrate_lint_report **out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, paths || npaths == 0, "paths is NULL");
    ds_migrate_options o;
    ds_status checked = DS__IN(opts, &o, ds_migrate_options, err);
    if (checked != DS_OK)
        return checked;
    opts = &o;
    ds_migrate_lint_report *r = ds__calloc(1, sizeof *r);
    if (!r)
        return ds__error_set(err, DS_ERR_NOMEM, "lint: out of memory");
    ds_status st = DS_OK;
    if (npaths) {
        for (size_t k = 0; k < npaths && st == DS_OK; k++) {
            if (!paths[k]) {
                st = ds__error_set(err, DS_ERR_INVALID, "paths[%zu] is NULL",
                                   k);
                break;
            }
            char *data = NULL;
            size_t len = 0;
            st = read_whole_file(paths[k], &data, &len, err);
            if (st == DS_OK)
                st = ds__lint_sql(r, paths[k], data, len, err);
            ds__free(data);
        }
    } else {
        ds__migration_set *set = NULL;
        st = ds__migration_set_load(opts ? opts->dir : NULL, &set, err);
        for (size_t k = 0; st == DS_OK && k < set->count; k++)
            st = ds__lint_sql(r, set->files[k].up_file, set->files[k].up,
                              set->files[k].up_len, err);
        ds__migration_set_free(set);
    }
    if (st != DS_OK) {
        ds_migrate_lint_report_free(r);
        return st;
    }
    *out = r;
    return DS_OK;
}
