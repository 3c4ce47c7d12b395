/*
 * The key ring and the token envelope (XChaCha20-Poly1305 IETF).
 *
 * Keys live in one sodium_malloc region (guard pages, mlock, wiped on
 * free). Between uses the region is PROT_NONE; making it readable costs two
 * mprotect calls (several microseconds), more than an encryption, so a
 * small watcher thread re-locks it only once a whole period
 * (DS_RING_IDLE_US) went by without a use: a busy ring pays two atomic
 * increments per call, an idle one is unreadable within two periods.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/growable.h"
#include "core/config_internal.h"
#include "crypto/crypto_internal.h"

#define DS_RING_IDLE_US INT64_C(1000000)
/* Per ring key: the AEAD key, then the session-hash subkey. */
#define SLOT_BYTES (2 * DS_KEY_BYTES)
/* Each of table, field and scope; far above any real name. */
#define DS_AD_PART_MAX 4096
/* crypto_kdf context of the session-hash subkeys (exactly 8 bytes). */
static const char session_kdf_context[crypto_kdf_CONTEXTBYTES] = "dssessn1";

struct ds_crypto_secret {
    size_t len;
    char data[]; /* len bytes and a NUL */
};

struct ds_crypto {
    size_t nkeys;
    char kids[DS_RING_MAX_KEYS][DS_KID_MAX + 1];
    uint8_t kid_len[DS_RING_MAX_KEYS];
    unsigned char *keys; /* sodium_malloc, nkeys * SLOT_BYTES */

    /* Access guard for `keys` (see ring_enter). */
    pthread_mutex_t mu; /* serialises protection changes */
    pthread_cond_t cond;
    atomic_int users;        /* calls inside ring_enter/ring_leave */
    atomic_bool readable;    /* set only once the region is readable */
    atomic_uint_fast64_t uses; /* bumped by every call: the watcher's clock */
    bool closing;
    bool watcher; /* the re-locking thread runs */
    pid_t owner_pid; /* a forked child has no watcher to join */
    pthread_t thread;
};

/* ---- secrets -------------------------------------------------------- */

ds_crypto_secret *ds__secret_new(size_t len) {
    if (len > SIZE_MAX - sizeof(ds_crypto_secret) - 1)
        return NULL;
    ds_crypto_secret *s = ds__malloc(sizeof(ds_crypto_secret) + len + 1);
    if (!s)
        return NULL;
    s->len = len;
    s->data[len] = '\0';
    return s;
}

char *ds__secret_bytes(ds_crypto_secret *secret) { return secret->data; }

DS_EXPORT const char *ds_crypto_secret_data(const ds_crypto_secret *secret) {
    return secret ? secret->data : NULL;
}

DS_EXPORT size_t ds_crypto_secret_len(const ds_crypto_secret *secret) {
    return secret ? secret->len : 0;
}

DS_EXPORT void ds_crypto_secret_free(ds_crypto_secret *secret) {
    if (!secret)
        return;
    sodium_memzero(secret, sizeof(ds_crypto_secret) + secret->len + 1);
    ds__free(secret);
}

/* ---- the access guard ------------------------------------------------ */

/*
 * Lock-free on the hot path. A caller announces itself (users++) and then
 * checks `readable`; whoever re-locks first clears `readable` and then
 * checks `users`, both sequentially consistent, so at least one of them
 * sees the other: either the caller takes the slow path and waits for the
 * mutex (and unlocks the keys again), or the re-locking is called off.
 */
static const unsigned char *ring_enter(ds_crypto *c) {
    atomic_fetch_add(&c->users, 1);
    if (atomic_load(&c->readable))
        return c->keys;
    pthread_mutex_lock(&c->mu);
    if (!atomic_load(&c->readable)) {
        sodium_mprotect_readonly(c->keys);
        atomic_store(&c->readable, true);
        if (c->watcher)
            pthread_cond_signal(&c->cond);
    }
    pthread_mutex_unlock(&c->mu);
    return c->keys;
}

/* With the mutex held: makes the keys unreadable unless a call is inside. */
static void try_relock(ds_crypto *c) {
    if (!atomic_load(&c->readable))
        return;
    atomic_store(&c->readable, false);
    if (atomic_load(&c->users) == 0)
        sodium_mprotect_noaccess(c->keys);
    else
        atomic_store(&c->readable, true);
}

static void ring_leave(ds_crypto *c) {
    atomic_fetch_add_explicit(&c->uses, 1, memory_order_relaxed);
    if (atomic_fetch_sub(&c->users, 1) == 1 && !c->watcher) {
        pthread_mutex_lock(&c->mu);
        try_relock(c);
        pthread_mutex_unlock(&c->mu);
    }
}

