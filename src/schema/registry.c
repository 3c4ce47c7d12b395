/* Every module's statement table, for ds_migrate_check_schema(). A module that
 * runs SQL adds its ds__stmts_<module>() here. The schema check's own
 * look-up is added by the check itself, so that this list and the check do
 * not depend on each other. */
#include "migrate/migrate_internal.h"
#include "crypto/crypto_internal.h"
#include "memory/memory_internal.h"
#include "pool/stmt.h"
#include "repo/connection_tokens.h"
#include "repo/repo_internal.h"
#include "session/session_internal.h"

const ds__stmt_table ds__stmt_registry[] = {
    {"migrate", ds__stmts_migrate},
    {"crypto", ds__stmts_crypto},
    {"session", ds__stmts_session},
    {"users", ds__stmts_users},
    {"conversations", ds__stmts_conversations},
    {"messages", ds__stmts_messages},
    {"teams", ds__stmts_teams},
    {"settings", ds__stmts_settings},
    {"events", ds__stmts_events},
    {"connections", ds__stmts_connections},
    {"gdpr", ds__stmts_gdpr},
    {"memory", ds__stmts_memory},
    /* backend variants and the upgrade: see memory_internal.h */
    {"memory.pgvector", ds__stmts_memory_pgvector},
    {"memory.fallback", ds__stmts_memory_fallback},
    {"memory.upgrade", ds__stmts_memory_upgrade},
    {"memory.ivf", ds__stmts_memory_ivf},
    {"memory.blocks", ds__stmts_memory_blocks},
    {NULL, NULL},
};
