/* Every module's statement table, for ds_schema_check(). A module that
 * runs SQL adds its ds__stmts_<module>() here. */
#include "memory/memory_internal.h"
#include "pool/stmt.h"

const ds__stmt_table ds__stmt_registry[] = {
    {"memory", ds__stmts_memory},
    /* backend variants and the upgrade: see memory_internal.h */
    {"memory.pgvector", ds__stmts_memory_pgvector},
    {"memory.fallback", ds__stmts_memory_fallback},
    {"memory.upgrade", ds__stmts_memory_upgrade},
    {NULL, NULL},
};
