/* The token encryptor: key ring, envelope, every failure mode, rotation. */
#define _GNU_SOURCE /* memmem */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crypto/crypto_internal.h"
#include "test_util.h"

/* (DT_K1..DT_K3: test_util.h) k1's id with k2's key: the wrong key under a known id. */
#define K1_WRONG "k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="

static const ds_crypto_context place = {sizeof(ds_crypto_context), "service_connections", "access_token",
                                        42, "google/1234"};

static uint8_t *seal(ds_crypto *c, const ds_crypto_context *ctx,
                     const char *text, size_t *len) {
    uint8_t *env;
    ds_error err = {0};
    ds_status st = ds_crypto_encrypt(c, ctx, text, strlen(text), &env, len, &err);
    ck_assert_ds_ok(st, err);
    return env;
}

/* Asserts that `env` does not open for `ctx` with `c`: DS_ERR_CRYPTO, out
 * NULL, and the one indistinct message. */
static void assert_no_open(ds_crypto *c, const ds_crypto_context *ctx,
                           const uint8_t *env, size_t len) {
    ds_crypto_secret *out = (ds_crypto_secret *)1;
    ds_error err = {0};
    ds_status st = ds_crypto_decrypt(c, ctx, env, len, &out, &err);
    ck_assert_ds_status(st, DS_ERR_CRYPTO, err);
    ck_assert_ptr_null(out);
    ck_assert_str_eq(err.message, "ds_crypto_decrypt: the envelope does not "
                                  "open with this key ring for this place");
}

static void assert_opens_to(ds_crypto *c, const ds_crypto_context *ctx,
                            const uint8_t *env, size_t len, const char *want) {
    ds_crypto_secret *out;
    ds_error err = {0};
    ds_status st = ds_crypto_decrypt(c, ctx, env, len, &out, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(ds_crypto_secret_len(out), strlen(want));
    ck_assert_str_eq(ds_crypto_secret_data(out), want);
    ds_crypto_secret_free(out);
}

/* ---- round trips ------------------------------------------------------- */

START_TEST(test_crypto_round_trip_lengths) {
    ds_crypto *c = dt_crypto_ring(DT_K1);
    ck_assert_str_eq(ds_crypto_active_key_id(c), "k1");
    static const size_t lens[] = {0, 1, 15, 16, 17, 200, 4096, 70000};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t n = lens[i];
        uint8_t *plain = malloc(n + 1);
        randombytes_buf(plain, n);
        uint8_t *env;
        size_t env_len;
        ds_error err = {0};
        ds_status st = ds_crypto_encrypt(c, &place, plain, n, &env, &env_len, &err);
        ck_assert_ds_ok(st, err);
        ck_assert_uint_eq(env_len, DS_CRYPTO_ENVELOPE_OVERHEAD(2) + n);
        ck_assert_uint_eq(env[0], 1);
        ck_assert_uint_eq(env[1], 2);
        ck_assert_int_eq(memcmp(env + 2, "k1", 2), 0);
        /* the plaintext does not appear in the envelope */
        if (n >= 16)
            ck_assert_ptr_null(memmem(env, env_len, plain, 16));
        ds_crypto_secret *out;
        st = ds_crypto_decrypt(c, &place, env, env_len, &out, &err);
        ck_assert_ds_ok(st, err);
        ck_assert_uint_eq(ds_crypto_secret_len(out), n);
        ck_assert_int_eq(memcmp(ds_crypto_secret_data(out), plain, n), 0);
        ck_assert_int_eq(ds_crypto_secret_data(out)[n], '\0');
        ds_crypto_secret_free(out);
        ds_free(env);
        free(plain);
    }
    ds_crypto_close(c);
}
END_TEST

START_TEST(test_crypto_round_trip_text_token) {
    ds_crypto *c = dt_crypto_ring(DT_K1 "," DT_K2);
    const char *token = "ya29.a0AfH6SMBx-example-oauth-access-token_0123456789";
    size_t len;
    uint8_t *env = seal(c, &place, token, &len);
    assert_opens_to(c, &place, env, len, token);
    /* a NULL scope is a place of its own */
    ds_crypto_context no_scope = place;
    no_scope.scope = NULL;
    size_t len2;
    uint8_t *env2 = seal(c, &no_scope, token, &len2);
    assert_opens_to(c, &no_scope, env2, len2, token);
    ds_free(env);
    ds_free(env2);
    ds_crypto_close(c);
}
END_TEST

START_TEST(test_crypto_nonce_is_fresh_each_time) {
    ds_crypto *c = dt_crypto_ring(DT_K1);
    size_t l1, l2;
    uint8_t *a = seal(c, &place, "same token", &l1);
    uint8_t *b = seal(c, &place, "same token", &l2);
    ck_assert_uint_eq(l1, l2);
    ck_assert_int_ne(memcmp(a, b, l1), 0);
    /* the nonces differ (offset 4: after version, length and "k1") */
    ck_assert_int_ne(memcmp(a + 4, b + 4, 24), 0);
    ds_free(a);
    ds_free(b);
    ds_crypto_close(c);
}
END_TEST

START_TEST(test_crypto_open_from_config) {
    ds_config *cfg;
    ds_error err = {0};
    ds_status st = ds_config_new(&cfg, &err);
    ck_assert_ds_ok(st, err);
    ds_crypto *c = (ds_crypto *)1;
    st = ds_crypto_open(cfg, &c, &err);
    ck_assert_ds_status(st, DS_ERR_CONFIG, err);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(err.message, "DS_TOKEN_KEYS"));
    st = ds_config_set(cfg, "DS_TOKEN_KEYS", DT_K2 "," DT_K1, &err);
    ck_assert_ds_ok(st, err);
    st = ds_crypto_open(cfg, &c, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(ds_crypto_active_key_id(c), "k2");
    ck_assert(ds_crypto_has_key(c, "k1"));
    ck_assert(ds_crypto_has_key(c, "k2"));
    ck_assert(!ds_crypto_has_key(c, "k3"));
    ck_assert(!ds_crypto_has_key(c, NULL));
    ck_assert_uint_eq(ds__crypto_key_count(c), 2);
    ds_crypto_close(c);
    ds_config_free(cfg);
}
END_TEST

