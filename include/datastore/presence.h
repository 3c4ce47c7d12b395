/*
 * datastore/presence.h — who is online in a conversation, who is typing,
 * and events about both over Redis pub/sub.
 *
 *   ds_presence_set_online(p, conversation_id, user_id, &err);  // heartbeat
 *   ds_presence_set_typing(p, conversation_id, user_id, true, &err);
 *   ds_presence_list_online(p, conversation_id, &ids, &n, &err);
 *
 * A user is online in a conversation until online_ttl_ms after their last
 * ds_presence_set_online() (call it as a heartbeat) or until
 * ds_presence_set_offline(); typing likewise with typing_ttl_ms. Times are
 * the Redis server's, so app servers with skewed clocks agree.
 *
 * Events: a change of state (online, offline, typing, typing stopped) is
 * published once, on the transition, to the conversation's channel
 * "<redis_prefix>p:ev:<conversation_id>" as JSON:
 *   {"type":"online","conversation_id":12,"user_id":42,"at_ms":1700000000000}
 * so non-C subscribers can listen too. A presence that merely times out
 * publishes nothing (subscribers keep their own timers or re-list).
 * ds_presence_subscribe() delivers events to a callback on a thread of its
 * own; it reconnects after a Redis restart and then delivers one
 * DS_PRESENCE_RESYNC event, because pub/sub does not replay what was
 * published while it was disconnected: re-list then.
 *
 * Presence is personal data: every entry is registered for the user, and
 * ds_redis_erase_user() removes it.
 *
 * Keys: <redis_prefix>p:on:<conversation_id> and p:ty:<conversation_id>
 * (sorted sets of user ids by expiry). Both expire with their last member.
 *
 * Thread-safety: a ds_presence is safe to share between threads; it
 * borrows its ds_redis, which must outlive it and its subscriptions.
 */
#ifndef DATASTORE_PRESENCE_H
#define DATASTORE_PRESENCE_H

#include "core.h"
#include "redis.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_presence ds_presence;
typedef struct ds_presence_subscription ds_presence_subscription;

typedef struct ds_presence_options {
    size_t size; /* growable, caller-allocated: set by DS_PRESENCE_OPTIONS_INIT */
    int online_ttl_ms; /* 0: the default, 60000 */
    int typing_ttl_ms; /* 0: the default, 6000 */
} ds_presence_options;
#define DS_PRESENCE_OPTIONS_INIT DS_SIZED_INIT(ds_presence_options)

/* Same as DS_PRESENCE_OPTIONS_INIT: size set, every member zero (the
 * defaults). NULL is a no-op. */
DS_EXPORT void ds_presence_options_init(ds_presence_options *opts);

/* Opens presence on `redis`, which it borrows (close presence and its
 * subscriptions first); `opts` (copied) NULL for the defaults. Does not
 * talk to Redis. *out receives the handle, owned by the caller
 * (ds_presence_close), NULL on failure. Errors: DS_ERR_INVALID (NULL redis
 * or out, a TTL <= 0), DS_ERR_NOMEM. */
DS_EXPORT DS_NODISCARD ds_status ds_presence_open(
    ds_redis *redis, const ds_presence_options *opts, ds_presence **out,
    ds_error *err);

/* Frees it. Call it only when no other call on it is in flight, after
 * unsubscribing its subscriptions. NULL is a no-op. */
DS_EXPORT void ds_presence_close(ds_presence *presence);

/* Marks the user online in the conversation for online_ttl_ms (again);
 * publishes DS_PRESENCE_ONLINE if they were not. Ids must be positive.
 * Errors: DS_ERR_INVALID (NULL presence, an id <= 0), DS_ERR_REDIS,
 * DS_ERR_NOMEM. Thread-safe, like every call below on one presence. */
DS_EXPORT DS_NODISCARD ds_status ds_presence_set_online(
    ds_presence *presence, int64_t conversation_id, int64_t user_id,
    ds_error *err);

