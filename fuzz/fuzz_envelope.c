/*
 * libFuzzer target for the token envelope decoder (`make fuzz`).
 *
 * Each input is used twice:
 *  1. as an envelope: the structural decoder, ds_crypto_envelope_key_id and
 *     ds_crypto_decrypt must agree with each other and fail cleanly
 *     (DS_ERR_CRYPTO, no output) on anything that is not a genuine envelope;
 *  2. as a plaintext (after its first byte): it must survive an
 *     encrypt/decrypt round trip, and the envelope must stop opening once the
 *     byte the first input byte selects is flipped, or once it is cut there.
 * Any violated property traps, which libFuzzer reports as a crash.
 */
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto_internal.h"

/* Fixed keys: the seed corpus holds envelopes made with them. */
#define FUZZ_RING                                                              \
    "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,"                          \
    "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="

static ds_crypto *ring;
static const ds_crypto_context place = {sizeof(ds_crypto_context), "service_connections", "access_token",
                                        42, "google/1234"};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (ds_crypto_open_keys(FUZZ_RING, &ring, NULL) != DS_OK)
        abort();
    return 0;
}

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            __builtin_trap();                                                  \
    } while (0)

static void as_envelope(const uint8_t *data, size_t size) {
    ds__envelope env;
    bool parsed = ds__envelope_parse(data, size, &env);
    char kid[DS_KID_MAX + 1];
    ds_error err;
    ds_status st = ds_crypto_envelope_key_id(data, size, kid, sizeof kid, &err);
    CHECK(parsed == (st == DS_OK));
    if (parsed) {
        CHECK(strcmp(kid, env.kid) == 0);
        CHECK(env.header_len + DS_ENVELOPE_NONCE_BYTES + env.ciphertext_len == size);
        CHECK(env.ciphertext_len >= DS_ENVELOPE_TAG_BYTES);
    } else {
        CHECK(st == DS_ERR_CRYPTO && kid[0] == '\0');
    }
    ds_crypto_secret *out = (ds_crypto_secret *)&out;
    st = ds_crypto_decrypt(ring, &place, data, size, &out, &err);
    if (st == DS_OK) {
        /* only a genuine envelope (from the seed corpus) gets here */
        CHECK(parsed);
        CHECK(ds_crypto_secret_len(out) == env.ciphertext_len - DS_ENVELOPE_TAG_BYTES);
        ds_crypto_secret_free(out);
    } else {
        CHECK(st == DS_ERR_CRYPTO && out == NULL);
    }
}

static void as_plaintext(const uint8_t *data, size_t size) {
    if (size < 1)
        return;
    ds_crypto_context ctx = place;
    ctx.owner_id = (int64_t)size;
    uint8_t *env;
    size_t env_len;
    ds_error err;
    CHECK(ds_crypto_encrypt(ring, &ctx, data + 1, size - 1, &env, &env_len, &err) == DS_OK);
    CHECK(env_len == DS_CRYPTO_ENVELOPE_OVERHEAD(2) + size - 1);
    ds_crypto_secret *out;
    CHECK(ds_crypto_decrypt(ring, &ctx, env, env_len, &out, &err) == DS_OK);
    CHECK(ds_crypto_secret_len(out) == size - 1);
    CHECK(memcmp(ds_crypto_secret_data(out), data + 1, size - 1) == 0);
    ds_crypto_secret_free(out);

    size_t at = data[0] % env_len;
    env[at] ^= (uint8_t)(data[0] | 1);
    out = (ds_crypto_secret *)&out;
    CHECK(ds_crypto_decrypt(ring, &ctx, env, env_len, &out, &err) == DS_ERR_CRYPTO);
    CHECK(out == NULL);
    env[at] ^= (uint8_t)(data[0] | 1);
    CHECK(ds_crypto_decrypt(ring, &ctx, env, at, &out, &err) == DS_ERR_CRYPTO);
    /* another place never opens it */
    ctx.owner_id++;
    CHECK(ds_crypto_decrypt(ring, &ctx, env, env_len, &out, &err) == DS_ERR_CRYPTO);
    ds_free(env);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    as_envelope(data, size);
    as_plaintext(data, size);
    return 0;
}