START_TEST(test_crypto_open_rejects_bad_rings_without_echoing_keys) {
    static const char *const bad[] = {
        "",
        "k1",
        ":AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==", /* 31 bytes */
        "k1:not-base64!!",
        "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
        "k 1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ds_crypto *c = (ds_crypto *)1;
        ds_error err = {0};
        ds_status st = ds_crypto_open_keys(bad[i], &c, &err);
        ck_assert_msg(st == DS_ERR_CONFIG, "spec %zu: %s", i, ds_status_str(st));
        ck_assert_ptr_null(c);
        ck_assert_ptr_null(strstr(err.message, "AAECAwQF"));
        ck_assert_ptr_null(strstr(err.message, "ICEiIyQl"));
    }
}
END_TEST

START_TEST(test_crypto_any_ring_key_decrypts) {
    ds_crypto *old = dt_crypto_ring(DT_K1);
    ds_crypto *rotated = dt_crypto_ring(DT_K2 "," DT_K1);
    size_t l1, l2;
    uint8_t *under_k1 = seal(old, &place, "token one", &l1);
    uint8_t *under_k2 = seal(rotated, &place, "token two", &l2);
    char kid[DS_KID_MAX + 1];
    ds_error err = {0};
    ck_assert_ds_ok(ds_crypto_envelope_key_id(under_k1, l1, kid, sizeof kid, &err), err);
    ck_assert_str_eq(kid, "k1");
    ck_assert_ds_ok(ds_crypto_envelope_key_id(under_k2, l2, kid, sizeof kid, &err), err);
    ck_assert_str_eq(kid, "k2");
    assert_opens_to(rotated, &place, under_k1, l1, "token one");
    assert_opens_to(rotated, &place, under_k2, l2, "token two");
    /* the old ring does not know k2 */
    assert_no_open(old, &place, under_k2, l2);
    ds_free(under_k1);
    ds_free(under_k2);
    ds_crypto_close(old);
    ds_crypto_close(rotated);
}
END_TEST

/* ---- failures ------------------------------------------------------------ */

/* An envelope sealed with the ring `sealer` does not open with `opener`. */
static void assert_ring_cannot_open(const char *sealer, const char *opener) {
    ds_crypto *a = dt_crypto_ring(sealer);
    ds_crypto *b = dt_crypto_ring(opener);
    size_t len;
    uint8_t *env = seal(a, &place, "secret token", &len);
    assert_no_open(b, &place, env, len);
    ds_free(env);
    ds_crypto_close(a);
    ds_crypto_close(b);
}

START_TEST(test_crypto_wrong_key_fails) {
    assert_ring_cannot_open(DT_K1, K1_WRONG);
}
END_TEST

START_TEST(test_crypto_unknown_key_id_fails) {
    assert_ring_cannot_open(DT_K3, DT_K1 "," DT_K2);
}
END_TEST

START_TEST(test_crypto_every_byte_tampered_fails) {
    ds_crypto *c = dt_crypto_ring(DT_K1);
    size_t len;
    uint8_t *env = seal(c, &place, "a 200-byte-ish token would do; this one is shorter", &len);
    static const uint8_t flips[] = {0x01, 0x80, 0xff};
    for (size_t i = 0; i < len; i++)
        for (size_t f = 0; f < sizeof flips; f++) {
            env[i] ^= flips[f];
            assert_no_open(c, &place, env, len);
            env[i] ^= flips[f];
        }
    /* and the untouched envelope still opens */
    assert_opens_to(c, &place, env, len,
                    "a 200-byte-ish token would do; this one is shorter");
    ds_free(env);
    ds_crypto_close(c);
}
END_TEST

START_TEST(test_crypto_truncated_extended_and_empty_fail) {
    ds_crypto *c = dt_crypto_ring(DT_K1);
    size_t len;
    uint8_t *env = seal(c, &place, "token", &len);
    for (size_t n = 0; n < len; n++)
        assert_no_open(c, &place, env, n);
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, env, len);
    longer[len] = 0;
    assert_no_open(c, &place, longer, len + 1);
    assert_no_open(c, &place, NULL, 0);
    assert_no_open(c, &place, (const uint8_t *)"", 0);
    char kid[8];
    ds_error err = {0};
    ck_assert_int_eq(ds_crypto_envelope_key_id(env, 10, kid, sizeof kid, &err),
                     DS_ERR_CRYPTO);
    ck_assert_int_eq(ds_crypto_envelope_key_id(NULL, 0, kid, sizeof kid, &err),
                     DS_ERR_CRYPTO);
    free(longer);
    ds_free(env);
    ds_crypto_close(c);
}
END_TEST

