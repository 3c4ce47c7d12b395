/* Scratch files and the ds-migrate command line: see dt_files.h. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dt_files.h"

char *dt_temp_dir(const char *tag) {
    const char *base = dt_env_opt("TMPDIR");
    char tmpl[PATH_MAX];
    snprintf(tmpl, sizeof tmpl, "%s/dt_%s_XXXXXX", base ? base : P_tmpdir, tag);
    char *d = strdup(tmpl);
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(mkdtemp(d));
    return d;
}

void dt_write_file(const char *dir, const char *name, const char *text) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    fclose(f);
}

void dt_rm_dir(char *dir) {
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    free(dir);
}

const char *dt_ds_migrate_path(void) {
    static char path[PATH_MAX + 32];
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert_int_gt(n, 0);
    self[n] = '\0';
    for (int up = 0; up < 2; up++) { /* <build>/tests/ds-tests */
        char *slash = strrchr(self, '/');
        ck_assert_ptr_nonnull(slash);
        *slash = '\0';
    }
    snprintf(path, sizeof path, "%s/bin/ds-migrate", self);
    ck_assert_msg(access(path, X_OK) == 0, "%s is not built", path);
    return path;
}

int dt_run_capture(const char *cmd, char **out) {
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (n + 1 == cap) {
            char *grown = realloc(buf, cap *= 2);
            ck_assert_ptr_nonnull(grown);
            buf = grown;
        }
    }
    buf[n] = '\0';
    int rc = pclose(p);
    *out = buf;
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}
