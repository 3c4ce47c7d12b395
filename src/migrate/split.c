/* Splits a migration file into statements, so that each runs on its own
 * and an error can name the line of the statement that failed. The rules
 * are PostgreSQL's lexical ones, as psql applies them to a script. */
#include <stdio.h>
#include <string.h>

#include "migrate/migrate_internal.h"

static bool is_ident_start(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           c >= 0x80;
}

static bool is_ident_char(unsigned char c) {
    return is_ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

static bool is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
           c == '\v';
}

typedef struct lexer {
    const char *file;
    const char *s;
    size_t len;
    size_t i;
    int line;
} lexer;

static int count_lines(const char *s, size_t from, size_t to) {
    int n = 0;
    for (size_t k = from; k < to; k++)
        n += s[k] == '\n';
    return n;
}

static ds_status unterminated(const lexer *lx, const char *what, int line,
                              ds_error *err) {
    return ds__error_set(err, DS_ERR_MIGRATION, "%s:%d: unterminated %s",
                         lx->file, line, what);
}

/* Skips a quoted run starting at lx->i (the opening quote). `backslash`:
 * an E'' string, where a backslash escapes the next character. A doubled
 * quote stays inside. */
static ds_status skip_quoted(lexer *lx, char quote, bool backslash,
                             const char *what, ds_error *err) {
    int start_line = lx->line;
    size_t k = lx->i + 1;
    for (;;) {
        if (k >= lx->len)
            return unterminated(lx, what, start_line, err);
        char c = lx->s[k];
        if (backslash && c == '\\' && k + 1 < lx->len) {
            k += 2;
            continue;
        }
        if (c == quote) {
            if (k + 1 < lx->len && lx->s[k + 1] == quote) {
                k += 2;
                continue;
            }
            k++;
            break;
        }
        k++;
    }
    lx->line += count_lines(lx->s, lx->i, k);
    lx->i = k;
    return DS_OK;
}

/* At a '$': the length of a dollar-quote delimiter ($$ or $tag$) starting
 * here, or 0 when this '$' starts none (e.g. a parameter $1). */
static size_t dollar_tag_len(const lexer *lx, size_t at) {
    size_t k = at + 1;
    if (k < lx->len && is_ident_start((unsigned char)lx->s[k])) {
        while (k < lx->len && is_ident_char((unsigned char)lx->s[k]) &&
               lx->s[k] != '$')
            k++;
    }
    if (k < lx->len && lx->s[k] == '$')
        return k - at + 1;
    return 0;
}

static ds_status skip_dollar_quoted(lexer *lx, size_t tag_len, ds_error *err) {
    const char *tag = lx->s + lx->i;
    for (size_t j = lx->i + tag_len; j + tag_len <= lx->len; j++) {
        if (lx->s[j] == '$' && memcmp(lx->s + j, tag, tag_len) == 0) {
            size_t end = j + tag_len;
            lx->line += count_lines(lx->s, lx->i, end);
            lx->i = end;
            return DS_OK;
        }
    }
    return unterminated(lx, "dollar-quoted string", lx->line, err);
}

/* Block comments nest in PostgreSQL. */
static ds_status skip_block_comment(lexer *lx, ds_error *err) {
    int start_line = lx->line;
    size_t k = lx->i + 2;
    int depth = 1;
    while (depth > 0) {
        if (k + 1 >= lx->len)
            return unterminated(lx, "/* comment", start_line, err);
        if (lx->s[k] == '/' && lx->s[k + 1] == '*') {
            depth++;
            k += 2;
        } else if (lx->s[k] == '*' && lx->s[k + 1] == '/') {
            depth--;
            k += 2;
        } else {
            k++;
        }
    }
    lx->line += count_lines(lx->s, lx->i, k);
    lx->i = k;
    return DS_OK;
}

