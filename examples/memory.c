/*
 * memory: store facts about a user with embeddings, then find the ones
 * that matter for a question, by meaning and by words.
 *
 *   DATABASE_URL=postgresql://user:pass@host/db ./memory
 *
 * The database must be migrated (ds-migrate up). It works the same on
 * pgvector and on the portable fallback; the program says which it got.
 *
 * A real caller gets embeddings from a model. To stay self-contained this
 * one makes toy embeddings by feature hashing: each word adds +1 or -1 to a
 * few dimensions chosen by its hash, so texts sharing words point the same
 * way. Good enough to watch the ranking work; not a language model.
 */
#include <datastore/datastore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint32_t fnv1a(const char *s, size_t n, uint32_t seed) {
    uint32_t h = 2166136261u ^ seed;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static int is_stop_word(const char *w, size_t n) {
    static const char *const stop[] = {"the", "and", "does", "what", "user",
                                       "for", "with", "near", "every"};
    for (size_t i = 0; i < sizeof stop / sizeof stop[0]; i++)
        if (strlen(stop[i]) == n && memcmp(stop[i], w, n) == 0)
            return 1;
    return 0;
}

/* Feature hashing of lower-cased words of three letters or more, minus a
 * few stop words and a plural "s". */
static void toy_embed(const char *text, float *v, size_t dim) {
    memset(v, 0, dim * sizeof *v);
    v[0] = 0.01f; /* never the zero vector */
    const char *p = text;
    while (*p) {
        while (*p && !((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
            p++;
        char word[32];
        size_t n = 0;
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')) {
            if (n < sizeof word - 1)
                word[n++] = (char)(*p | 0x20);
            p++;
        }
        if (n > 3 && word[n - 1] == 's')
            n--;
        if (n < 3 || is_stop_word(word, n))
            continue;
        for (uint32_t k = 0; k < 4; k++) {
            uint32_t h = fnv1a(word, n, k);
            v[h % dim] += (h & 0x80000000u) ? 1.0f : -1.0f;
        }
    }
}

static void print_hits(const char *title, const ds_memory_facts *hits) {
    printf("%s\n", title);
    for (size_t i = 0; i < hits->count; i++) {
        const ds_memory_fact *f = hits->items[i];
        printf("  %zu. %-34s score %.4f (vector rank %d, text rank %d)\n",
               i + 1, f->content, f->score, f->vector_rank, f->text_rank);
    }
}

int main(void) {
    ds_error err = {0};
    ds_config *cfg = NULL;
    ds_pool *pool = NULL;
    ds_memory *mem = NULL;
    ds_sql_result *res = NULL;
    ds_memory_facts *hits = NULL;
    float *v = NULL;
    int64_t user_id = 0;
    int rc = 1;

    if (ds_config_from_env(&cfg, &err) != DS_OK ||
        ds_pool_open(cfg, &pool, &err) != DS_OK ||
        ds_memory_open(pool, cfg, &mem, &err) != DS_OK)
        goto fail;
    size_t dim = ds_memory_dim(mem);
    printf("memory store: %s backend, %zu dimensions\n",
           ds_memory_backend(mem) == DS_VECTOR_BACKEND_PGVECTOR ? "pgvector"
                                                                : "fallback",
           dim);
    v = calloc(dim, sizeof *v);
    if (!v) {
        fprintf(stderr, "memory: out of memory\n");
        goto cleanup;
    }

    /* A user to remember things about (the users repository would do
     * this; raw SQL keeps the example self-contained). */
    char email[96];
    snprintf(email, sizeof email, "memory-example-%ld-%ld@example.org",
             (long)getpid(), (long)time(NULL));
    ds_sql_param p[] = {ds_sql_param_text(email)};
    if (ds_sql_exec_pool(pool, "INSERT INTO users (email) VALUES ($1) RETURNING id",
                     p, 1, &res, &err) != DS_OK ||
        ds_sql_result_int64(res, 0, 0, &user_id, &err) != DS_OK)
        goto fail;

    static const struct {
        const char *kind, *content;
        double importance;
    } facts[] = {
        {"preference", "Drinks green tea every morning", 0.8},
        {"preference", "Dislikes coffee", 0.6},
        {"fact", "Lives in Lisbon near the river", 0.5},
        {"fact", "Has a dog called Pixel", 0.7},
        {"goal", "Training for a half marathon in spring", 0.9},
        {"preference", "Prefers short answers", 0.4},
    };
    for (size_t i = 0; i < sizeof facts / sizeof facts[0]; i++) {
        toy_embed(facts[i].content, v, dim);
        ds_memory_new_fact nf = {.size = sizeof(ds_memory_new_fact), .user_id = user_id,
                                 .kind = facts[i].kind,
                                 .content = facts[i].content,
                                 .importance = facts[i].importance,
                                 .embedding = v,
                                 .dim = dim};
        if (ds_memory_add(mem, &nf, NULL, &err) != DS_OK)
            goto fail;
    }

    /* Searches read from a replica when the pool has one; facts added a
     * moment ago are read back from the primary. */
    const char *question = "what tea does the user drink in the morning?";
    toy_embed(question, v, dim);
    ds_memory_search_options fresh = {.size = sizeof(ds_memory_search_options), .read_primary = true};
    if (ds_memory_search(mem, user_id, v, dim, 3, &fresh, &hits, &err) != DS_OK)
        goto fail;
    printf("\nq: %s\n", question);
    print_hits("semantic search:", hits);
    ds_memory_facts_free(hits);
    hits = NULL;

    ds_memory_search_options opts = {.size = sizeof(ds_memory_search_options), .kind = "preference", .touch = true,
                                  .read_primary = true};
    if (ds_memory_search_hybrid(mem, user_id, "coffee", v, dim, 3, &opts,
                                &hits, &err) != DS_OK)
        goto fail;
    print_hits("hybrid search, preferences only, text \"coffee\":", hits);
    rc = 0;
    goto cleanup;

fail:
    fprintf(stderr, "memory: %s: %s\n", ds_status_str(err.code), err.message);
cleanup:
    ds_memory_facts_free(hits);
    ds_sql_result_free(res);
    if (user_id) { /* deleting the user deletes its facts */
        ds_sql_param del[] = {ds_sql_param_int64(user_id)};
        if (ds_sql_exec_pool(pool, "DELETE FROM users WHERE id = $1", del, 1,
                         NULL, &err) != DS_OK) {
            fprintf(stderr, "memory: cleanup: %s\n", err.message);
            rc = 1;
        }
    }
    free(v);
    ds_memory_close(mem);
    ds_pool_close(pool);
    ds_config_free(cfg);
    return rc;
}
