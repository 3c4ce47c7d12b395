/* The one test runner: every tests/check_<module>.c contributes a suite.
 * Fork mode (Check's default) keeps a crash inside its test; focus with
 * CK_RUN_SUITE=<module> and CK_RUN_CASE=<case>. */
#include <check.h>
#include <stdlib.h>

#include "test_suites.h"

int main(void) {
    SRunner *sr = srunner_create(NULL);
#define X(fn) srunner_add_suite(sr, fn());
    DS_TEST_SUITES
#undef X
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