START_TEST(test_crypto_wrong_place_fails) {
    ds_crypto *c = dt_crypto_ring(DT_K1);
    size_t len;
    uint8_t *env = seal(c, &place, "token", &len);
    ds_crypto_context other = DS_CRYPTO_CONTEXT_INIT;
    other = place; other.table = "service_connection";
    assert_no_open(c, &other, env, len);
    other = place; other.field = "refresh_token";
    assert_no_open(c, &other, env, len);
    other = place; other.owner_id = 43;
    assert_no_open(c, &other, env, len);
    other = place; other.owner_id = -42;
    assert_no_open(c, &other, env, len);
    other = place; other.scope = "google/12345";
    assert_no_open(c, &other, env, len);
    other = place; other.scope = NULL;
    assert_no_open(c, &other, env, len);
    ds_free(env);

    /* NULL and "" scopes are different places */
    ds_crypto_context empty_scope = place;
    empty_scope.scope = "";
    env = seal(c, &empty_scope, "token", &len);
    other = place; other.scope = NULL;
    assert_no_open(c, &other, env, len);
    assert_opens_to(c, &empty_scope, env, len, "token");
    ds_free(env);

    /* no concatenation is ambiguous: ("ab","c") is not ("a","bc") */
    ds_crypto_context ab_c = {sizeof(ds_crypto_context), "ab", "c", 1, "x"}, a_bc = {sizeof(ds_crypto_context), "a", "bc", 1, "x"};
    env = seal(c, &ab_c, "token", &len);
    assert_no_open(c, &a_bc, env, len);
    ds_crypto_context c_s = {sizeof(ds_crypto_context), "t", "f", 1, "sx"}, cs_ = {sizeof(ds_crypto_context), "t", "fs", 1, "x"};
    ds_free(env);
    env = seal(c, &c_s, "token", &len);
    assert_no_open(c, &cs_, env, len);
    ds_free(env);
    ds_crypto_close(c);
}
END_TEST

START_TEST(test_crypto_header_is_authenticated) {
    /* Re-labelling an envelope with another key id of the same ring (whose
     * key is identical here) must fail: the header is in the AD. */
    ds_crypto *c = dt_crypto_ring("a1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,"
                        "a2:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    size_t len;
    uint8_t *env = seal(c, &place, "token", &len);
    ck_assert_int_eq(env[3], '1');
    env[3] = '2';
    assert_no_open(c, &place, env, len);
    env[3] = '1';
    assert_opens_to(c, &place, env, len, "token");
    ds_free(env);
    ds_crypto_close(c);
}
END_TEST

/* ---- key memory ---------------------------------------------------------- */

static void on_fault(int sig) {
    (void)sig;
    _exit(77);
}

START_TEST(test_crypto_keys_unreadable_when_idle) {
    ds_crypto *c = dt_crypto_ring(DT_K1);
    ck_assert(!ds__crypto_keys_readable(c));
    size_t len;
    uint8_t *env = seal(c, &place, "token", &len);
    ck_assert(ds__crypto_keys_readable(c)); /* hot: left readable */
    for (int i = 0; i < 40 && ds__crypto_keys_readable(c); i++)
        usleep(100 * 1000);
    ck_assert(!ds__crypto_keys_readable(c));
    /* Reading the key memory now faults: prove it in a child. */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* our own handler, ahead of any sanitizer's */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fault;
        sigaction(SIGSEGV, &sa, NULL);
        sigaction(SIGBUS, &sa, NULL);
        volatile unsigned char b = ds__crypto_key_memory(c)[0];
        (void)b;
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 77,
                  "reading locked key memory did not fault");
    /* and the ring unlocks again on use */
    assert_opens_to(c, &place, env, len, "token");
    ds_free(env);
    ds_crypto_close(c);
}
END_TEST

typedef struct {
    ds_crypto *c;
    int iterations;
    int failures;
} worker_arg;

static void *worker_main(void *p) {
    worker_arg *a = p;
    char text[64];
    for (int i = 0; i < a->iterations; i++) {
        snprintf(text, sizeof text, "token-%p-%d", (void *)a, i);
        ds_crypto_context ctx = place;
        ctx.owner_id = i;
        uint8_t *env;
        size_t len;
        ds_crypto_secret *out;
        if (ds_crypto_encrypt(a->c, &ctx, text, strlen(text), &env, &len, NULL) != DS_OK) {
            a->failures++;
            continue;
        }
        if (ds_crypto_decrypt(a->c, &ctx, env, len, &out, NULL) != DS_OK ||
            strcmp(ds_crypto_secret_data(out), text) != 0)
            a->failures++;
        ds_crypto_secret_free(out);
        ds_free(env);
        if (i % 500 == 0)
            usleep(1000);
    }
    return NULL;
}