static void *watcher_main(void *arg) {
    ds_crypto *c = arg;
    pthread_mutex_lock(&c->mu);
    uint64_t seen = atomic_load(&c->uses);
    while (!c->closing) {
        if (!atomic_load(&c->readable)) {
            pthread_cond_wait(&c->cond, &c->mu);
            seen = atomic_load(&c->uses);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)(DS_RING_IDLE_US / 1000000);
        ts.tv_nsec += (long)(DS_RING_IDLE_US % 1000000) * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->cond, &c->mu, &ts);
        if (c->closing)
            break;
        uint64_t now = atomic_load(&c->uses);
        if (now != seen) { /* used during the period */
            seen = now;
            continue;
        }
        try_relock(c);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* ---- opening ---------------------------------------------------------- */

static ds_status add_key(void *ud, const char *kid, const unsigned char *key,
                         size_t index, ds_error *err) {
    ds_crypto *c = ud;
    if (index >= DS_RING_MAX_KEYS)
        return ds__error_set(err, DS_ERR_CONFIG, "DS_TOKEN_KEYS: more than %d keys",
                             DS_RING_MAX_KEYS);
    unsigned char *slot = c->keys + index * SLOT_BYTES;
    memcpy(slot, key, DS_KEY_BYTES);
    if (crypto_kdf_derive_from_key(slot + DS_KEY_BYTES, DS_KEY_BYTES, 1,
                                   session_kdf_context, key) != 0)
        return ds__error_set(err, DS_ERR_INTERNAL,
                             "DS_TOKEN_KEYS: key derivation failed");
    size_t n = strlen(kid);
    memcpy(c->kids[index], kid, n + 1);
    c->kid_len[index] = (uint8_t)n;
    c->nkeys = index + 1;
    return DS_OK;
}

static ds_status open_ring(const char *spec, const char *varname,
                           ds_crypto **out, ds_error *err) {
    ds_status st = ds__ensure_init(err);
    if (st != DS_OK)
        return st;
    ds_crypto *c = ds__calloc(1, sizeof *c);
    if (!c)
        return ds__error_set(err, DS_ERR_NOMEM, "ds_crypto_open: out of memory");
    c->keys = sodium_malloc(DS_RING_MAX_KEYS * SLOT_BYTES);
    if (!c->keys) {
        ds__free(c);
        return ds__error_set(err, DS_ERR_NOMEM, "ds_crypto_open: out of memory");
    }
    sodium_memzero(c->keys, DS_RING_MAX_KEYS * SLOT_BYTES);
    st = ds__keyspec_parse(spec, varname, add_key, c, err);
    if (st != DS_OK) {
        sodium_free(c->keys);
        ds__free(c);
        return st;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&c->mu, NULL);
    sodium_mprotect_noaccess(c->keys);
    /* Without the watcher the ring still works, re-locking after every
     * use: slower, never less safe. */
    c->watcher = pthread_create(&c->thread, NULL, watcher_main, c) == 0;
    c->owner_pid = getpid();
    if (!c->watcher)
        ds__log(DS_LOG_WARN, "crypto",
                "no key watcher thread; keys are re-locked after every use");
    ds__log(DS_LOG_INFO, "crypto", "key ring open: %zu key(s), active '%s'",
            c->nkeys, c->kids[0]);
    *out = c;
    return DS_OK;
}

DS_EXPORT ds_status ds_crypto_open(const ds_config *cfg, ds_crypto **out,
                                   ds_error *err) {
    DS_CHECK_ARG(err, out != NULL, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, cfg != NULL, "cfg is NULL");
    if (!cfg->token_keys || !*cfg->token_keys)
        return ds__error_set(err, DS_ERR_CONFIG,
                             "DS_TOKEN_KEYS is not set: expected "
                             "kid:base64key[,kid:base64key...] with 32-byte keys");
    return open_ring(cfg->token_keys, "DS_TOKEN_KEYS", out, err);
}

DS_EXPORT ds_status ds_crypto_open_keys(const char *keyspec, ds_crypto **out,
                                        ds_error *err) {
    DS_CHECK_ARG(err, out != NULL, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, keyspec != NULL, "keyspec is NULL");
    return open_ring(keyspec, "key ring", out, err);
}

DS_EXPORT void ds_crypto_close(ds_crypto *c) {
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
    if (c->watcher && c->owner_pid == getpid())
        pthread_join(c->thread, NULL);
    /* sodium_free makes the region writable, wipes and unmaps it. */
    sodium_free(c->keys);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cond);
    ds__wipe(c, sizeof *c);
    ds__free(c);
}

