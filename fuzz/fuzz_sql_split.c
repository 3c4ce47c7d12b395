/*
 * libFuzzer target for the SQL statement splitter of the migration runner
 * (`make fuzz`). The input is a migration file's text.
 *
 * Properties checked on every input:
 *  - statements lie inside the input, in order, without overlapping; each
 *    starts at a token (not white space, not a comment) and all but the
 *    last end with ';';
 *  - each statement's line is 1 + the newlines before it, and
 *    ds__sql_position_line() never points outside the statement's lines;
 *  - the first words are NUL-terminated lower-case copies;
 *  - a statement split again on its own is exactly one statement, the same;
 *  - a failure is DS_ERR_MIGRATION naming the file and a line within it.
 * Any violated property traps, which libFuzzer reports as a crash.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/migrate_internal.h"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            __builtin_trap();                                                  \
        }                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct walk {
    const char *sql;
    size_t len;
    size_t next;     /* where the next statement may start */
    size_t count;
    bool ended_open; /* the previous statement had no ';' */
    bool again;      /* splitting one statement on its own */
    ds__sql_stmt first;
} walk;

static int lines_before(const char *s, size_t to) {
    int n = 1;
    for (size_t k = 0; k < to; k++)
        n += s[k] == '\n';
    return n;
}

static void check_word(const char *w, size_t cap) {
    CHECK(memchr(w, '\0', cap) != NULL);
    for (const char *c = w; *c; c++)
        CHECK(!(*c >= 'A' && *c <= 'Z'));
}

static ds_status on_stmt(void *ud, const ds__sql_stmt *s, ds_error *err) {
    (void)err;
    walk *w = ud;
    if (w->again) {
        w->count++;
        if (w->count == 1)
            w->first = *s;
        return DS_OK;
    }
    CHECK(!w->ended_open); /* only the last may lack ';' */
    CHECK(s->text >= w->sql + w->next && s->len > 0);
    size_t at = (size_t)(s->text - w->sql);
    CHECK(at + s->len <= w->len);
    unsigned char c0 = (unsigned char)s->text[0];
    CHECK(!(c0 == ' ' || c0 == '\t' || c0 == '\n' || c0 == '\r' ||
            c0 == '\f' || c0 == '\v'));
    CHECK(!(s->len >= 2 && s->text[0] == '-' && s->text[1] == '-'));
    CHECK(!(s->len >= 2 && s->text[0] == '/' && s->text[1] == '*'));
    CHECK(s->line == lines_before(w->sql, at));
    check_word(s->word1, sizeof s->word1);
    check_word(s->word2, sizeof s->word2);
    CHECK(s->word1[0] || !s->word2[0]);
    w->ended_open = s->text[s->len - 1] != ';';

    int last_line = s->line;
    for (size_t k = 0; k < s->len; k++)
        last_line += s->text[k] == '\n';
    for (long pos = -1; pos <= (long)s->len + 1; pos += 1 + (long)s->len / 7) {
        int line = ds__sql_position_line(s, pos);
        CHECK(line >= s->line && line <= last_line);
    }

    /* On its own, the statement is one statement: itself. */
    walk again = {s->text, s->len, 0, 0, false, true, {0}};
    ds_error e;
    CHECK(ds__sql_split("again.sql", s->text, s->len, on_stmt, &again, &e) ==
          DS_OK);
    CHECK(again.count == 1);
    CHECK(again.first.text == s->text && again.first.len == s->len);
    CHECK(again.first.line == 1);
    CHECK(strcmp(again.first.word1, s->word1) == 0);
    CHECK(strcmp(again.first.word2, s->word2) == 0);

    w->next = at + s->len;
    w->count++;
    return DS_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A copy of exactly `size` bytes, so ASan sees any read past the end. */
    char *sql = malloc(size ? size : 1);
    CHECK(sql);
    memcpy(sql, data, size);
    walk w = {sql, size, 0, 0, false, false, {0}};
    ds_error err;
    memset(&err, 0, sizeof err);
    ds_status st = ds__sql_split("fuzz.sql", sql, size, on_stmt, &w, &err);
    if (st != DS_OK) {
        CHECK(st == DS_ERR_MIGRATION && err.code == st);
        CHECK(strncmp(err.message, "fuzz.sql:", 9) == 0);
        int line = atoi(err.message + 9);
        CHECK(line >= 1 && line <= lines_before(sql, size));
        CHECK(strstr(err.message, ": unterminated "));
    }
    free(sql);
    return 0;
}
