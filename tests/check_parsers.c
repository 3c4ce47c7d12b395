/* Parsers of outside input, one case per input found by the fuzz targets
 * in fuzz/ (make fuzz): each failure they found stays fixed here. */
#include <string.h>

#include "migrate/migrate_internal.h"
#include "test_util.h"

/* ---- migration file names -------------------------------------------------- */

START_TEST(test_parsers_migration_pair_spells_version_once) {
    /* Found by fuzz_migrate_files: 00003_x.up.sql paired with
     * 0003_x.down.sql because both parse to version 3. */
#define RAW(name, text) {name, text, sizeof(text) - 1}
    ds__raw_file two_spellings[] = {RAW("00003_x.up.sql", "SELECT 1;"),
                                    RAW("0003_x.down.sql", "SELECT 2;")};
    ds__raw_file one_spelling[] = {RAW("0003_x.up.sql", "SELECT 1;"),
                                   RAW("0003_x.down.sql", "SELECT 2;")};
#undef RAW
    ds__migration_set *set = (ds__migration_set *)&set;
    ds_error err = {0};
    ds_status st = ds__migration_set_build(two_spellings, 2, &set, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_null(set);
    ck_assert_ptr_nonnull(strstr(err.message, "00003_x.up.sql"));
    ck_assert_ptr_nonnull(strstr(err.message, "0003_x.down.sql"));
    ck_assert_ptr_nonnull(strstr(err.message, "00003_x.down.sql"));

    st = ds__migration_set_build(one_spelling, 2, &set, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(set->count, 1);
    ck_assert_int_eq(set->files[0].version, 3);
    ck_assert_str_eq(set->files[0].down_file, "0003_x.down.sql");
    ds__migration_set_free(set);
}
END_TEST

Suite *ds_test_parsers_suite(void) {
    Suite *s = suite_create("parsers");
    TCase *tc = tcase_create("migration_files");
    tcase_add_test(tc, test_parsers_migration_pair_spells_version_once);
    suite_add_tcase(s, tc);
    return s;
}
