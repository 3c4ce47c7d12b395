/* Clustered facts (clustered.h) written through the library in one batch:
 * the data the lists' and the packed codes' suites and the plan test
 * search, maintain and EXPLAIN. */
#ifndef DS_TEST_MEMORY_CLUSTERED_H
#define DS_TEST_MEMORY_CLUSTERED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clustered.h"
#include "datastore/datastore.h"

/*
 * Adds `n` facts of m->dim dimensions with ds_memory_add_batch(), failing
 * the test on error. Fact i is drawn from profiles[w] and owned by
 * users[w], where w = pattern[i % npattern] (a pattern interleaves the
 * users' facts in the table); its kind is "note" when i % 3 == 0, else
 * "fact". Each array the caller passes (NULL: not wanted, except `ids`)
 * receives n entries: the unit vectors (n x dim), owners, ids written and
 * whether each is a note.
 */
void mc_add_clustered(ds_memory *mem, cl_model *m, const cl_user *profiles,
                      const int64_t *users, const int *pattern,
                      size_t npattern, size_t n, const char *content,
                      float *vectors, int64_t *owners, int64_t *ids,
                      bool *is_note);

#endif
