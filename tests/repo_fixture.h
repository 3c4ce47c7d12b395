/* The fixture the repository suites (tests/check_repo*.c) share: a freshly
 * migrated database per test, a pool on it either direct (prepared
 * statements) or through PgBouncer in transaction mode, and the helpers
 * several entities' tests use. */
#ifndef DS_TEST_REPO_FIXTURE_H
#define DS_TEST_REPO_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/internal.h"
#include "pool/stmt.h"
#include "redis/redis_internal.h"
#include "test_util.h"

/* Direct URL of this test's database, and the pool the test uses (direct
 * or through the pooler); set by the fixture's set-up. */
extern char *db;
extern ds_pool *pool;

/* Set-up on a direct connection, and the teardown of either set-up. */
void repo_setup_direct(void);
void repo_teardown(void);

/* A group of tests registered twice by dt_repo_suite(): as case `name`
 * (direct) and as `pooler_<name>` (through PgBouncer, pooler mode). */
typedef struct dt_repo_group {
    const char *name;
    void (*add)(TCase *tc);
} dt_repo_group;
Suite *dt_repo_suite(const char *suite, const dt_repo_group *groups, size_t n);

/* The first column of `fmt` (one %lld: `id`) run on the test's database. */
long long count_sql(const char *fmt, long long id);
/* A new user / conversation; fails the test on error. */
int64_t new_user(const char *email);
int64_t new_conversation(int64_t owner);
/* Two threads update team (or user setting) `id` for 20 rounds, reading
 * the same version each round: exactly one wins each round. */
void run_occ(int64_t id, bool setting, int64_t *final_version);
/* A crypto context with one fresh key `kid`. */
ds_crypto *test_crypto(const char *kid);
/* The generic plan of the named list statement uses `index` in order. */
void assert_list_plan(const char *stmt, const char *index, const char *args);

#endif