START_TEST(test_crypto_shared_between_threads) {
    ds_crypto *c = dt_crypto_ring(DT_K2 "," DT_K1);
    pthread_t t[8];
    worker_arg args[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (worker_arg){c, 3000, 0};
        pthread_create(&t[i], NULL, worker_main, &args[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(args[i].failures, 0);
    }
    ds_crypto_close(c);
}
END_TEST

/* ---- helpers -------------------------------------------------------------- */

START_TEST(test_crypto_generate_key_makes_a_ring_entry) {
    ds_crypto_secret *e1, *e2;
    ds_error err = {0};
    ck_assert_ds_ok(ds_crypto_generate_key("2025-06.a", &e1, &err), err);
    ck_assert_ds_ok(ds_crypto_generate_key("old_1", &e2, &err), err);
    ck_assert_int_eq(strncmp(ds_crypto_secret_data(e1), "2025-06.a:", 10), 0);
    ck_assert_uint_eq(ds_crypto_secret_len(e1), 10 + 44);
    char spec[256];
    snprintf(spec, sizeof spec, "%s,%s", ds_crypto_secret_data(e1), ds_crypto_secret_data(e2));
    ds_crypto *c = dt_crypto_ring(spec);
    sodium_memzero(spec, sizeof spec);
    ck_assert_str_eq(ds_crypto_active_key_id(c), "2025-06.a");
    size_t len;
    uint8_t *env = seal(c, &place, "t", &len);
    assert_opens_to(c, &place, env, len, "t");
    ds_free(env);
    ds_crypto_close(c);
    ds_crypto_secret_free(e1);
    ds_crypto_secret_free(e2);
    ds_crypto_secret *e = (ds_crypto_secret *)1;
    ck_assert_int_eq(ds_crypto_generate_key("", &e, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(e);
    ck_assert_int_eq(ds_crypto_generate_key("has:colon", &e, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_generate_key("x23456789012345678901234567890123", &e, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_generate_key(NULL, &e, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_generate_key("k", NULL, &err), DS_ERR_INVALID);
}
END_TEST

START_TEST(test_crypto_scope_service_format) {
    char buf[64];
    ds_error err = {0};
    ck_assert_ds_ok(ds_crypto_scope_service("google", "1234", buf, sizeof buf, &err), err);
    ck_assert_str_eq(buf, "google/1234");
    ck_assert_int_eq(ds_crypto_scope_service("goo/gle", "1", buf, sizeof buf, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_scope_service("", "1", buf, sizeof buf, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_scope_service("g", "", buf, sizeof buf, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_scope_service("google", "1234", buf, 11, &err),
                     DS_ERR_INVALID);
    ck_assert_ds_ok(ds_crypto_scope_service("google", "1234", buf, 12, &err), err);
    ck_assert_str_eq(buf, "google/1234");
    ck_assert_int_eq(ds_crypto_scope_service("g", "1", NULL, 8, &err), DS_ERR_INVALID);
}
END_TEST

START_TEST(test_crypto_out_of_memory_is_an_error) {
    ds_crypto *c = dt_crypto_ring(DT_K1);
    size_t len;
    uint8_t *good = seal(c, &place, "token", &len);
    ds_error err = {0};
    for (long n = 1; n <= 3; n++) {
        uint8_t *env = (uint8_t *)1;
        size_t env_len = 1;
        ds__test_fail_alloc_after(n);
        ds_status st = ds_crypto_encrypt(c, &place, "token", 5, &env, &env_len, &err);
        ds__test_fail_alloc_after(0);
        if (st == DS_OK) {
            ds_free(env);
            break;
        }
        ck_assert_ds_status(st, DS_ERR_NOMEM, err);
        ck_assert_ptr_null(env);
        ck_assert_uint_eq(env_len, 0);
    }
    ds_crypto_secret *out = (ds_crypto_secret *)1;
    ds__test_fail_alloc_after(1);
    ds_status st = ds_crypto_decrypt(c, &place, good, len, &out, &err);
    ds__test_fail_alloc_after(0);
    ck_assert_ds_status(st, DS_ERR_NOMEM, err);
    ck_assert_ptr_null(out);
    /* a long place needs a heap buffer for its associated data */
    char big[2000];
    memset(big, 's', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ds_crypto_context far = place;
    far.scope = big;
    ds__test_fail_alloc_after(2);
    uint8_t *env = NULL;
    size_t env_len;
    st = ds_crypto_encrypt(c, &far, "token", 5, &env, &env_len, &err);
    ds__test_fail_alloc_after(0);
    ck_assert_ds_status(st, DS_ERR_NOMEM, err);
    env = seal(c, &far, "token", &env_len);
    assert_opens_to(c, &far, env, env_len, "token");
    ds_free(env);
    ds_free(good);
    ds_crypto_close(c);
}
END_TEST

START_TEST(test_crypto_errors_null_arguments) {
    ds_crypto *c = dt_crypto_ring(DT_K1);
    ds_error err = {0};
    ds_crypto *o;
    ck_assert_int_eq(ds_crypto_open(NULL, &o, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_open_keys(NULL, &o, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_open_keys(DT_K1, NULL, &err), DS_ERR_INVALID);
    uint8_t *env;
    size_t len;
    ck_assert_int_eq(ds_crypto_encrypt(NULL, &place, "x", 1, &env, &len, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_encrypt(c, NULL, "x", 1, &env, &len, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_encrypt(c, &place, NULL, 1, &env, &len, &err), DS_ERR_INVALID);
    len = 9;
    ck_assert_int_eq(ds_crypto_encrypt(c, &place, "x", 1, NULL, &len, &err), DS_ERR_INVALID);
    ck_assert_uint_eq(len, 0);
    env = (uint8_t *)1;
    ck_assert_int_eq(ds_crypto_encrypt(c, &place, "x", 1, &env, NULL, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(env);
    ck_assert_int_eq(ds_crypto_encrypt(c, &place, "x", DS_CRYPTO_MAX_PLAINTEXT + 1, &env,
                                       &len, &err), DS_ERR_INVALID);
    ds_crypto_context bad = place;
    bad.table = NULL;
    ck_assert_int_eq(ds_crypto_encrypt(c, &bad, "x", 1, &env, &len, &err), DS_ERR_INVALID);
    bad = place;
    bad.field = "";
    ck_assert_int_eq(ds_crypto_encrypt(c, &bad, "x", 1, &env, &len, &err), DS_ERR_INVALID);
    ds_crypto_secret *s;
    ck_assert_int_eq(ds_crypto_decrypt(NULL, &place, (const uint8_t *)"x", 1, &s, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_decrypt(c, NULL, (const uint8_t *)"x", 1, &s, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_decrypt(c, &place, NULL, 5, &s, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_decrypt(c, &place, (const uint8_t *)"x", 1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_decrypt(c, &bad, (const uint8_t *)"x", 1, &s, &err), DS_ERR_INVALID);
    char kid[4];
    ck_assert_int_eq(ds_crypto_envelope_key_id((const uint8_t *)"x", 1, NULL, 4, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_envelope_key_id((const uint8_t *)"x", 1, kid, 0, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_crypto_envelope_key_id(NULL, 3, kid, sizeof kid, &err), DS_ERR_INVALID);
    size_t elen;
    ds_crypto *c3 = dt_crypto_ring(DT_K3);
    uint8_t *e = seal(c3, &place, "x", &elen); /* "k3" needs 3 bytes */
    ds_crypto_close(c3);
    ck_assert_int_eq(ds_crypto_envelope_key_id(e, elen, kid, 2, &err), DS_ERR_INVALID);
    ck_assert_ds_ok(ds_crypto_envelope_key_id(e, elen, kid, 3, &err), err);
    ds_free(e);
    ck_assert_int_eq(ds_crypto_rotate(NULL, NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(ds_crypto_active_key_id(NULL));
    ck_assert_ptr_null(ds_crypto_secret_data(NULL));
    ck_assert_uint_eq(ds_crypto_secret_len(NULL), 0);
    ds_crypto_secret_free(NULL);
    ds_crypto_close(NULL);
    ds_crypto_close(c);
}
END_TEST

/* ---- rotation against the database --------------------------------------- */

/* One service connection as the repository writes it: both tokens sealed
 * for their place (see crypto.h), key_id = the ring's active key. */
typedef struct conn_row {
    int64_t id, user_id;
    char provider[16], account[32];
    char access[96], refresh[96];
    bool has_refresh;
} conn_row;

static void scope_of(const conn_row *r, char *buf, size_t n) {
    ds_error err = {0};
    ds_status st = ds_crypto_scope_service(r->provider, r->account, buf, n, &err);
    ck_assert_ds_ok(st, err);
}

/* The places of a row's two tokens; they point into `scope`. */
typedef struct row_places {
    char scope[64];
    ds_crypto_context access, refresh;
} row_places;

static void places_of(const conn_row *r, row_places *p) {
    scope_of(r, p->scope, sizeof p->scope);
    p->access = (ds_crypto_context){sizeof(ds_crypto_context), "service_connections", "access_token",
                                    r->user_id, p->scope};
    p->refresh = p->access;
    p->refresh.field = "refresh_token";
}

static void write_connection(ds_pool *pool, ds_crypto *c, conn_row *r, bool insert) {
    row_places at;
    places_of(r, &at);
    size_t alen, rlen = 0;
    uint8_t *aenv = seal(c, &at.access, r->access, &alen);
    uint8_t *renv = r->has_refresh ? seal(c, &at.refresh, r->refresh, &rlen) : NULL;
    ds_sql_param p[] = {ds_sql_param_int64(r->user_id), ds_sql_param_text(r->provider),
                    ds_sql_param_text(r->account), ds_sql_param_bytea(aenv, alen),
                    renv ? ds_sql_param_bytea(renv, rlen) : ds_sql_param_null(),
                    ds_sql_param_text(ds_crypto_active_key_id(c)), ds_sql_param_int64(r->id)};
    ds_sql_result *res;
    ds_error err = {0};
    ds_status st;
    if (insert) {
        st = ds_sql_exec_pool(pool,
                          "INSERT INTO service_connections (user_id, provider, "
                          "external_account_id, access_token_enc, refresh_token_enc, "
                          "key_id) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                          p, 6, &res, &err);
        ck_assert_ds_ok(st, err);
        st = ds_sql_result_int64(res, 0, 0, &r->id, &err);
        ck_assert_ds_ok(st, err);
    } else {
        st = ds_sql_exec_pool(pool,
                          "UPDATE service_connections SET access_token_enc = $4, "
                          "refresh_token_enc = $5, key_id = $6 WHERE id = $7 "
                          "AND user_id = $1 AND provider = $2 AND external_account_id = $3",
                          p, 7, &res, &err);
        ck_assert_ds_ok(st, err);
        ck_assert_int_eq(ds_sql_result_affected(res), 1);
    }
    ds_sql_result_free(res);
    ds_free(aenv);
    ds_free(renv);
}

static int64_t make_user(const char *url, int n) {
    char sql[160];
    snprintf(sql, sizeof sql,
             "INSERT INTO users (email) VALUES ('user%d@example.com') RETURNING id", n);
    return dt_sql_int(url, sql);
}

static conn_row *make_connections(const char *url, ds_pool *pool, ds_crypto *c,
                                  int n, int first) {
    conn_row *rows = calloc((size_t)n, sizeof *rows);
    for (int i = 0; i < n; i++) {
        conn_row *r = &rows[i];
        r->user_id = make_user(url, first + i);
        snprintf(r->provider, sizeof r->provider, "%s", i % 2 ? "github" : "google");
        snprintf(r->account, sizeof r->account, "acct-%d", first + i);
        snprintf(r->access, sizeof r->access, "ya29.access-%d-%08x", first + i,
                 randombytes_random());
        snprintf(r->refresh, sizeof r->refresh, "1//refresh-%d-%08x", first + i,
                 randombytes_random());
        r->has_refresh = i % 5 != 0; /* some providers issue none */
        write_connection(pool, c, r, true);
    }
    return rows;
}

/* Reads every row back and checks it decrypts with `c` to what was written.
 * Returns how many rows carry key_id `kid` (and envelopes under it). */
static int verify_connections(ds_pool *pool, ds_crypto *c, const conn_row *rows,
                              int n, const char *kid) {
    ds_sql_result *res;
    ds_error err = {0};
    ds_status st = ds_sql_exec_pool(pool,
                                "SELECT id, access_token_enc, refresh_token_enc, key_id "
                                "FROM service_connections ORDER BY id",
                                NULL, 0, &res, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(ds_sql_result_rows(res), n);
    int under_kid = 0;
    for (int i = 0; i < n; i++) {
        const conn_row *r = &rows[i];
        int64_t id;
        ck_assert_ds_ok(ds_sql_result_int64(res, i, 0, &id, &err), err);
        ck_assert_int_eq(id, r->id);
        row_places at;
        places_of(r, &at);
        const uint8_t *env;
        size_t len;
        ck_assert_ds_ok(ds_sql_result_bytea(res, i, 1, &env, &len, &err), err);
        assert_opens_to(c, &at.access, env, len, r->access);
        char env_kid[DS_KID_MAX + 1];
        ck_assert_ds_ok(ds_crypto_envelope_key_id(env, len, env_kid, sizeof env_kid, &err), err);
        const char *row_kid;
        ck_assert_ds_ok(ds_sql_result_text(res, i, 3, &row_kid, NULL, &err), err);
        ck_assert_str_eq(env_kid, row_kid);
        if (r->has_refresh) {
            ck_assert_ds_ok(ds_sql_result_bytea(res, i, 2, &env, &len, &err), err);
            assert_opens_to(c, &at.refresh, env, len, r->refresh);
            char rkid[DS_KID_MAX + 1];
            ck_assert_ds_ok(ds_crypto_envelope_key_id(env, len, rkid, sizeof rkid, &err), err);
            ck_assert_str_eq(rkid, row_kid);
        } else {
            ck_assert(ds_sql_result_is_null(res, i, 2));
        }
        if (strcmp(row_kid, kid) == 0)
            under_kid++;
    }
    ds_sql_result_free(res);
    return under_kid;
}

/* A migrated database holding `n` service connections sealed with DT_K1. */
typedef struct rot_db {
    char *url;
    ds_pool *pool;
    ds_crypto *ring1;
    conn_row *rows;
} rot_db;

static rot_db rot_db_open(const char *tag, int pool_max, int n) {
    rot_db d;
    d.url = dt_migrated_db(tag);
    d.pool = dt_pool(d.url, 1, pool_max);
    d.ring1 = dt_crypto_ring(DT_K1);
    d.rows = make_connections(d.url, d.pool, d.ring1, n, 0);
    return d;
}

static void rot_db_close(rot_db *d) {
    ds_crypto_close(d->ring1);
    free(d->rows);
    ds_pool_close(d->pool);
    dt_drop_db(d->url);
    free(d->url);
}

/* Holds a row lock while rotation runs past it, then writes new tokens
 * under an old key, as a process not yet redeployed would. */
typedef struct holder_arg {
    const char *url;
    ds_crypto *old_ring;
    conn_row *row;
    atomic_int locked;
} holder_arg;

static void *holder_main(void *p) {
    holder_arg *a = p;
    ds_pool *pool = dt_pool(a->url, 1, 1);
    ds_conn *conn;
    ds_error err = {0};
    ck_assert_ds_ok(ds_pool_acquire(pool, &conn, &err), err);
    ck_assert_ds_ok(ds_sql_exec(conn, "BEGIN", NULL, 0, NULL, &err), err);
    ds_sql_param id = ds_sql_param_int64(a->row->id);
    ck_assert_ds_ok(ds_sql_exec(conn, "SELECT 1 FROM service_connections WHERE id = $1 "
                                  "FOR UPDATE", &id, 1, NULL, &err), err);
    atomic_store(&a->locked, 1);
    /* hold it until rotation has gone past it (it skips locked rows):
     * every other row is under the new key, at most 60 s */
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM service_connections "
             "WHERE id <> %lld AND key_id <> 'k3'",
             (long long)a->row->id);
    long long deadline = dt_now_ms() + 60000;
    while (dt_sql_int(a->url, sql) > 0) {
        ck_assert_msg(dt_now_ms() < deadline,
                      "rotation did not pass the held row within 60 s");
        usleep(2000);
    }
    snprintf(a->row->access, sizeof a->row->access, "ya29.written-while-rotating");
    row_places at;
    places_of(a->row, &at);
    size_t len;
    uint8_t *env = seal(a->old_ring, &at.access, a->row->access, &len);
    ds_sql_param p2[] = {ds_sql_param_bytea(env, len), ds_sql_param_text(ds_crypto_active_key_id(a->old_ring)),
                     ds_sql_param_int64(a->row->id)};
    ck_assert_ds_ok(ds_sql_exec(conn, "UPDATE service_connections SET access_token_enc = $1, "
                                  "key_id = $2 WHERE id = $3", p2, 3, NULL, &err), err);
    ck_assert_ds_ok(ds_sql_exec(conn, "COMMIT", NULL, 0, NULL, &err), err);
    ds_free(env);
    ds_pool_release(conn);
    ds_pool_close(pool);
    return NULL;
}

START_TEST(test_crypto_rotate_three_keys_online) {
    enum { N1 = 300, N2 = 150 };
    rot_db d = rot_db_open("rot", 4, N1);
    const char *url = d.url;
    ds_pool *pool = d.pool;
    ds_crypto *ring1 = d.ring1;
    ds_crypto *ring2 = dt_crypto_ring(DT_K2 "," DT_K1);
    ds_crypto *ring3 = dt_crypto_ring(DT_K3 "," DT_K2 "," DT_K1);
    conn_row *b = make_connections(url, pool, ring2, N2, N1);
    conn_row *rows = d.rows = realloc(d.rows, (N1 + N2) * sizeof *rows);
    memcpy(rows + N1, b, N2 * sizeof *b);
    free(b);
    /* the second ring reads both generations */
    ck_assert_int_eq(verify_connections(pool, ring2, rows, N1 + N2, "k1"), N1);

    /* a bounded first run: 100 rows, then stop (resumable) */
    ds_crypto_rotate_options opts = {.size = sizeof(ds_crypto_rotate_options), .batch_size = 32, .max_rows = 100};
    ds_crypto_rotate_stats stats = DS_CRYPTO_ROTATE_STATS_INIT;
    ds_error err = {0};
    ds_status st = ds_crypto_rotate(ring3, pool, &opts, &stats, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(stats.rotated, 100);
    ck_assert_int_eq(stats.failed, 0);
    ck_assert_int_eq(stats.remaining, N1 + N2 - 100);
    ck_assert_int_eq(stats.batches, 4);
    /* during: every row readable, 100 under k3 */
    ck_assert_int_eq(verify_connections(pool, ring3, rows, N1 + N2, "k3"), 100);

    /* resume while a writer holds a row and then writes it under k1 */
    holder_arg h = {url, ring1, &rows[N1 + N2 - 1], 0};
    pthread_t th;
    pthread_create(&th, NULL, holder_main, &h);
    while (!atomic_load(&h.locked))
        usleep(1000);
    opts = (ds_crypto_rotate_options){.size = sizeof(ds_crypto_rotate_options), .batch_size = 50};
    st = ds_crypto_rotate(ring3, pool, &opts, &stats, &err);
    pthread_join(th, NULL);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(stats.failed, 0);
    ck_assert_int_eq(stats.remaining, 0);
    /* the held row was rotated after the writer's commit: counted too */
    ck_assert_int_eq(stats.rotated, N1 + N2 - 100);

    /* after: everything under k3, the writer's value kept, and the newest
     * key alone reads every row */
    ck_assert_int_eq(verify_connections(pool, ring3, rows, N1 + N2, "k3"), N1 + N2);
    ds_crypto *only3 = dt_crypto_ring(DT_K3);
    ck_assert_int_eq(verify_connections(pool, only3, rows, N1 + N2, "k3"), N1 + N2);
    ck_assert_str_eq(rows[N1 + N2 - 1].access, "ya29.written-while-rotating");
    /* nothing left to do: a rerun is a no-op */
    st = ds_crypto_rotate(only3, pool, NULL, &stats, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(stats.rotated, 0);
    ck_assert_int_eq(stats.remaining, 0);

    ds_crypto_close(only3);
    ds_crypto_close(ring2);
    ds_crypto_close(ring3);
    rot_db_close(&d);
}
END_TEST

START_TEST(test_crypto_rotate_reports_rows_that_do_not_decrypt) {
    rot_db d = rot_db_open("rotfail", 2, 20);
    const char *url = d.url;
    const conn_row *rows = d.rows;
    /* row 3 gets row 4's envelope (another user): it can never decrypt */
    char sql[256];
    snprintf(sql, sizeof sql,
             "UPDATE service_connections SET access_token_enc = "
             "(SELECT access_token_enc FROM service_connections WHERE id = %lld) "
             "WHERE id = %lld",
             (long long)rows[4].id, (long long)rows[3].id);
    dt_sql(url, sql);
    ds_crypto *ring2 = dt_crypto_ring(DT_K2 "," DT_K1);
    ds_crypto_rotate_stats stats = DS_CRYPTO_ROTATE_STATS_INIT;
    ds_error err = {0};
    ds_crypto_rotate_options opts = {.size = sizeof(ds_crypto_rotate_options), .batch_size = 7};
    ds_status st = ds_crypto_rotate(ring2, d.pool, &opts, &stats, &err);
    ck_assert_ds_status(st, DS_ERR_CRYPTO, err);
    ck_assert_int_eq(stats.rotated, 19);
    ck_assert_int_eq(stats.failed, 1);
    ck_assert_int_eq(stats.remaining, 1);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM service_connections WHERE key_id = 'k1' AND id = %lld",
             (long long)rows[3].id);
    ck_assert_int_eq(dt_sql_int(url, sql), 1);
    ds_crypto_close(ring2);
    rot_db_close(&d);
}
END_TEST

START_TEST(test_crypto_rotate_through_pgbouncer) {
    rot_db d = rot_db_open("rotpool", 1, 40);
    ds_pool *pool = dt_pooler_pool(d.url, 1, 3);
    ds_error err = {0};
    ds_crypto *ring2 = dt_crypto_ring(DT_K2 "," DT_K1);
    ds_crypto_rotate_stats stats = DS_CRYPTO_ROTATE_STATS_INIT;
    ds_crypto_rotate_options opts = {.size = sizeof(ds_crypto_rotate_options), .batch_size = 16};
    ck_assert_ds_ok(ds_crypto_rotate(ring2, pool, &opts, &stats, &err), err);
    ck_assert_int_eq(stats.rotated, 40);
    ck_assert_int_eq(stats.remaining, 0);
    ck_assert_int_eq(verify_connections(pool, ring2, d.rows, 40, "k2"), 40);
    ds_crypto_close(ring2);
    ds_pool_close(pool);
    rot_db_close(&d);
}
END_TEST

START_TEST(test_crypto_envelopes_swapped_between_rows_fail) {
    rot_db d = rot_db_open("swap", 2, 2);
    ds_crypto *c = d.ring1;
    const conn_row *rows = d.rows;
    char sql[512];
    /* user 1's access token into user 0's row; access into refresh */
    snprintf(sql, sizeof sql,
             "UPDATE service_connections SET access_token_enc = "
             "(SELECT access_token_enc FROM service_connections WHERE id = %lld), "
             "refresh_token_enc = access_token_enc WHERE id = %lld",
             (long long)rows[1].id, (long long)rows[0].id);
    dt_sql(d.url, sql);
    ds_sql_result *res;
    ds_error err = {0};
    ds_sql_param id = ds_sql_param_int64(rows[0].id);
    ck_assert_ds_ok(ds_sql_exec_pool(d.pool, "SELECT access_token_enc, refresh_token_enc "
                                       "FROM service_connections WHERE id = $1",
                                 &id, 1, &res, &err), err);
    row_places at;
    places_of(&rows[0], &at);
    const uint8_t *env;
    size_t len;
    ck_assert_ds_ok(ds_sql_result_bytea(res, 0, 0, &env, &len, &err), err);
    assert_no_open(c, &at.access, env, len);
    ck_assert_ds_ok(ds_sql_result_bytea(res, 0, 1, &env, &len, &err), err);
    assert_no_open(c, &at.refresh, env, len);
    /* the same envelope still opens in its own place */
    assert_opens_to(c, &at.access, env, len, rows[0].access);

    /* same provider and account for two users: the owner id alone decides */
    conn_row twin = rows[0];
    twin.user_id = rows[1].user_id;
    row_places twin_at;
    places_of(&twin, &twin_at);
    assert_no_open(c, &twin_at.access, env, len);
    ds_sql_result_free(res);
    rot_db_close(&d);
}
END_TEST

START_TEST(test_crypto_rotate_errors) {
    ds_crypto *c = dt_crypto_ring(DT_K1);
    ds_error err = {0};
    ds_crypto_rotate_stats stats = {.size = sizeof(ds_crypto_rotate_stats), .rotated = 7};
    ck_assert_int_eq(ds_crypto_rotate(c, NULL, NULL, &stats, &err), DS_ERR_INVALID);
    ck_assert_int_eq(stats.rotated, 0);
    ds_pool *pool = dt_pool(dt_env("DATABASE_URL"), 1, 1);
    ds_crypto_rotate_options bad = {.size = sizeof(ds_crypto_rotate_options), .batch_size = -1};
    ck_assert_int_eq(ds_crypto_rotate(c, pool, &bad, &stats, &err), DS_ERR_INVALID);
    bad = (ds_crypto_rotate_options){.size = sizeof(ds_crypto_rotate_options), .batch_size = 10001};
    ck_assert_int_eq(ds_crypto_rotate(c, pool, &bad, &stats, &err), DS_ERR_INVALID);
    bad = (ds_crypto_rotate_options){.size = sizeof(ds_crypto_rotate_options), .max_rows = -1};
    ck_assert_int_eq(ds_crypto_rotate(c, pool, &bad, &stats, &err), DS_ERR_INVALID);
    bad = (ds_crypto_rotate_options){.size = sizeof(ds_crypto_rotate_options), .pause_ms = -1};
    ck_assert_int_eq(ds_crypto_rotate(c, pool, &bad, &stats, &err), DS_ERR_INVALID);
    ds_pool_close(pool);
    ds_crypto_close(c);
}
END_TEST

/* A failed statement's status is the mapped one whether or not the caller
 * passes an error out-param (it used to be DS_ERR_DB without). */
START_TEST(test_crypto_rotate_status_does_not_depend_on_err) {
    char *url = dt_migrated_db("rotstatus");
    ds_config *cfg = dt_config(url, 1, 1);
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set_int(cfg, "statement_timeout_ms", 200, &err), err);
    ds_pool *pool;
    ck_assert_ds_ok(ds_pool_open(cfg, &pool, &err), err);
    ds_config_free(cfg);
    ds_crypto *c = dt_crypto_ring(DT_K1);
    PGconn *locker = dt_connect(url);
    PGresult *lr = PQexec(locker, "BEGIN; LOCK TABLE service_connections IN ACCESS EXCLUSIVE MODE");
    ck_assert_int_eq(PQresultStatus(lr), PGRES_COMMAND_OK);
    PQclear(lr);
    ck_assert_int_eq(ds_crypto_rotate(c, pool, NULL, NULL, &err), DS_ERR_TIMEOUT);
    ck_assert_int_eq(ds_crypto_rotate(c, pool, NULL, NULL, NULL), DS_ERR_TIMEOUT);
    lr = PQexec(locker, "ROLLBACK");
    PQclear(lr);
    PQfinish(locker);
    ds_crypto_close(c);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

Suite *ds_test_crypto_suite(void) {
    Suite *s = suite_create("crypto");
    TCase *tc = tcase_create("round_trip");
    tcase_add_test(tc, test_crypto_round_trip_lengths);
    tcase_add_test(tc, test_crypto_round_trip_text_token);
    tcase_add_test(tc, test_crypto_nonce_is_fresh_each_time);
    tcase_add_test(tc, test_crypto_any_ring_key_decrypts);
    suite_add_tcase(s, tc);
    tc = tcase_create("open");
    tcase_add_test(tc, test_crypto_open_from_config);
    tcase_add_test(tc, test_crypto_open_rejects_bad_rings_without_echoing_keys);
    suite_add_tcase(s, tc);
    tc = tcase_create("failures");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_crypto_wrong_key_fails);
    tcase_add_test(tc, test_crypto_unknown_key_id_fails);
    tcase_add_test(tc, test_crypto_every_byte_tampered_fails);
    tcase_add_test(tc, test_crypto_truncated_extended_and_empty_fail);
    tcase_add_test(tc, test_crypto_wrong_place_fails);
    tcase_add_test(tc, test_crypto_header_is_authenticated);
    suite_add_tcase(s, tc);
    tc = tcase_create("key_memory");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_crypto_keys_unreadable_when_idle);
    tcase_add_test(tc, test_crypto_shared_between_threads);
    suite_add_tcase(s, tc);
    tc = tcase_create("helpers");
    tcase_add_test(tc, test_crypto_generate_key_makes_a_ring_entry);
    tcase_add_test(tc, test_crypto_scope_service_format);
    suite_add_tcase(s, tc);
    tc = tcase_create("oom");
    tcase_add_test(tc, test_crypto_out_of_memory_is_an_error);
    suite_add_tcase(s, tc);
    tc = tcase_create("rotate");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_crypto_rotate_three_keys_online);
    tcase_add_test(tc, test_crypto_rotate_reports_rows_that_do_not_decrypt);
    tcase_add_test(tc, test_crypto_rotate_through_pgbouncer);
    suite_add_tcase(s, tc);
    tc = tcase_create("swap");
    tcase_add_test(tc, test_crypto_envelopes_swapped_between_rows_fail);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, test_crypto_errors_null_arguments);
    tcase_add_test(tc, test_crypto_rotate_errors);
    tcase_add_test(tc, test_crypto_rotate_status_does_not_depend_on_err);
    suite_add_tcase(s, tc);
    return s;
}