static void lower_copy(char *dst, size_t cap, const char *src, size_t n) {
    size_t o = 0;
    for (size_t k = 0; k < n && o + 1 < cap; k++) {
        char c = src[k];
        dst[o++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    dst[o] = '\0';
}

static bool word_is(const char *w, size_t n, const char *kw) {
    size_t kl = strlen(kw);
    if (n != kl)
        return false;
    for (size_t k = 0; k < n; k++) {
        char c = w[k];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != kw[k])
            return false;
    }
    return true;
}

/* Per-statement state. */
typedef struct stmt_state {
    bool open;         /* a token has been seen */
    size_t start;
    int line;
    int paren;
    int begin_depth;   /* BEGIN ATOMIC ... END of a routine body */
    int words;         /* identifiers seen at paren depth 0 */
    char first[4];     /* initials of the first words, for CREATE [OR
                          REPLACE] FUNCTION|PROCEDURE */
    ds__sql_stmt out;
} stmt_state;

static void stmt_reset(stmt_state *st) { memset(st, 0, sizeof *st); }

static bool is_routine(const stmt_state *st) {
    const char *f = st->first;
    return f[0] == 'c' &&
           (f[1] == 'f' || f[1] == 'p' ||
            (f[1] == 'o' && f[2] == 'r' && (f[3] == 'f' || f[3] == 'p')));
}

static void on_word(stmt_state *st, const char *w, size_t n) {
    if (st->paren > 0)
        return;
    if (st->words == 0)
        lower_copy(st->out.word1, sizeof st->out.word1, w, n);
    else if (st->words == 1)
        lower_copy(st->out.word2, sizeof st->out.word2, w, n);
    if (st->words < 4) {
        static const char *const initials[] = {"create", "or", "replace",
                                               "function", "procedure"};
        for (size_t k = 0; k < sizeof initials / sizeof initials[0]; k++)
            if (word_is(w, n, initials[k]))
                st->first[st->words] = initials[k][0];
    }
    st->words++;
    if (!is_routine(st))
        return;
    if (word_is(w, n, "begin"))
        st->begin_depth++;
    else if (word_is(w, n, "case") && st->begin_depth > 0)
        st->begin_depth++;
    else if (word_is(w, n, "end") && st->begin_depth > 0)
        st->begin_depth--;
}

static ds_status emit(const lexer *lx, stmt_state *st, size_t end,
                      ds__sql_stmt_fn fn, void *ud, ds_error *err) {
    st->out.text = lx->s + st->start;
    st->out.len = end - st->start;
    st->out.line = st->line;
    ds_status rc = fn(ud, &st->out, err);
    stmt_reset(st);
    return rc;
}

ds_status ds__sql_split(const char *file, const char *sql, size_t len,
                        ds__sql_stmt_fn fn, void *ud, ds_error *err) {
    lexer lx = {file ? file : "sql", sql, len, 0, 1};
    stmt_state st;
    stmt_reset(&st);
    ds_status rc;
    while (lx.i < lx.len) {
        unsigned char c = (unsigned char)lx.s[lx.i];
        if (is_space(c)) {
            lx.line += c == '\n';
            lx.i++;
            continue;
        }
        if (c == '-' && lx.i + 1 < lx.len && lx.s[lx.i + 1] == '-') {
            while (lx.i < lx.len && lx.s[lx.i] != '\n')
                lx.i++;
            continue;
        }
        if (c == '/' && lx.i + 1 < lx.len && lx.s[lx.i + 1] == '*') {
            if ((rc = skip_block_comment(&lx, err)) != DS_OK)
                return rc;
            continue;
        }
        if (!st.open) {
            st.open = true;
            st.start = lx.i;
            st.line = lx.line;
        }
        if (c == ';' && st.paren == 0 && st.begin_depth == 0) {
            lx.i++;
            if ((rc = emit(&lx, &st, lx.i, fn, ud, err)) != DS_OK)
                return rc;
            continue;
        }
        if (c == '(') {
            st.paren++;
            lx.i++;
        } else if (c == ')') {
            if (st.paren > 0)
                st.paren--;
            lx.i++;
        } else if (c == '\'') {
            if ((rc = skip_quoted(&lx, '\'', false, "quoted string", err)) !=
                DS_OK)
                return rc;
        } else if (c == '"') {
            if ((rc = skip_quoted(&lx, '"', false, "quoted identifier",
                                  err)) != DS_OK)
                return rc;
        } else if (c == '$') {
            size_t tag = dollar_tag_len(&lx, lx.i);
            if (tag) {
                if ((rc = skip_dollar_quoted(&lx, tag, err)) != DS_OK)
                    return rc;
            } else {
                lx.i++;
                while (lx.i < lx.len && lx.s[lx.i] >= '0' && lx.s[lx.i] <= '9')
                    lx.i++;
            }
        } else if (is_ident_start(c)) {
            size_t w = lx.i;
            while (lx.i < lx.len && is_ident_char((unsigned char)lx.s[lx.i]))
                lx.i++;
            size_t n = lx.i - w;
            /* E'...' (backslash escapes); B'', X'', N'', U&'' are plain. */
            if (n == 1 && (lx.s[w] == 'E' || lx.s[w] == 'e') && lx.i < lx.len &&
                lx.s[lx.i] == '\'') {
                if ((rc = skip_quoted(&lx, '\'', true, "quoted string",
                                      err)) != DS_OK)
                    return rc;
                continue;
            }
            on_word(&st, lx.s + w, n);
        } else if (c >= '0' && c <= '9') {
            while (lx.i < lx.len &&
                   (is_ident_char((unsigned char)lx.s[lx.i]) ||
                    lx.s[lx.i] == '.'))
                lx.i++;
        } else {
            lx.i++;
        }
    }
    if (st.open) {
        size_t end = lx.len;
        while (end > st.start && is_space((unsigned char)lx.s[end - 1]))
            end--;
        return emit(&lx, &st, end, fn, ud, err);
    }
    return DS_OK;
}

int ds__sql_position_line(const ds__sql_stmt *stmt, long position) {
    int line = stmt->line;
    long chars = 0;
    for (size_t k = 0; k < stmt->len && chars < position - 1; k++) {
        unsigned char c = (unsigned char)stmt->text[k];
        if ((c & 0xC0) == 0x80)
            continue; /* a UTF-8 continuation byte: same character */
        chars++;
        line += c == '\n';
    }
    return line;
}
