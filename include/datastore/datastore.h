/*
 * datastore/datastore.h — the whole libdatastore API.
 *
 * Include this one header; each module's header also compiles on its own.
 * Link with `pkg-config --cflags --libs datastore`.
 */
#ifndef DATASTORE_DATASTORE_H
#define DATASTORE_DATASTORE_H

#include "core.h"
#include "config.h"
#include "pool.h"
#include "tx.h"
#include "migrate.h"
#include "sql.h"
#include "crypto.h"
#include "session.h"
#include "redis.h"
#include "cache.h"
#include "ratelimit.h"
#include "presence.h"
#include "queue.h"
#include "users.h"
#include "conversations.h"
#include "messages.h"
#include "teams.h"
#include "settings.h"
#include "events.h"
#include "connections.h"
#include "gdpr.h"
#include "memory.h"
#include "metrics.h"

#endif /* DATASTORE_DATASTORE_H */
