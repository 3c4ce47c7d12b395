/* Every module's statement table, for ds_schema_check(). A module that
 * runs SQL adds its ds__stmts_<module>() here. */
#include "crypto/crypto_internal.h"
#include "pool/stmt.h"
#include "session/session_internal.h"

const ds__stmt_table ds__stmt_registry[] = {
    {"crypto", ds__stmts_crypto},
    {"session", ds__stmts_session},
    {NULL, NULL},
};