DS_EXPORT const char *ds_crypto_active_key_id(const ds_crypto *c) {
    return c ? c->kids[0] : NULL;
}

static int find_key(const ds_crypto *c, const char *kid) {
    for (size_t i = 0; i < c->nkeys; i++)
        if (strcmp(c->kids[i], kid) == 0)
            return (int)i;
    return -1;
}

DS_EXPORT bool ds_crypto_has_key(const ds_crypto *c, const char *kid) {
    return c && kid && find_key(c, kid) >= 0;
}

size_t ds__crypto_key_count(const ds_crypto *c) { return c->nkeys; }

bool ds__crypto_keys_readable(ds_crypto *c) {
    return atomic_load(&c->readable);
}

const volatile unsigned char *ds__crypto_key_memory(const ds_crypto *c) {
    return c->keys;
}

/* ---- the envelope ------------------------------------------------------ */

static bool kid_char(unsigned char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.';
}

bool ds__envelope_parse(const uint8_t *buf, size_t len, ds__envelope *out) {
    if (!buf || len < 2 || buf[0] != DS_ENVELOPE_VERSION)
        return false;
    size_t n = buf[1];
    if (n < 1 || n > DS_KID_MAX ||
        len < 2 + n + DS_ENVELOPE_NONCE_BYTES + DS_ENVELOPE_TAG_BYTES)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!kid_char(buf[2 + i]))
            return false;
    out->version = buf[0];
    memcpy(out->kid, buf + 2, n);
    out->kid[n] = '\0';
    out->header_len = 2 + n;
    out->nonce = buf + 2 + n;
    out->ciphertext = out->nonce + DS_ENVELOPE_NONCE_BYTES;
    out->ciphertext_len = len - (2 + n + DS_ENVELOPE_NONCE_BYTES);
    return true;
}

/* The associated data: the envelope header, then each part of the place
 * length-prefixed (big-endian u32), the owner as a big-endian u64, and the
 * scope behind a presence byte (so NULL and "" differ). */
typedef struct ad_buf {
    uint8_t stack[512];
    uint8_t *p;
    size_t len;
} ad_buf;

static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint8_t *put_part(uint8_t *p, const char *s, size_t n) {
    put_u32(p, (uint32_t)n);
    memcpy(p + 4, s, n);
    return p + 4 + n;
}

static ds_status check_context(const ds_crypto_context *ctx, const char *fn,
                               ds_error *err) {
    if (!ctx)
        return ds__error_set(err, DS_ERR_INVALID, "%s: ctx is NULL", fn);
    /* every member of the first release is required: no older size */
    ds_status st = ds__growable_check(ctx->size, sizeof *ctx, sizeof *ctx,
                                      "ds_crypto_context", err);
    if (st != DS_OK)
        return st;
    if (!ctx->table || !*ctx->table || !ctx->field || !*ctx->field)
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: ctx needs a non-empty table and field", fn);
    if (strlen(ctx->table) > DS_AD_PART_MAX ||
        strlen(ctx->field) > DS_AD_PART_MAX ||
        (ctx->scope && strlen(ctx->scope) > DS_AD_PART_MAX))
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: ctx table, field and scope are limited to "
                             "%d bytes each",
                             fn, DS_AD_PART_MAX);
    return DS_OK;
}

static bool ad_build(ad_buf *ad, const uint8_t *header, size_t header_len,
                     const ds_crypto_context *ctx) {
    size_t tl = strlen(ctx->table), fl = strlen(ctx->field);
    size_t sl = ctx->scope ? strlen(ctx->scope) : 0;
    size_t need = header_len + 4 + tl + 4 + fl + 8 + 1 + (ctx->scope ? 4 + sl : 0);
    ad->p = need <= sizeof ad->stack ? ad->stack : ds__malloc(need);
    if (!ad->p)
        return false;
    uint8_t *p = ad->p;
    memcpy(p, header, header_len);
    p += header_len;
    p = put_part(p, ctx->table, tl);
    p = put_part(p, ctx->field, fl);
    uint64_t owner = (uint64_t)ctx->owner_id;
    for (int i = 7; i >= 0; i--, owner >>= 8)
        p[i] = (uint8_t)owner;
    p += 8;
    *p++ = ctx->scope ? 1 : 0;
    if (ctx->scope)
        p = put_part(p, ctx->scope, sl);
    ad->len = (size_t)(p - ad->p);
    return true;
}

