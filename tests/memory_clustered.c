#include "memory_clustered.h"

#include <stdlib.h>

#include "test_util.h"

void mc_add_clustered(ds_memory *mem, cl_model *m, const cl_user *profiles,
                      const int64_t *users, const int *pattern,
                      size_t npattern, size_t n, const char *content,
                      float *vectors, int64_t *owners, int64_t *ids,
                      bool *is_note) {
    size_t dim = m->dim;
    ds_memory_new_fact *batch = calloc(n ? n : 1, sizeof *batch);
    float *own = vectors ? NULL : malloc((n ? n : 1) * dim * sizeof *own);
    float *v = vectors ? vectors : own;
    ck_assert_ptr_nonnull(batch);
    ck_assert_ptr_nonnull(v);
    for (size_t i = 0; i < n; i++) {
        int who = pattern[i % npattern];
        bool note = i % 3 == 0;
        cl_fact(m, &profiles[who], v + i * dim);
        if (owners)
            owners[i] = users[who];
        if (is_note)
            is_note[i] = note;
        batch[i] = (ds_memory_new_fact){.size = sizeof(ds_memory_new_fact),
                                        .user_id = users[who],
                                        .kind = note ? "note" : "fact",
                                        .content = content,
                                        .importance = 0.5,
                                        .embedding = v + i * dim,
                                        .dim = dim};
    }
    ds_error err = {0};
    ds_status st = ds_memory_add_batch(mem, batch, n, ids, &err);
    ck_assert_ds_ok(st, err);
    free(batch);
    free(own);
}
