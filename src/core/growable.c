/* The size checks and copies of growable caller-allocated structs. */
#include <string.h>

#include "core/growable.h"
#include "core/internal.h"

ds_status ds__growable_check(size_t size, size_t min_size, size_t known_size,
                             const char *type, ds_error *err) {
    if (size == 0)
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s.size is 0: initialise the struct with its "
                             "initialiser (it sets size to sizeof the struct)",
                             type);
    if (size < min_size)
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s.size %zu is smaller than any release of the "
                             "struct (%zu)",
                             type, size, min_size);
    if (size > known_size)
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s.size %zu is larger than this library knows "
                             "(%zu): the program was built against a newer "
                             "header than the library it runs with",
                             type, size, known_size);
    return DS_OK;
}

ds_status ds__growable_in(const void *in, void *local, size_t min_size,
                          size_t known_size, const char *type, ds_error *err) {
    memset(local, 0, known_size);
    if (!in) {
        memcpy(local, &known_size, sizeof known_size);
        return DS_OK;
    }
    size_t size;
    memcpy(&size, in, sizeof size);
    ds_status st = ds__growable_check(size, min_size, known_size, type, err);
    if (st != DS_OK)
        return st;
    memcpy(local, in, size);
    return DS_OK;
}

ds_status ds__growable_at(const void *array, size_t i, void *local,
                          size_t min_size, size_t known_size, const char *type,
                          ds_error *err) {
    size_t stride;
    memcpy(&stride, array, sizeof stride);
    ds_status st = ds__growable_check(stride, min_size, known_size, type, err);
    if (st != DS_OK)
        return st;
    const unsigned char *elem = (const unsigned char *)array + i * stride;
    size_t size;
    memcpy(&size, elem, sizeof size);
    if (size != stride)
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s[%zu].size %zu differs from element 0's (%zu): "
                             "every element of the array needs the same size",
                             type, i, size, stride);
    memset(local, 0, known_size);
    memcpy(local, elem, size);
    return DS_OK;
}

ds_status ds__growable_out_check(void *out, size_t min_size, size_t known_size,
                                 const char *type, ds_error *err) {
    size_t size;
    memcpy(&size, out, sizeof size);
    ds_status st = ds__growable_check(size, min_size, known_size, type, err);
    if (st != DS_OK)
        return st;
    memset((unsigned char *)out + sizeof size, 0, size - sizeof size);
    return DS_OK;
}

void ds__growable_out(void *out, const void *local, size_t known_size) {
    size_t size;
    memcpy(&size, out, sizeof size);
    if (size > known_size)
        size = known_size;
    memcpy((unsigned char *)out + sizeof size,
           (const unsigned char *)local + sizeof size, size - sizeof size);
}

ds_status ds__growable_array(const void *array, size_t count, size_t min_size,
                             size_t known_size, const char *type, void **out,
                             ds_error *err) {
    *out = NULL;
    unsigned char *copy = ds__calloc(count, known_size);
    if (!copy)
        return ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", type);
    for (size_t i = 0; i < count; i++) {
        ds_status st = ds__growable_at(array, i, copy + i * known_size,
                                       min_size, known_size, type, err);
        if (st != DS_OK) {
            ds__free(copy);
            return st;
        }
    }
    *out = copy;
    return DS_OK;
}