static void ad_done(ad_buf *ad) {
    if (ad->p && ad->p != ad->stack)
        ds__free(ad->p);
    ad->p = NULL;
}

DS_EXPORT ds_status ds_crypto_encrypt(ds_crypto *crypto,
                                      const ds_crypto_context *ctx,
                                      const void *plaintext, size_t len,
                                      uint8_t **envelope, size_t *envelope_len,
                                      ds_error *err) {
    if (envelope)
        *envelope = NULL;
    if (envelope_len)
        *envelope_len = 0;
    DS_CHECK_ARG(err, envelope != NULL && envelope_len != NULL,
                 "envelope and envelope_len are required");
    DS_CHECK_ARG(err, crypto != NULL, "crypto is NULL");
    DS_CHECK_ARG(err, plaintext != NULL || len == 0, "plaintext is NULL");
    DS_CHECK_ARG(err, len <= DS_CRYPTO_MAX_PLAINTEXT,
                 "plaintext is longer than DS_CRYPTO_MAX_PLAINTEXT");
    ds_status st = check_context(ctx, __func__, err);
    if (st != DS_OK)
        return st;

    size_t n = crypto->kid_len[0];
    size_t total = DS_CRYPTO_ENVELOPE_OVERHEAD(n) + len;
    uint8_t *buf = ds__malloc(total);
    if (!buf)
        return ds__error_set(err, DS_ERR_NOMEM, "ds_crypto_encrypt: out of memory");
    buf[0] = DS_ENVELOPE_VERSION;
    buf[1] = (uint8_t)n;
    memcpy(buf + 2, crypto->kids[0], n);
    uint8_t *nonce = buf + 2 + n;
    randombytes_buf(nonce, DS_ENVELOPE_NONCE_BYTES);
    ad_buf ad;
    if (!ad_build(&ad, buf, 2 + n, ctx)) {
        ds__free(buf);
        return ds__error_set(err, DS_ERR_NOMEM, "ds_crypto_encrypt: out of memory");
    }
    unsigned long long clen = 0;
    const unsigned char *keys = ring_enter(crypto);
    crypto_aead_xchacha20poly1305_ietf_encrypt(
        nonce + DS_ENVELOPE_NONCE_BYTES, &clen, plaintext, len, ad.p, ad.len,
        NULL, nonce, keys);
    ring_leave(crypto);
    ad_done(&ad);
    *envelope = buf;
    *envelope_len = total;
    return DS_OK;
}

static ds_status decrypt_failed(ds_error *err) {
    /* One message for every cause: an oracle learns nothing from it. */
    return ds__error_set(err, DS_ERR_CRYPTO,
                         "ds_crypto_decrypt: the envelope does not open with "
                         "this key ring for this place");
}

DS_EXPORT ds_status ds_crypto_decrypt(ds_crypto *crypto,
                                      const ds_crypto_context *ctx,
                                      const uint8_t *envelope,
                                      size_t envelope_len, ds_crypto_secret **out,
                                      ds_error *err) {
    DS_CHECK_ARG(err, out != NULL, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, crypto != NULL, "crypto is NULL");
    DS_CHECK_ARG(err, envelope != NULL || envelope_len == 0,
                 "envelope is NULL with a non-zero length");
    ds_status st = check_context(ctx, __func__, err);
    if (st != DS_OK)
        return st;

    ds__envelope env;
    if (!ds__envelope_parse(envelope, envelope_len, &env))
        return decrypt_failed(err);
    int index = find_key(crypto, env.kid);
    if (index < 0) {
        ds__log(DS_LOG_DEBUG, "crypto", "envelope names key id '%s', not in the ring",
                env.kid);
        return decrypt_failed(err);
    }
    size_t mlen = env.ciphertext_len - DS_ENVELOPE_TAG_BYTES;
    ds_crypto_secret *sec = ds__secret_new(mlen);
    if (!sec)
        return ds__error_set(err, DS_ERR_NOMEM, "ds_crypto_decrypt: out of memory");
    ad_buf ad;
    if (!ad_build(&ad, envelope, env.header_len, ctx)) {
        ds_crypto_secret_free(sec);
        return ds__error_set(err, DS_ERR_NOMEM, "ds_crypto_decrypt: out of memory");
    }
    unsigned long long got = 0;
    const unsigned char *keys = ring_enter(crypto);
    int rc = crypto_aead_xchacha20poly1305_ietf_decrypt(
        (unsigned char *)sec->data, &got, NULL, env.ciphertext,
        env.ciphertext_len, ad.p, ad.len, env.nonce,
        keys + (size_t)index * SLOT_BYTES);
    ring_leave(crypto);
    ad_done(&ad);
    if (rc != 0 || got != mlen) {
        ds_crypto_secret_free(sec);
        return decrypt_failed(err);
    }
    *out = sec;
    return DS_OK;
}

