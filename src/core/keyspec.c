/* Parsing of key rings written as "kid:base64key,kid:base64key". The
 * decoded bytes only ever exist in sodium_malloc memory, wiped at once. */
#include <sodium.h>
#include <string.h>

#include "core/internal.h"

static bool kid_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

static bool decode_key(const char *b64, size_t len, unsigned char *key) {
    static const int variants[] = {
        sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
        sodium_base64_VARIANT_URLSAFE, sodium_base64_VARIANT_URLSAFE_NO_PADDING};
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        size_t bin_len = 0;
        const char *end = NULL;
        if (sodium_base642bin(key, DS_KEY_BYTES, b64, len, NULL, &bin_len, &end,
                              variants[i]) == 0 &&
            end == b64 + len && bin_len == DS_KEY_BYTES)
            return true;
    }
    sodium_memzero(key, DS_KEY_BYTES);
    return false;
}

ds_status ds__keyspec_parse(const char *spec, const char *varname,
                            ds__key_entry_fn fn, void *ud, ds_error *err) {
    if (!spec || !*spec)
        return ds__error_set(err, DS_ERR_CONFIG,
                             "%s: empty; expected kid:base64key[,kid:base64key...]",
                             varname);
    ds_status st = ds__ensure_init(err);
    if (st != DS_OK)
        return st;
    unsigned char *key = sodium_malloc(DS_KEY_BYTES);
    if (!key)
        return ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", varname);
    char kids[64][DS_KID_MAX + 1];
    size_t index = 0;
    const char *p = spec;
    st = DS_OK;
    while (st == DS_OK) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *entry_end = p + strcspn(p, ",");
        const char *colon = memchr(p, ':', (size_t)(entry_end - p));
        if (!colon || colon == p || colon - p > DS_KID_MAX) {
            st = ds__error_set(err, DS_ERR_CONFIG,
                               "%s: entry %zu: expected kid:base64key with a key "
                               "id of 1 to %d characters",
                               varname, index + 1, DS_KID_MAX);
            break;
        }
        char kid[DS_KID_MAX + 1];
        memcpy(kid, p, (size_t)(colon - p));
        kid[colon - p] = '\0';
        for (const char *c = kid; *c; c++)
            if (!kid_char(*c)) {
                st = ds__error_set(err, DS_ERR_CONFIG,
                                   "%s: entry %zu: key id may hold only "
                                   "letters, digits, '-', '_' and '.'",
                                   varname, index + 1);
                break;
            }
        if (st != DS_OK)
            break;
        for (size_t i = 0; i < index && i < 64; i++)
            if (strcmp(kids[i], kid) == 0) {
                st = ds__error_set(err, DS_ERR_CONFIG,
                                   "%s: entry %zu: key id '%s' appears twice",
                                   varname, index + 1, kid);
                break;
            }
        if (st != DS_OK)
            break;
        if (index >= 64) {
            st = ds__error_set(err, DS_ERR_CONFIG,
                               "%s: more than 64 keys", varname);
            break;
        }
        strcpy(kids[index], kid);
        const char *b64 = colon + 1;
        size_t b64_len = (size_t)(entry_end - b64);
        while (b64_len && (b64[b64_len - 1] == ' ' || b64[b64_len - 1] == '\t'))
            b64_len--;
        if (!decode_key(b64, b64_len, key)) {
            st = ds__error_set(err, DS_ERR_CONFIG,
                               "%s: entry %zu (key id '%s'): the key must be "
                               "%d bytes in base64",
                               varname, index + 1, kid, DS_KEY_BYTES);
            break;
        }
        if (fn)
            st = fn(ud, kid, key, index, err);
        sodium_memzero(key, DS_KEY_BYTES);
        index++;
        if (*entry_end != ',')
            break;
        p = entry_end + 1;
    }
    sodium_free(key);
    return st;
}
