/* Every module's statement table, for ds_schema_check(). A module that
 * runs SQL adds its ds__stmts_<module>() here. */
#include "migrate/migrate_internal.h"
#include "pool/stmt.h"

const ds__stmt_table ds__stmt_registry[] = {
    {"migrate", ds__stmts_migrate},
    {"schema", ds__stmts_schema},
    {NULL, NULL},
};
