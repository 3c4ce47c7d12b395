/*
 * The top-n heap of the search stages (search.c, ivf.c): the n largest
 * lower bounds seen, so the n-th is at hand to prune against.
 */
#include "memory/memory_internal.h"

/* A min-heap of the `cap` largest values seen; its root is the cap-th. */
void ds__topn_push(float *h, size_t *len, size_t cap, float v) {
    if (*len < cap) {
        size_t i = (*len)++;
        h[i] = v;
        while (i > 0 && h[(i - 1) / 2] > h[i]) {
            float t = h[i];
            h[i] = h[(i - 1) / 2];
            h[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
        return;
    }
    if (v <= h[0])
        return;
    h[0] = v;
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *len && h[l] < h[m])
            m = l;
        if (r < *len && h[r] < h[m])
            m = r;
        if (m == i)
            break;
        float t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}
