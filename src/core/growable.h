/*
 * Growable caller-allocated structs (docs/abi.md, "Growable structs").
 * Every module checks and reads them through these, so the rule is the
 * same everywhere:
 *   - the struct's leading `size_t size` is what the caller compiled with;
 *   - a size below the first release of the struct (`min_size`), or above
 *     what this library knows (`known_size`), is DS_ERR_INVALID;
 *   - the library reads a private copy: the caller's first `size` bytes,
 *     zero beyond, so a member the caller's header did not have reads as
 *     zero, which every member defines as its default;
 *   - out-structs (stats) are filled in a private copy and only the first
 *     `size` bytes go back to the caller.
 * Never installed.
 */
#ifndef DS_CORE_GROWABLE_H
#define DS_CORE_GROWABLE_H

#include <stddef.h>

#include "datastore/core.h"

/* Checks `size` (the caller's struct's size) for a struct of C type name
 * `type` (in messages) whose first release was `min_size` bytes and whose
 * current layout is `known_size` bytes. */
ds_status ds__growable_check(size_t size, size_t min_size, size_t known_size,
                             const char *type, ds_error *err);

/* Copies `in` (a caller's struct, may be NULL) into `local` (known_size
 * bytes): NULL gives all zeros (all defaults) with local->size set; else
 * the caller's size is checked and its bytes copied, the rest zeroed. */
ds_status ds__growable_in(const void *in, void *local, size_t min_size,
                          size_t known_size, const char *type, ds_error *err);

/* Element `i` of a caller's array of growable structs: the stride is the
 * size of element 0 and every element must carry the same size. Copies it
 * into `local` like ds__growable_in. */
ds_status ds__growable_at(const void *array, size_t i, void *local,
                          size_t min_size, size_t known_size, const char *type,
                          ds_error *err);

/* A copy of a caller's array of `count` growable structs, each element
 * read like ds__growable_at, in this library's layout (ds__free it). */
ds_status ds__growable_array(const void *array, size_t count, size_t min_size,
                             size_t known_size, const char *type, void **out,
                             ds_error *err);

/* Checks the size of a caller's out-struct `out` (non-NULL) and zeroes
 * what the caller has of it beyond `size`. */
ds_status ds__growable_out_check(void *out, size_t min_size, size_t known_size,
                                 const char *type, ds_error *err);
/* Copies the library's `local` (known_size bytes, filled) into `out`,
 * only as many bytes as the caller's size says; out->size is kept. */
void ds__growable_out(void *out, const void *local, size_t known_size);

/* The usual call: the first release of every struct is its 1.0 layout
 * (this one). A member appended after 1.0 gives the struct a new
 * sizeof, and its first-release size stays written here by hand. */
#define DS__IN(in, local, T, err)                                              \
    ds__growable_in((in), (local), sizeof(T), sizeof(T), #T, (err))
#define DS__AT(array, i, local, T, err)                                        \
    ds__growable_at((array), (i), (local), sizeof(T), sizeof(T), #T, (err))
#define DS__ARRAY(array, count, out, T, err)                                   \
    ds__growable_array((array), (count), sizeof(T), sizeof(T), #T,             \
                       (void **)(out), (err))
#define DS__OUT_CHECK(out, T, err)                                             \
    ds__growable_out_check((out), sizeof(T), sizeof(T), #T, (err))

#endif