/* Marks the user offline (and not typing); publishes DS_PRESENCE_OFFLINE if
 * they were online (typing ends silently). Errors as
 * ds_presence_set_online(). */
DS_EXPORT DS_NODISCARD ds_status ds_presence_set_offline(
    ds_presence *presence, int64_t conversation_id, int64_t user_id,
    ds_error *err);

/* Sets or clears the typing indicator (typing_ttl_ms); publishes
 * DS_PRESENCE_TYPING / DS_PRESENCE_TYPING_STOPPED on a change only, so it
 * may be called on every keystroke. Errors as ds_presence_set_online(). */
DS_EXPORT DS_NODISCARD ds_status ds_presence_set_typing(
    ds_presence *presence, int64_t conversation_id, int64_t user_id,
    bool typing, ds_error *err);

/* The users online in the conversation now, ascending. *user_ids is an
 * array the caller owns and frees with ds_free() (NULL when *count is 0);
 * both are NULL/0 on failure. Errors: DS_ERR_INVALID (NULL argument,
 * conversation_id <= 0), DS_ERR_REDIS, DS_ERR_NOMEM. */
DS_EXPORT DS_NODISCARD ds_status ds_presence_list_online(
    ds_presence *presence, int64_t conversation_id, int64_t **user_ids,
    size_t *count, ds_error *err);

/* The users typing in the conversation now, ascending; as above. */
DS_EXPORT DS_NODISCARD ds_status ds_presence_list_typing(
    ds_presence *presence, int64_t conversation_id, int64_t **user_ids,
    size_t *count, ds_error *err);

typedef enum ds_presence_event_type {
    DS_PRESENCE_ONLINE = 0,
    DS_PRESENCE_OFFLINE = 1,
    DS_PRESENCE_TYPING = 2,
    DS_PRESENCE_TYPING_STOPPED = 3,
    /* the subscription reconnected: events may have been missed (ids 0) */
    DS_PRESENCE_RESYNC = 4
} ds_presence_event_type;

typedef struct ds_presence_event {
    ds_presence_event_type type;
    int64_t conversation_id;
    int64_t user_id;
    int64_t at_ms; /* server time of the change, epoch ms */
} ds_presence_event;

/* Called on the subscription's thread, one event at a time. `event` lives
 * for the call. It may call any ds_presence function, including
 * ds_presence_unsubscribe() of its own subscription. */
typedef void (*ds_presence_event_fn)(void *ud, const ds_presence_event *event);

/*
 * Subscribes to the events of `n` conversations (n = 0: of every
 * conversation) on a connection and thread of its own. Returns once Redis
 * confirmed the subscription, so every event published after it returns is
 * delivered. `conversation_ids` is copied. *out receives the subscription,
 * owned by the caller until ds_presence_unsubscribe() (which frees it);
 * NULL on failure. Errors: DS_ERR_INVALID (NULL argument, an id <= 0, more
 * than 1024 conversations), DS_ERR_REDIS (could not subscribe),
 * DS_ERR_NOMEM.
 */
DS_EXPORT DS_NODISCARD ds_status ds_presence_subscribe(
    ds_presence *presence, const int64_t *conversation_ids, size_t n,
    ds_presence_event_fn fn, void *ud, ds_presence_subscription **out,
    ds_error *err);

/* Stops the subscription and frees it: no callback runs after it returns
 * (unless called from the callback itself, which may then finish), and it
 * returns at once even while the subscription is reconnecting, unless a
 * reconnect is resolving the Redis host name (that ends with the
 * resolver's own timeout). Call it once per subscription, from any thread.
 * NULL is a no-op. */
DS_EXPORT void ds_presence_unsubscribe(ds_presence_subscription *sub);

/* Short English name of an event type, e.g. "online" (static). Never NULL. */
DS_EXPORT const char *ds_presence_event_type_str(ds_presence_event_type type);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_PRESENCE_H */
