/* Event counters of the pool's hand-over logic, compiled in only for
 * measurement builds (make BUILD=build/count CPPFLAGS=-DDS_POOL_COUNTERS
 * bench): what each query costs in hand-offs, wake-ups, lock collisions,
 * socket checks and clock reads, counted rather than timed so that the
 * figures do not move with the machine's load. ds_pool_close() logs them
 * (info level, module "pool", a line starting "counters:"). In a normal
 * build every macro here is empty. */
#ifndef DS_POOL_COUNTERS_H
#define DS_POOL_COUNTERS_H

#ifdef DS_POOL_COUNTERS
#include <stdatomic.h>
#include <stdint.h>

#define DS_POOL_COUNTER_LIST(X)                                              \
    X(acquires)        /* acquire calls                                 */  \
    X(take_free)       /* idle connection taken, nobody waiting         */  \
    X(take_barge)      /* idle connection taken ahead of waiters        */  \
    X(queued)          /* acquires that went to sleep in the queue      */  \
    X(queued_habit)    /*   of which: no quick-return habit             */  \
    X(queued_budget)   /*   of which: the head's count budget spent     */  \
    X(queued_time)     /*   of which: the head's time budget spent      */  \
    X(queued_busy)     /*   of which: no idle connection at all         */  \
    X(releases)        /* release calls                                 */  \
    X(rel_free)        /* released onto the idle stack, nobody waiting  */  \
    X(rel_keep)        /* kept (idle stack) although others wait        */  \
    X(handoffs)        /* connections handed to a sleeping waiter       */  \
    X(handoff_habit)   /*   released by a thread without the habit      */  \
    X(handoff_budget)  /*   the head's count budget was spent           */  \
    X(handoff_time)    /*   the head's time budget was spent            */  \
    X(handoff_last)    /*   no other connection was leased              */  \
    X(handoff_wait_us) /* summed: hand-off until the waiter ran again   */  \
    X(head_polls)      /* the poller woke on its timer                  */  \
    X(head_poll_takes) /*   of which found a connection left idle       */  \
    X(head_wakes)      /* a waiter woken only to become the poller      */  \
    X(stale_handoffs)  /* connections left idle, handed over by a thread
                          passing through the pool                      */  \
    X(waiter_wakeups)  /* returns from a waiter's condition wait        */  \
    X(lock_contended)  /* pool mutex found taken (trylock failed)       */  \
    X(alive_checks)    /* socket checks of an idle connection (poll())  */  \
    X(clock_reads)     /* monotonic clock reads in the pool             */

#define DS_POOL_COUNTER_FIELD(name) atomic_uint_fast64_t name;
typedef struct ds_pool_counters {
    DS_POOL_COUNTER_LIST(DS_POOL_COUNTER_FIELD)
} ds_pool_counters;
#undef DS_POOL_COUNTER_FIELD

/* One process-wide set: the pool logs the difference over its life. */
extern ds_pool_counters ds__pool_counters;

#define DS_POOL_COUNT(name) DS_POOL_COUNT_N(name, 1)
#define DS_POOL_COUNT_N(name, n)                                             \
    atomic_fetch_add_explicit(&ds__pool_counters.name, (uint_fast64_t)(n),   \
                              memory_order_relaxed)
#else
#define DS_POOL_COUNT(name) ((void)0)
#define DS_POOL_COUNT_N(name, n) ((void)0)
#endif

#endif
