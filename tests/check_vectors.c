/* The committed test vectors of docs/formats.md (tests/vectors/, JSON),
 * read by the library. tests/vectors/verify.py reads the same files with an
 * independent implementation, so the library and the document agree. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto_internal.h"
#include "session/session_internal.h"
#include "test_util.h"

static json_t *load_vectors(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/vectors/%s", dt_env("DS_PROJECT_ROOT"),
             name);
    json_error_t jerr;
    json_t *v = json_load_file(path, 0, &jerr);
    ck_assert_msg(v && json_is_array(v) && json_array_size(v) > 0,
                  "%s: %s (line %d)", path, jerr.text, jerr.line);
    return v;
}

static uint8_t *b64(const char *s, size_t *len) {
    size_t cap = strlen(s) + 1;
    uint8_t *out = malloc(cap);
    ck_assert_int_eq(sodium_base642bin(out, cap, s, strlen(s), NULL, len, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    return out;
}

static ds_crypto *ring_of(const json_t *v) {
    char spec[256];
    snprintf(spec, sizeof spec, "%s:%s",
             json_string_value(json_object_get(v, "key_id")),
             json_string_value(json_object_get(v, "key")));
    ds_crypto *c;
    ds_error err = {0};
    ck_assert_ds_ok(ds_crypto_open_keys(spec, &c, &err), err);
    return c;
}

START_TEST(test_vectors_token_envelopes_open) {
    json_t *all = load_vectors("token_envelope.json");
    size_t i;
    json_t *v;
    int null_scopes = 0, empty_scopes = 0;
    json_array_foreach(all, i, v) {
        ds_crypto *c = ring_of(v);
        const char *kid = json_string_value(json_object_get(v, "key_id"));
        const char *pt = json_string_value(json_object_get(v, "plaintext"));
        const json_t *scope = json_object_get(v, "scope");
        null_scopes += json_is_null(scope);
        empty_scopes += json_is_string(scope) && !*json_string_value(scope);
        ds_crypto_context ctx = {sizeof(ds_crypto_context), 
            json_string_value(json_object_get(v, "table")),
            json_string_value(json_object_get(v, "field")),
            strtoll(json_string_value(json_object_get(v, "owner_id")), NULL, 10),
            json_is_null(scope) ? NULL : json_string_value(scope)};
        size_t elen;
        uint8_t *env = b64(json_string_value(json_object_get(v, "envelope")), &elen);
        ck_assert_uint_eq(elen, DS_CRYPTO_ENVELOPE_OVERHEAD(strlen(kid)) + strlen(pt));
        char got_kid[33];
        ds_error err = {0};
        ck_assert_ds_ok(ds_crypto_envelope_key_id(env, elen, got_kid, sizeof got_kid,
                                                  &err),
                        err);
        ck_assert_str_eq(got_kid, kid);
        ds_crypto_secret *sec;
        ck_assert_ds_ok(ds_crypto_decrypt(c, &ctx, env, elen, &sec, &err), err);
        ck_assert_uint_eq(ds_crypto_secret_len(sec), strlen(pt));
        ck_assert(memcmp(ds_crypto_secret_data(sec), pt, strlen(pt)) == 0);
        ds_crypto_secret_free(sec);
        /* the other kind of scope is another place */
        ds_crypto_context other = ctx;
        other.scope = ctx.scope ? NULL : "";
        ck_assert_ds_status(ds_crypto_decrypt(c, &other, env, elen, &sec, &err),
                            DS_ERR_CRYPTO, err);
        /* and a fresh envelope of the library opens with the same place */
        uint8_t *fresh;
        size_t flen;
        ck_assert_ds_ok(ds_crypto_encrypt(c, &ctx, pt, strlen(pt), &fresh, &flen, &err),
                        err);
        ck_assert_uint_eq(flen, elen);
        ck_assert(memcmp(fresh, env, 2 + strlen(kid)) == 0); /* the header */
        ds_free(fresh);
        free(env);
        ds_crypto_close(c);
    }
    ck_assert_int_gt(null_scopes, 0);
    ck_assert_int_gt(empty_scopes, 0);
    json_decref(all);
}
END_TEST

static void hex_eq(const uint8_t *bytes, const char *want) {
    char hex[2 * 32 + 1];
    sodium_bin2hex(hex, sizeof hex, bytes, 32);
    ck_assert_str_eq(hex, want);
}

START_TEST(test_vectors_session_token_hashes) {
    json_t *all = load_vectors("session_token_hash.json");
    size_t i;
    json_t *v;
    json_array_foreach(all, i, v) {
        ds_crypto *c = ring_of(v);
        uint8_t raw[DS_SESSION_TOKEN_BYTES];
        ds_error err = {0};
        ck_assert_ds_ok(ds__session_token_decode(
                            json_string_value(json_object_get(v, "token")), raw,
                            "vectors", &err),
                        err);
        uint8_t h[DS_SESSION_HASH_BYTES];
        ck_assert_ds_ok(ds__crypto_session_hash(c, 0, raw, sizeof raw, h, &err), err);
        hex_eq(h, json_string_value(json_object_get(v, "hash")));
        uint8_t seal[DS__SESSION_SEAL_KEY_BYTES];
        ds__session_seal_key(raw, seal);
        hex_eq(seal, json_string_value(json_object_get(v, "cache_seal_key")));
        ds_crypto_close(c);
    }
    json_decref(all);
}
END_TEST

Suite *ds_test_vectors_suite(void) {
    Suite *s = suite_create("vectors");
    TCase *tc = tcase_create("formats");
    tcase_add_test(tc, test_vectors_token_envelopes_open);
    tcase_add_test(tc, test_vectors_session_token_hashes);
    suite_add_tcase(s, tc);
    return s;
}