DS_EXPORT ds_status ds_crypto_envelope_key_id(const uint8_t *envelope,
                                              size_t envelope_len, char *kid,
                                              size_t kid_size, ds_error *err) {
    DS_CHECK_ARG(err, kid != NULL && kid_size > 0, "kid buffer is NULL or empty");
    kid[0] = '\0';
    DS_CHECK_ARG(err, envelope != NULL || envelope_len == 0,
                 "envelope is NULL with a non-zero length");
    ds__envelope env;
    if (!ds__envelope_parse(envelope, envelope_len, &env))
        return ds__error_set(err, DS_ERR_CRYPTO,
                             "ds_crypto_envelope_key_id: not a token envelope");
    size_t n = strlen(env.kid);
    if (n + 1 > kid_size)
        return ds__error_set(err, DS_ERR_INVALID,
                             "ds_crypto_envelope_key_id: kid buffer of %zu bytes "
                             "is too small (%zu needed)",
                             kid_size, n + 1);
    memcpy(kid, env.kid, n + 1);
    return DS_OK;
}

/* ---- session hashes ------------------------------------------------------ */

ds_status ds__crypto_session_hash(ds_crypto *crypto, size_t index,
                                  const uint8_t *token, size_t token_len,
                                  uint8_t out[DS_SESSION_HASH_BYTES],
                                  ds_error *err) {
    if (index >= crypto->nkeys)
        return ds__error_set(err, DS_ERR_INTERNAL, "session hash: no key %zu", index);
    const unsigned char *keys = ring_enter(crypto);
    crypto_generichash(out, DS_SESSION_HASH_BYTES, token, token_len,
                       keys + index * SLOT_BYTES + DS_KEY_BYTES, DS_KEY_BYTES);
    ring_leave(crypto);
    return DS_OK;
}

ds_status ds__crypto_session_hashes(ds_crypto *crypto, const uint8_t *token,
                                    size_t token_len, uint8_t *out,
                                    ds_error *err) {
    (void)err;
    const unsigned char *keys = ring_enter(crypto);
    for (size_t i = 0; i < crypto->nkeys; i++)
        crypto_generichash(out + i * DS_SESSION_HASH_BYTES, DS_SESSION_HASH_BYTES,
                           token, token_len,
                           keys + i * SLOT_BYTES + DS_KEY_BYTES, DS_KEY_BYTES);
    ring_leave(crypto);
    return DS_OK;
}

/* ---- helpers ------------------------------------------------------------- */

static bool kid_valid(const char *kid) {
    size_t n = strlen(kid);
    if (n < 1 || n > DS_KID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!kid_char((unsigned char)kid[i]))
            return false;
    return true;
}

DS_EXPORT ds_status ds_crypto_generate_key(const char *kid, ds_crypto_secret **entry,
                                           ds_error *err) {
    DS_CHECK_ARG(err, entry != NULL, "entry is NULL");
    *entry = NULL;
    DS_CHECK_ARG(err, kid != NULL, "kid is NULL");
    DS_CHECK_ARG(err, kid_valid(kid),
                 "kid must be 1 to 32 letters, digits, '-', '_' or '.'");
    ds_status st = ds__ensure_init(err);
    if (st != DS_OK)
        return st;
    size_t kl = strlen(kid);
    size_t b64_size =
        sodium_base64_ENCODED_LEN(DS_KEY_BYTES, sodium_base64_VARIANT_ORIGINAL);
    ds_crypto_secret *s = ds__secret_new(kl + 1 + b64_size - 1);
    if (!s)
        return ds__error_set(err, DS_ERR_NOMEM,
                             "ds_crypto_generate_key: out of memory");
    unsigned char key[DS_KEY_BYTES];
    randombytes_buf(key, sizeof key);
    memcpy(s->data, kid, kl);
    s->data[kl] = ':';
    sodium_bin2base64(s->data + kl + 1, b64_size, key, sizeof key,
                      sodium_base64_VARIANT_ORIGINAL);
    sodium_memzero(key, sizeof key);
    *entry = s;
    return DS_OK;
}
