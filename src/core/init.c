/* One-time initialisation and the runtime version. */
#include <pthread.h>
#include <sodium.h>

#include "core/internal.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_result = -1;

static void do_init(void) { init_result = sodium_init() < 0 ? -1 : 0; }

ds_status ds__ensure_init(ds_error *err) {
    pthread_once(&init_once, do_init);
    if (init_result != 0)
        return ds__error_set(err, DS_ERR_INTERNAL,
                             "ds_init: libsodium failed to initialise");
    return DS_OK;
}

DS_EXPORT ds_status ds_init(ds_error *err) { return ds__ensure_init(err); }

DS_EXPORT const char *ds_version(void) { return DS_VERSION_STRING; }

DS_EXPORT uint32_t ds_version_number(void) { return DS_VERSION_NUMBER; }
