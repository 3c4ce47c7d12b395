/*
 * The connection pool.
 *
 * One mutex guards the pool; connecting, health checks and closing happen
 * outside it. A sub-pool per server (primary, each replica) keeps a LIFO
 * stack of idle connections and a FIFO queue of waiters. Waiters are
 * served in arrival order, and a discarded connection hands its slot to the
 * oldest, so a slot is never lost.
 *
 * When threads outnumber connections, handing every released connection
 * to the oldest waiter costs a thread wake-up and a sleep per query (16
 * threads on 4 connections ran at a quarter of 4 raw connections on two
 * cores), and the connection stays unused until the woken thread runs.
 * So a thread that comes straight back for another connection may keep
 * the one it releases (barging, as in Go's sync.Mutex and HikariCP's
 * ConcurrentBag, whose threads reuse their own connection first), within
 * a budget: the oldest waiter is overtaken for at most pool_overtake_ms
 * (and by at most DS_POOL_BARGE_MAX such acquisitions, a bound that holds
 * whatever the timing), then the next release hands it the connection.
 * A waiter is thus served within (waiters ahead of it + 1) times that
 * window plus the hand-offs to the waiters ahead of it; the stats report
 * the longest wait and the most any waiter was overtaken.
 *
 * The window's length is the trade between throughput and the longest
 * wait: each hand-off moves a connection to a thread that has been asleep,
 * and costs far more than its wake-up (docs/pool.md, "Choosing the window"
 * and "Long-lived threads", has the measurements and their limits; "The
 * server on CPUs of its own" why a server sharing the client's CPUs costs
 * more). 0 turns barging off: strict arrival order.
 *
 * "Comes straight back" is learnt per thread: a release keeps the
 * connection only when this thread's recent releases were followed by its
 * next acquire within QUICK_RETURN_US. A thread that works between queries
 * hands its connection over at once, so no connection sits idle while
 * others wait. If a keeper does not come back after all, its connection
 * goes to the oldest waiter: handed over by the next thread to pass
 * through the pool once it has been idle HEAD_POLL_US, or found by the
 * one waiter that polls (every HEAD_POLL_US, growing to POLL_MAX_US while
 * it finds nothing), which covers a pool whose users all stopped at once.
 * The other waiters sleep until served: no thread is woken only to watch.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#define DS_POOL_SOURCE /* this file may see the pool's structures */
#include "core/growable.h"
#include "pool/pool_counters.h"
#include "pool/pool_internal.h"

#define MODULE "pool"

#ifdef DS_POOL_COUNTERS
ds_pool_counters ds__pool_counters;
#endif

static inline int64_t pool_now(void) {
    DS_POOL_COUNT(clock_reads);
    return ds__now_us();
}

static inline void pool_lock(ds_pool *p) {
#ifdef DS_POOL_COUNTERS
    if (pthread_mutex_trylock(&p->mu) == 0)
        return;
    DS_POOL_COUNT(lock_contended);
#endif
    pthread_mutex_lock(&p->mu);
}

/* ---- wait-time histogram (4 sub-buckets per power of two) ------------- */

static int wait_bucket(int64_t us) {
    if (us < 4)
        return us < 0 ? 0 : (int)us;
    int log2 = 63 - __builtin_clzll((unsigned long long)us);
    int sub = (int)((us >> (log2 - 2)) & 3);
    int b = log2 * 4 + sub - 4;
    return b >= DS_WAIT_BUCKETS ? DS_WAIT_BUCKETS - 1 : b;
}

static int64_t bucket_upper(int b) {
    if (b < 4)
        return b;
    int log2 = (b + 4) / 4, sub = (b + 4) % 4;
    return ((int64_t)(4 + sub + 1) << (log2 - 2)) - 1;
}

static void record_wait(ds_pool *p, int64_t us) {
    p->wait_hist[wait_bucket(us)]++;
    if (us > p->wait_max_us)
        p->wait_max_us = us;
}

static int64_t wait_percentile(const ds_pool *p, double q) {
    uint64_t total = 0;
    for (int i = 0; i < DS_WAIT_BUCKETS; i++)
        total += p->wait_hist[i];
    if (!total)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)total);
    if (rank >= total)
        rank = total - 1;
    uint64_t seen = 0;
    for (int i = 0; i < DS_WAIT_BUCKETS; i++) {
        seen += p->wait_hist[i];
        if (seen > rank) {
            int64_t up = bucket_upper(i);
            return up < p->wait_max_us ? up : p->wait_max_us;
        }
    }
    return p->wait_max_us;
}

/* ---- connections ----------------------------------------------------- */

static void conn_close(ds_conn *c) {
    if (!c)
        return;
    PQfinish(c->pg);
    ds__conn_free_cache(c);
    ds__free(c);
}

static int64_t lifetime_deadline(const ds_pool *p, int64_t created) {
    if (!p->lifetime_us)
        return 0;
    /* Up to 10% jitter so connections opened together do not all expire
     * (and reconnect) in the same instant. */
    int64_t jitter_span = p->lifetime_us / 10;
    int64_t jitter = jitter_span > 0
                         ? (int64_t)ds__random_uniform(
                               (uint32_t)(jitter_span > UINT32_MAX
                                              ? UINT32_MAX
                                              : jitter_span))
                         : 0;
    return created + p->lifetime_us - jitter;
}

/* Is an idle connection still good? No round trip: a server restart or
 * pg_terminate_backend() leaves an error message and EOF on the socket, so
 * a readable socket is consumed and the status re-checked. */
static bool conn_alive(ds_conn *c) {
    if (PQstatus(c->pg) != CONNECTION_OK)
        return false;
    DS_POOL_COUNT(alive_checks);
    /* A terminated backend sends a FATAL message and then EOF: the first
     * read takes the message, the next one sees EOF, so keep reading
     * while the socket stays readable (bounded). */
    for (int round = 0; round < 4; round++) {
        struct pollfd pfd = {.fd = PQsocket(c->pg), .events = POLLIN};
        if (pfd.fd < 0)
            return false;
        if (poll(&pfd, 1, 0) <= 0)
            break;
        if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))
            return false;
        if (!PQconsumeInput(c->pg) || PQstatus(c->pg) != CONNECTION_OK)
            return false;
        PGnotify *note;
        while ((note = PQnotifies(c->pg)) != NULL)
            PQfreemem(note);
    }
    return PQstatus(c->pg) == CONNECTION_OK &&
           PQtransactionStatus(c->pg) == PQTRANS_IDLE;
}

/* A connection given back less than this long ago skips the socket check:
 * the check is a system call (about a microsecond in a VM) and a busy pool
 * reuses connections within microseconds. A backend killed inside the
 * window shows as a retryable error on first use (the same as one killed
 * mid-query) and is replaced. HikariCP's aliveBypassWindow is the model. */
#define ALIVE_BYPASS_US 250000

static bool conn_usable(const ds_pool *p, ds_conn *c, int64_t now) {
    (void)p;
    if (c->discard || PQstatus(c->pg) != CONNECTION_OK)
        return false;
    if (c->expires_us && now >= c->expires_us)
        return false;
    return now - c->idle_since_us < ALIVE_BYPASS_US || conn_alive(c);
}

/* Starts a non-blocking connect to sub-pool `s`; the handshake is left to
 * conn_handshake. */
static ds_status conn_start(ds_pool *p, ds_subpool *s, ds_conn **out,
                            ds_error *err) {
    *out = NULL;
    ds_conn *c = ds__calloc(1, sizeof *c);
    if (!c)
        return ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", s->label);
    /* A host that silently drops packets must not hold a call for the
     * kernel's default of many minutes: data unacknowledged for 30 s, or an
     * idle link whose keepalive probes go unanswered for about a minute,
     * breaks the connection (then a retryable error, and a replacement).
     * Given before dbname, so that the URL's own values win. */
    const char *keys[] = {"fallback_application_name", "tcp_user_timeout",
                          "keepalives", "keepalives_idle",
                          "keepalives_interval", "keepalives_count",
                          "dbname", NULL};
    const char *vals[] = {p->application_name, "30000", "1", "30", "10", "3",
                          s->url, NULL};
    c->pg = PQconnectStartParams(keys, vals, 1);
    if (!c->pg) {
        ds__free(c);
        return ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", s->label);
    }
    c->pool = p;
    c->sub = s;
    c->pooler = p->pooler;
    *out = c;
    return DS_OK;
}

/* Drives the handshake with PQconnectPoll until done, failed or past
 * `deadline_us`; returns libpq's last polling status. */
static PostgresPollingStatusType conn_handshake(ds_conn *c,
                                                int64_t deadline_us,
                                                bool *timed_out) {
    PostgresPollingStatusType ps = PGRES_POLLING_WRITING;
    *timed_out = false;
    if (PQstatus(c->pg) == CONNECTION_BAD)
        ps = PGRES_POLLING_FAILED;
    while (ps != PGRES_POLLING_OK && ps != PGRES_POLLING_FAILED) {
        int64_t left = deadline_us - pool_now();
        if (left <= 0) {
            *timed_out = true;
            break;
        }
        struct pollfd pfd = {.fd = PQsocket(c->pg),
                             .events = ps == PGRES_POLLING_READING ? POLLIN
                                                                    : POLLOUT};
        int n = poll(&pfd, 1, (int)((left + 999) / 1000));
        if (n < 0 && errno != EINTR) {
            ps = PGRES_POLLING_FAILED;
            break;
        }
        if (n == 0)
            continue; /* re-check the deadline */
        ps = PQconnectPoll(c->pg);
    }
    return ps;
}

/* The handshake's outcome as a status: any failure is DS_ERR_CONNECTION,
 * with the password scrubbed from the server's message. */
static ds_status conn_handshake_status(ds_conn *c, ds_subpool *s,
                                       PostgresPollingStatusType ps,
                                       bool timed_out, ds_error *err) {
    ds_status st = DS_OK;
    if (timed_out) {
        st = ds__error_set(err, DS_ERR_CONNECTION,
                           "%s: timed out connecting to the server", s->label);
    } else if (ps == PGRES_POLLING_FAILED || PQstatus(c->pg) != CONNECTION_OK) {
        st = ds__pg_error(NULL, c->pg, NULL, s->label, err);
        if (st != DS_ERR_CONNECTION && err) {
            /* Connect-time server errors (bad password, no such database)
             * are still "could not connect". */
            err->code = st = DS_ERR_CONNECTION;
        }
        ds__error_scrub(err, s->password);
    }
    return st;
}

/* Refuses a read-only server for a sub-pool that needs a writable one. */
static ds_status conn_check_writable(ds_conn *c, ds_subpool *s,
                                     ds_error *err) {
    bool ro_known;
    if (s->needs_writable && ds__server_read_only(c->pg, &ro_known)) {
        /* A standby, or the old primary of a failover coming back
         * read-only: retrying finds the new primary when the URL lists
         * every host with target_session_attrs=read-write. */
        return ds__error_set(err, DS_ERR_CONNECTION,
                             "%s: the server is read-only (in recovery or "
                             "default_transaction_read_only); a writable "
                             "primary is required (list every host with "
                             "target_session_attrs=read-write to follow a "
                             "failover, or set target_session_attrs=any for "
                             "a read-only pool)",
                             s->label);
    }
    return DS_OK;
}

/* Readies a new connection for use: notices, lifetime, session settings
 * and the caller's after-connect hook. */
static ds_status conn_setup(ds_pool *p, ds_subpool *s, ds_conn *c,
                            ds_error *err) {
    ds_status st = DS_OK;
    PQsetNoticeReceiver(c->pg, ds__conn_notice, c);
    c->created_us = pool_now();
    c->expires_us = lifetime_deadline(p, c->created_us);
    /* Session settings are unsafe behind a transaction-mode pooler:
     * the next statement may run on another server connection. */
    if (!p->pooler && p->statement_timeout_ms > 0) {
        char sql[64];
        snprintf(sql, sizeof sql, "SET statement_timeout = %d",
                 p->statement_timeout_ms);
        st = ds__conn_exec_simple(c, sql, err);
    }
    if (st == DS_OK && p->after_connect) {
        ds_error hook_err = {0};
        st = p->after_connect(p->after_connect_ud, c, &hook_err);
        if (st != DS_OK) {
            if (!hook_err.code)
                ds__error_set(&hook_err, st, "after-connect hook failed");
            if (err)
                *err = hook_err;
            ds__error_prefix(err, "%s: after-connect hook", s->label);
        }
    }
    return st;
}

/* Opens a connection to sub-pool `s`, bounded by `deadline_us` (monotonic).
 * libpq's own connect_timeout has whole-second granularity, so the
 * handshake is driven with PQconnectPoll here. */
static ds_status conn_open(ds_pool *p, ds_subpool *s, int64_t deadline_us,
                           ds_conn **out, ds_error *err) {
    *out = NULL;
    ds_conn *c;
    ds_status st = conn_start(p, s, &c, err);
    if (st != DS_OK)
        return st;
    bool timed_out;
    PostgresPollingStatusType ps = conn_handshake(c, deadline_us, &timed_out);
    st = conn_handshake_status(c, s, ps, timed_out, err);
    if (st == DS_OK)
        st = conn_check_writable(c, s, err);
    if (st == DS_OK)
        st = conn_setup(p, s, c, err);
    if (st != DS_OK) {
        conn_close(c);
        ds__log(DS_LOG_WARN, MODULE, "%s: connect failed: %s", s->label,
                err ? err->message : ds_status_str(st));
        return st;
    }
    ds__log(DS_LOG_DEBUG, MODULE, "%s: opened a connection", s->label);
    *out = c;
    return DS_OK;
}

/* ---- handing connections and slots around (lock held) ------------------ */

/* The barge budget is per head of the queue: a new head starts afresh. */
static ds_waiter *pop_waiter(ds_subpool *s) {
    ds_waiter *w = s->wait_head;
    if (w) {
        if (s->poller == w)
            s->poller = NULL;
        s->wait_head = w->next;
        if (!s->wait_head)
            s->wait_tail = NULL;
        s->head_barged = 0;
        s->head_since_us = pool_now();
        w->overtaken = s->barges - w->barges_at_enqueue;
    }
    return w;
}

static void remove_waiter(ds_subpool *s, ds_waiter *w) {
    ds_waiter **pp = &s->wait_head, *prev = NULL;
    while (*pp && *pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        if (s->poller == w)
            s->poller = NULL;
        if (w == s->wait_head) {
            s->head_barged = 0;
            s->head_since_us = pool_now();
        }
        w->overtaken = s->barges - w->barges_at_enqueue;
        *pp = w->next;
        if (s->wait_tail == w)
            s->wait_tail = prev;
    }
}

static void push_idle_locked(ds_subpool *s, ds_conn *c) {
    c->next = s->idle;
    s->idle = c;
    s->idle_n++;
}

/* A live connection goes to the oldest waiter, else onto the idle stack. */
static void give_conn_locked(ds_subpool *s, ds_conn *c) {
    /* "released at", which the liveness bypass window is measured from */
    c->idle_since_us = pool_now();
    ds_waiter *w = pop_waiter(s);
    if (w) {
        w->conn = c;
        w->done = true;
        w->handed_us = c->idle_since_us;
        DS_POOL_COUNT(handoffs);
        pthread_cond_signal(&w->cond);
        return;
    }
    push_idle_locked(s, c);
}

/* A freed slot goes to the oldest waiter (to open a connection in), else
 * the sub-pool shrinks. */
static void give_slot_locked(ds_subpool *s) {
    ds_waiter *w = pop_waiter(s);
    if (w) {
        w->grant = true;
        w->done = true;
        pthread_cond_signal(&w->cond);
        return;
    }
    s->total--;
}

static void pool_free(ds_pool *p);

/* Lease accounting: the last lease of a closed pool frees it. */
static void lease_end_locked(ds_pool *p, bool *free_pool) {
    p->leased--;
    *free_pool = p->closing && p->leased == 0;
}

/* ---- acquire / release ------------------------------------------------ */

/* The connection this thread released last. Handing it back to the same
 * thread keeps each client thread paired with one server backend, so the
 * kernel keeps waking the pair on the same CPU; under a virtual machine a
 * cross-CPU wake-up is an expensive IPI, and with plain LIFO the pairs
 * reshuffle constantly (measured: about 20% of throughput with 8 threads on
 * 2 cores). Only compared as an address, never dereferenced, so a stale
 * value is harmless. */
static _Thread_local const ds_conn *last_released;

/* Takes this thread's previous connection if it is idle, else the top of
 * the stack (LIFO keeps a hot set). Lock held; s->idle is not empty. */
static ds_conn *take_own_idle_locked(ds_subpool *s) {
    ds_conn **pp = &s->idle;
    for (int i = 0; *pp && i < 64; i++, pp = &(*pp)->next)
        if (*pp == last_released)
            break;
    if (!*pp || *pp != last_released)
        pp = &s->idle;
    ds_conn *c = *pp;
    *pp = c->next;
    s->idle_n--;
    return c;
}

/* A thread "comes straight back" when its next acquire follows its
 * release within this: about what a hand-off costs (waking a thread), so
 * keeping the connection for a quicker return beats handing it over. */
#define QUICK_RETURN_US 50

/* How often the oldest waiter looks for a connection a keeper left idle
 * without coming back: the longest a connection can sit unused while
 * others wait. */
#define HEAD_POLL_US 1000

/* The poller's interval doubles, up to this, while its looks find nothing:
 * in a busy pool the threads that use it hand over a connection left idle
 * (see hand_over_stale_locked), so the poller is only the backstop for a
 * pool whose users all stopped at once. */
#define POLL_MAX_US 8000

/* This thread's return habit on one pool: a saturating score, raised by a
 * quick return and lowered twice as fast by a slow one, so one preemption
 * between release and acquire costs one hand-off, not a habit. */
static _Thread_local const ds_pool *habit_pool;
static _Thread_local int64_t habit_released_us; /* 0: no release pending */
static _Thread_local int habit_score;
#define HABIT_KEEP 2
#define HABIT_MAX 3

static void habit_note_acquire(const ds_pool *p, int64_t now) {
    if (habit_pool != p || !habit_released_us)
        return;
    if (now - habit_released_us < QUICK_RETURN_US)
        habit_score = habit_score < HABIT_MAX ? habit_score + 1 : HABIT_MAX;
    else
        habit_score = habit_score >= 2 ? habit_score - 2 : 0;
    habit_released_us = 0;
}

static void habit_note_release(const ds_pool *p, int64_t now) {
    if (habit_pool != p) {
        /* A new thread (or pool): one quick return shows the habit. */
        habit_pool = p;
        habit_score = HABIT_KEEP - 1;
    }
    habit_released_us = now;
}

static bool habit_quick(const ds_pool *p) {
    return habit_pool == p && habit_score >= HABIT_KEEP;
}

#ifndef BARGE_BUDGET /* measurement builds may try others */
#define BARGE_BUDGET DS_POOL_BARGE_MAX
#endif

/* May this thread take (or keep) a connection while others wait? Only a
 * thread that comes straight back, and only while the oldest waiter has
 * been overtaken fewer than DS_POOL_BARGE_MAX times and has been at the
 * head for less than pool_overtake_ms (0: never). Lock held. */
static bool may_barge(const ds_pool *p, const ds_subpool *s, int64_t now) {
    return habit_quick(p) && s->head_barged < BARGE_BUDGET &&
           now - s->head_since_us < p->overtake_us;
}

/* One waiter at a time, the poller, sleeps with a timer to look for a
 * connection left idle by a keeper that did not come back; the others
 * sleep until served. The role goes to a waiter as it queues (it is going
 * to sleep anyway, so this costs no wake-up); only when the poller leaves
 * and nobody has queued since is the newest waiter woken to take it on. */
static void appoint_poller_locked(ds_subpool *s) {
    if (s->poller || !s->wait_tail)
        return;
    s->poller = s->wait_tail;
    s->poller->poll_us = HEAD_POLL_US;
    DS_POOL_COUNT(head_wakes);
    pthread_cond_signal(&s->poller->cond);
}

/* Is the connection being released the only one of `s` leased, in a
 * sub-pool of several? (With one connection, its keeper is the only
 * thread using it, and barging is what saves a wake-up per query.) */
static bool last_lessee_locked(const ds_subpool *s) {
    return s->total > 1 && s->total - s->idle_n == 1;
}

/* A connection on the idle stack for HEAD_POLL_US while threads wait was
 * left by a keeper that did not come back: any thread passing through the
 * pool hands it to the oldest waiter. Lock held. */
static void hand_over_stale_locked(ds_subpool *s, int64_t now) {
    if (!s->wait_head || !s->idle)
        return;
    ds_conn **pp = &s->idle;
    for (int i = 0; *pp && i < 8; i++, pp = &(*pp)->next) {
        ds_conn *c = *pp;
        if (now - c->idle_since_us >= HEAD_POLL_US) {
            *pp = c->next;
            s->idle_n--;
            DS_POOL_COUNT(stale_handoffs);
            give_conn_locked(s, c);
            return;
        }
    }
}

static struct timespec timespec_at(int64_t us) {
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    return ts;
}

/* Takes an idle connection, or a slot to open one in, when nobody must be
 * let ahead of this thread; false when it has to queue. Lock held. */
static bool take_without_waiting_locked(ds_pool *p, ds_subpool *s,
                                        int64_t now, ds_conn **c,
                                        bool *create) {
    if (s->idle && !s->wait_head) {
        *c = take_own_idle_locked(s);
        DS_POOL_COUNT(take_free);
    } else if (s->idle && may_barge(p, s, now)) {
        /* overtakes every waiter: counted against the oldest's budget */
        *c = take_own_idle_locked(s);
        hand_over_stale_locked(s, now);
        DS_POOL_COUNT(take_barge);
        s->head_barged++;
        s->barges++;
    } else if (!s->wait_head && s->total < p->max) {
        s->total++;
        *create = true;
    } else {
        return false;
    }
    return true;
}

/* Appends `w` to the sub-pool's waiter queue. Lock held. */
static void enqueue_waiter_locked(ds_subpool *s, ds_waiter *w) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &attr);
    pthread_condattr_destroy(&attr);
    w->barges_at_enqueue = s->barges;
    if (!s->poller) {
        s->poller = w;
        w->poll_us = HEAD_POLL_US;
    }
    if (s->wait_tail) {
        s->wait_tail->next = w;
    } else {
        s->wait_head = w;
        s->head_since_us = pool_now();
    }
    s->wait_tail = w;
    s->waiters++;
}

/* The poller's look: an idle connection goes to the oldest waiter (itself,
 * when it is the oldest). Its interval resets when it finds one and grows
 * while it finds none. Lock held. */
static void poll_idle_locked(ds_pool *p, ds_subpool *s, ds_waiter *w) {
    DS_POOL_COUNT(head_polls);
    if (!s->idle || p->closing) {
        w->poll_us = w->poll_us * 2 < POLL_MAX_US ? w->poll_us * 2
                                                   : POLL_MAX_US;
        return;
    }
    w->poll_us = HEAD_POLL_US;
    /* every idle connection, one per waiter, oldest waiter first */
    while (s->idle && s->wait_head && !w->done) {
        DS_POOL_COUNT(head_poll_takes);
        ds_conn *c = take_own_idle_locked(s);
        if (s->wait_head == w) {
            pop_waiter(s);
            w->conn = c;
            w->done = true;
        } else {
            give_conn_locked(s, c);
        }
    }
}

/* Sleeps until `w` is served, or has left the queue at `deadline`. Lock
 * held (released while asleep). */
static void wait_turn_locked(ds_pool *p, ds_subpool *s, ds_waiter *w,
                             int64_t deadline) {
    for (;;) {
        int64_t now = pool_now();
        int64_t wake = deadline;
        bool polling = s->poller == w;
        if (polling && now + w->poll_us < deadline)
            wake = now + w->poll_us;
        struct timespec ts = timespec_at(wake);
        int rc = 0;
        while (!w->done &&
               (rc = pthread_cond_timedwait(&w->cond, &p->mu, &ts)) == 0 &&
               (s->poller == w) == polling)
            DS_POOL_COUNT(waiter_wakeups); /* spurious: re-arm */
        DS_POOL_COUNT(waiter_wakeups);
        if (w->done)
            break;
        if (rc == ETIMEDOUT && s->poller == w) {
            poll_idle_locked(p, s, w);
            if (w->done)
                break;
        }
        if (pool_now() >= deadline) {
            remove_waiter(s, w);
            break;
        }
    }
}

/* Bookkeeping once `w` is out of the queue: its overtake count into the
 * stats, and a new poller if `w` was it. Lock held. */
static void dequeue_waiter_locked(ds_pool *p, ds_subpool *s, ds_waiter *w) {
    s->waiters--;
    pthread_cond_destroy(&w->cond);
    if (w->overtaken > p->overtaken_max)
        p->overtaken_max = w->overtaken;
    appoint_poller_locked(s);
}

/* Closes an idle connection found dead or past its lifetime (outside the
 * lock), counting a reconnect for a dead one; the caller opens another. */
static void drop_unusable(ds_pool *p, ds_subpool *s, ds_conn *c) {
    bool dead = !c->expires_us || pool_now() < c->expires_us;
    ds__log(DS_LOG_INFO, MODULE, "%s: replacing a %s connection", s->label,
            dead ? "dead" : "expired");
    if (dead)
        atomic_fetch_add(&p->reconnects, 1);
    conn_close(c);
}

/* Opens the leased slot's connection (outside the lock); on failure gives
 * the slot and the lease back. */
static ds_status open_in_slot(ds_pool *p, ds_subpool *s, int timeout_ms,
                              int64_t deadline, ds_conn **c, ds_error *err) {
    /* Connecting is bounded by connect_timeout_ms and by what is left
     * of the acquire timeout (when there is one). */
    int64_t now = pool_now();
    int64_t cdl = now + (int64_t)p->connect_timeout_ms * 1000;
    if (timeout_ms > 0 && deadline < cdl)
        cdl = deadline > now ? deadline : now;
    ds_status st = conn_open(p, s, cdl, c, err);
    if (st != DS_OK) {
        bool free_pool;
        pool_lock(p);
        atomic_fetch_add(&p->connect_failures, 1);
        give_slot_locked(s);
        lease_end_locked(p, &free_pool);
        pthread_mutex_unlock(&p->mu);
        if (free_pool)
            pool_free(p);
    }
    return st;
}

/* Why a release hands its connection over (measurement builds only). */
static void count_handoff_reason(const ds_pool *p, const ds_subpool *s,
                                 int64_t now) {
#ifdef DS_POOL_COUNTERS
    if (!habit_quick(p))
        DS_POOL_COUNT(handoff_habit);
    else if (s->head_barged >= BARGE_BUDGET)
        DS_POOL_COUNT(handoff_budget);
    else if (now - s->head_since_us >= p->overtake_us)
        DS_POOL_COUNT(handoff_time);
#else
    (void)p, (void)s, (void)now;
#endif
}

/* Why an acquire goes to sleep (measurement builds only). Lock held. */
static void count_queued(const ds_pool *p, const ds_subpool *s, int64_t now) {
#ifdef DS_POOL_COUNTERS
    DS_POOL_COUNT(queued);
    if (!s->idle)
        DS_POOL_COUNT(queued_busy);
    else if (!habit_quick(p))
        DS_POOL_COUNT(queued_habit);
    else if (s->head_barged >= BARGE_BUDGET)
        DS_POOL_COUNT(queued_budget);
    else if (now - s->head_since_us >= p->overtake_us)
        DS_POOL_COUNT(queued_time);
#else
    (void)p, (void)s, (void)now;
#endif
}

/* Leases a connection of sub-pool `s`: idle, barged, queued for, or newly
 * opened in a free slot, within `timeout_ms`. */
static ds_status acquire_from(ds_pool *p, ds_subpool *s, int timeout_ms,
                              ds_conn **out, ds_error *err) {
    int64_t start = pool_now();
    int64_t deadline = start + (int64_t)timeout_ms * 1000;
    ds_conn *c = NULL;
    bool create = false;
    int64_t got = start; /* when this acquire got its connection or slot */

    pool_lock(p);
    if (p->closing) {
        pthread_mutex_unlock(&p->mu);
        return ds__error_set(err, DS_ERR_CLOSED, "acquire: the pool is closed");
    }
    habit_note_acquire(p, start);
    DS_POOL_COUNT(acquires);
    if (!take_without_waiting_locked(p, s, start, &c, &create)) {
        count_queued(p, s, start);
        /* Others wait and we may not overtake them: an idle connection is
         * theirs, and we queue behind them. */
        if (s->idle)
            give_conn_locked(s, take_own_idle_locked(s));
        ds_waiter w = {0};
        enqueue_waiter_locked(s, &w);
        wait_turn_locked(p, s, &w, deadline);
#ifdef DS_POOL_COUNTERS
        if (w.conn && w.handed_us)
            DS_POOL_COUNT_N(handoff_wait_us, pool_now() - w.handed_us);
#endif
        dequeue_waiter_locked(p, s, &w);
        if (!w.done) {
            atomic_fetch_add(&p->timeouts, 1);
            record_wait(p, pool_now() - start);
            pthread_mutex_unlock(&p->mu);
            return ds__error_set(err, DS_ERR_TIMEOUT,
                                 "acquire: no %s connection became free within "
                                 "%d ms (pool_max %d)",
                                 s->label, timeout_ms, p->max);
        }
        if (!w.conn && !w.grant) { /* woken by close */
            pthread_mutex_unlock(&p->mu);
            return ds__error_set(err, DS_ERR_CLOSED,
                                 "acquire: the pool was closed while waiting");
        }
        c = w.conn;
        create = w.grant;
        got = pool_now();
    }
    /* Without queueing the wait is the lock's, a few microseconds: no
     * clock read for it (the query it precedes takes tens). */
    p->leased++;
    record_wait(p, got - start);
    pthread_mutex_unlock(&p->mu);

    /* Outside the lock: check the idle connection, or open a new one. */
    if (c && !conn_usable(p, c, got)) {
        drop_unusable(p, s, c);
        c = NULL;
        create = true;
    }
    if (create) {
        ds_status st = open_in_slot(p, s, timeout_ms, deadline, &c, err);
        if (st != DS_OK)
            return st;
    }
    atomic_fetch_add(&p->acquires, 1);
    *out = c;
    return DS_OK;
}

DS_EXPORT ds_status ds_pool_acquire_timeout(ds_pool *pool, int timeout_ms,
                                            ds_conn **out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, timeout_ms >= 0, "timeout_ms is negative");
    return acquire_from(pool, &pool->primary, timeout_ms, out, err);
}

DS_EXPORT ds_status ds_pool_acquire(ds_pool *pool, ds_conn **out,
                                    ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    return acquire_from(pool, &pool->primary, pool->acquire_timeout_ms, out,
                        err);
}

DS_EXPORT ds_status ds_pool_acquire_read(ds_pool *pool, ds_conn **out,
                                         ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    for (size_t tried = 0; tried < pool->nreplicas; tried++) {
        pool_lock(pool);
        ds_subpool *s = &pool->replicas[pool->rr++ % pool->nreplicas];
        bool down = s->down_until_us > pool_now();
        pthread_mutex_unlock(&pool->mu);
        if (down)
            continue;
        ds_error rerr = {0};
        ds_status st = acquire_from(pool, s, pool->acquire_timeout_ms, out,
                                    &rerr);
        if (st == DS_OK)
            return DS_OK;
        if (st != DS_ERR_CONNECTION) {
            if (err)
                *err = rerr;
            return st;
        }
        pool_lock(pool);
        s->down_until_us = pool_now() + pool->replica_retry_us;
        pthread_mutex_unlock(&pool->mu);
        ds__log(DS_LOG_WARN, MODULE, "%s is down; reads go elsewhere for %lld ms",
                s->label, (long long)(pool->replica_retry_us / 1000));
    }
    return acquire_from(pool, &pool->primary, pool->acquire_timeout_ms, out,
                        err);
}

/* Leaves the connection idle and outside a transaction, or says no. */
static bool conn_reset_for_reuse(ds_conn *c) {
    if (c->discard || PQstatus(c->pg) != CONNECTION_OK)
        return false;
    if (PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF)
        return false;
    switch (PQtransactionStatus(c->pg)) {
    case PQTRANS_IDLE:
        return true;
    case PQTRANS_INTRANS:
    case PQTRANS_INERROR: {
        PGresult *r = PQexec(c->pg, "ROLLBACK");
        bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK &&
                  PQtransactionStatus(c->pg) == PQTRANS_IDLE;
        PQclear(r);
        return ok;
    }
    default: /* mid-query, COPY in progress, or unknown */
        return false;
    }
}

DS_EXPORT void ds_pool_release(ds_conn *conn) {
    if (!conn)
        return;
    ds_pool *p = conn->pool;
    ds_subpool *s = conn->sub;
    last_released = conn;
    bool reuse = conn_reset_for_reuse(conn) &&
                 !(conn->expires_us && pool_now() >= conn->expires_us);
    bool free_pool;
    pool_lock(p);
    int64_t now = pool_now();
    DS_POOL_COUNT(releases);
    habit_note_release(p, now);
    if (reuse && !p->closing) {
        /* A thread that comes straight back keeps its connection on the
         * idle stack, waking no one, within the oldest waiter's budget;
         * otherwise the oldest waiter gets it now. */
        if (s->wait_head && last_lessee_locked(s)) {
            /* Nobody else holds a connection of this server, so nobody
             * passes through to hand over what keepers left idle (say,
             * threads that ended): this release hands over all of it. */
            DS_POOL_COUNT(handoff_last);
            give_conn_locked(s, conn);
            while (s->idle && s->wait_head) {
                DS_POOL_COUNT(stale_handoffs);
                give_conn_locked(s, take_own_idle_locked(s));
            }
        } else if (s->wait_head && !may_barge(p, s, now)) {
            count_handoff_reason(p, s, now);
            give_conn_locked(s, conn);
        } else {
            if (s->wait_head)
                DS_POOL_COUNT(rel_keep);
            else
                DS_POOL_COUNT(rel_free);
            hand_over_stale_locked(s, now);
            conn->idle_since_us = now;
            push_idle_locked(s, conn);
        }
        conn = NULL;
    } else {
        atomic_fetch_add(&p->discarded, 1);
        if (p->closing)
            s->total--;
        else
            give_slot_locked(s);
    }
    lease_end_locked(p, &free_pool);
    pthread_mutex_unlock(&p->mu);
    conn_close(conn);
    if (free_pool)
        pool_free(p);
}

/* ---- maintenance: idle timeout, lifetime, dead idle links, minimum ----- */

static void sweep_subpool_locked(ds_pool *p, ds_subpool *s, int64_t now,
                                 ds_conn **closing) {
    ds_conn **pp = &s->idle;
    while (*pp) {
        ds_conn *c = *pp;
        bool idle_out = p->idle_timeout_us &&
                        now - c->idle_since_us >= p->idle_timeout_us &&
                        s->total > s->min;
        bool expired = c->expires_us && now >= c->expires_us;
        bool dead = !conn_alive(c);
        if (idle_out || expired || dead) {
            if (dead)
                atomic_fetch_add(&p->reconnects, 1);
            *pp = c->next;
            s->idle_n--;
            s->total--;
            c->next = *closing;
            *closing = c;
        } else {
            pp = &c->next;
        }
    }
}

static void refill_subpool(ds_pool *p, ds_subpool *s) {
    for (;;) {
        pool_lock(p);
        bool need = !p->closing && s->total < s->min && s->total < p->max &&
                    s->down_until_us <= pool_now();
        if (need)
            s->total++;
        pthread_mutex_unlock(&p->mu);
        if (!need)
            return;
        ds_conn *c;
        ds_error err = {0};
        ds_status st = conn_open(p, s,
                                 pool_now() +
                                     (int64_t)p->connect_timeout_ms * 1000,
                                 &c, &err);
        pool_lock(p);
        if (st == DS_OK && !p->closing) {
            give_conn_locked(s, c);
            c = NULL;
        } else if (st == DS_OK) {
            s->total--;
        } else {
            atomic_fetch_add(&p->connect_failures, 1);
            give_slot_locked(s);
        }
        pthread_mutex_unlock(&p->mu);
        conn_close(st == DS_OK ? c : NULL);
        if (st != DS_OK)
            return; /* try again on the next tick */
    }
}

static void *maintenance_main(void *arg) {
    ds_pool *p = arg;
    for (;;) {
        pool_lock(p);
        int64_t wake = pool_now() + 1000000;
        struct timespec ts = {(time_t)(wake / 1000000),
                              (long)(wake % 1000000) * 1000};
        while (!p->closing &&
               pthread_cond_timedwait(&p->maint_cond, &p->mu, &ts) != ETIMEDOUT) {
        }
        if (p->closing) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        ds_conn *closing = NULL;
        int64_t now = pool_now();
        sweep_subpool_locked(p, &p->primary, now, &closing);
        for (size_t i = 0; i < p->nreplicas; i++)
            sweep_subpool_locked(p, &p->replicas[i], now, &closing);
        pthread_mutex_unlock(&p->mu);
        while (closing) {
            ds_conn *next = closing->next;
            conn_close(closing);
            closing = next;
        }
        refill_subpool(p, &p->primary);
    }
}

/* ---- open / close ----------------------------------------------------- */

/* A primary URL needs a writable server unless it names a
 * target_session_attrs that accepts others (any, read-only, standby,
 * prefer-standby): then the caller wants whatever it listed. */
static bool url_needs_writable(const char *url) {
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    if (!opts)
        return true; /* conn_open reports the bad URL */
    bool writable = true;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "target_session_attrs") == 0 && o->val)
            writable = strcmp(o->val, "read-write") == 0 ||
                       strcmp(o->val, "primary") == 0;
    }
    PQconninfoFree(opts);
    return writable;
}

static ds_status subpool_init(ds_subpool *s, const char *url, const char *label,
                              bool replica, int min, ds_error *err) {
    memset(s, 0, sizeof *s);
    snprintf(s->label, sizeof s->label, "%s", label);
    s->replica = replica;
    s->min = min;
    s->url = ds__secret_strdup(url);
    if (!s->url)
        return ds__error_set(err, DS_ERR_NOMEM, "pool: out of memory");
    s->password = ds__conninfo_password(url);
    s->needs_writable = !replica && url_needs_writable(url);
    return DS_OK;
}

static void subpool_destroy(ds_subpool *s) {
    ds_conn *c = s->idle;
    while (c) {
        ds_conn *next = c->next;
        conn_close(c);
        c = next;
    }
    s->idle = NULL;
    ds__secret_free(s->url);
    ds__secret_free(s->password);
    s->url = s->password = NULL;
}

static void pool_free(ds_pool *p) {
    subpool_destroy(&p->primary);
    for (size_t i = 0; i < p->nreplicas; i++)
        subpool_destroy(&p->replicas[i]);
    ds__free(p->replicas);
    ds__free(p->application_name);
    pthread_cond_destroy(&p->maint_cond);
    pthread_mutex_destroy(&p->mu);
    ds__free(p);
}

static void init_sync(ds_pool *p) {
    /* Adaptive: the critical sections are a few pointer moves, so a short
     * spin beats a futex sleep when threads collide. */
    pthread_mutexattr_t mattr;
    pthread_mutexattr_init(&mattr);
    pthread_mutexattr_settype(&mattr, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&p->mu, &mattr);
    pthread_mutexattr_destroy(&mattr);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p->maint_cond, &attr);
    pthread_condattr_destroy(&attr);
}

static void copy_settings(ds_pool *p, const ds_config *cfg) {
    p->max = (int)cfg->pool_max;
    p->acquire_timeout_ms = (int)cfg->acquire_timeout_ms;
    p->overtake_us = cfg->pool_overtake_ms * 1000;
    p->connect_timeout_ms = (int)cfg->connect_timeout_ms;
    p->statement_timeout_ms = (int)cfg->statement_timeout_ms;
    p->lifetime_us = cfg->max_lifetime_ms * 1000;
    p->idle_timeout_us = cfg->idle_timeout_ms * 1000;
    p->replica_retry_us = cfg->replica_retry_ms * 1000;
    p->tx_max_retries = (int)cfg->tx_max_retries;
    p->settings.migrate_lock_timeout_ms = (int)cfg->migrate_lock_timeout_ms;
    p->settings.embedding_dim = cfg->embedding_dim;
    p->settings.vector_backend = cfg->vector_backend;
    p->settings.repo_max_message_bytes = cfg->repo_max_message_bytes;
    p->settings.repo_max_json_bytes = cfg->repo_max_json_bytes;
    p->settings.repo_max_page = (int)cfg->repo_max_page;
    p->settings.repo_max_batch = (int)cfg->repo_max_batch;
    p->settings.repo_activity_interval_ms = cfg->repo_activity_interval_ms;
    p->pooler = cfg->statement_mode == DS_STMT_POOLER;
    p->after_connect = cfg->after_connect;
    p->after_connect_ud = cfg->after_connect_ud;
    p->statement_hook = cfg->statement_hook;
    p->statement_hook_ud = cfg->statement_hook_ud;
}

static ds_status open_subpools(ds_pool *p, const ds_config *cfg,
                               ds_error *err) {
    ds_status st = subpool_init(&p->primary, cfg->database_url, "primary",
                                false, (int)cfg->pool_min, err);
    if (st != DS_OK || !cfg->database_replica_urls)
        return st;
    char **urls = NULL;
    size_t n = 0;
    st = ds__config_split_urls(cfg->database_replica_urls, &urls, &n, err);
    if (st == DS_OK && n) {
        p->replicas = ds__calloc(n, sizeof *p->replicas);
        if (!p->replicas)
            st = ds__error_set(err, DS_ERR_NOMEM, "pool: out of memory");
        for (size_t i = 0; st == DS_OK && i < n; i++) {
            char label[32];
            snprintf(label, sizeof label, "replica %zu", i + 1);
            st = subpool_init(&p->replicas[i], urls[i], label, true, 0, err);
            p->nreplicas = i + 1;
        }
    }
    ds__config_free_urls(urls);
    return st;
}

/* Pre-warms to pool_min; the first failure is reported so that a bad URL
 * or password shows at start-up rather than on first use. */
static ds_status prewarm(ds_pool *p, int pool_min, ds_error *err) {
    int64_t deadline = pool_now() + (int64_t)p->connect_timeout_ms * 1000;
    for (int i = 0; i < pool_min; i++) {
        ds_conn *c;
        ds_status st = conn_open(p, &p->primary, deadline, &c, err);
        if (st != DS_OK)
            return st;
        p->primary.total++;
        give_conn_locked(&p->primary, c);
    }
    if (pool_min == 0) {
        /* Still prove the URL works. */
        ds_conn *c;
        ds_status st = conn_open(p, &p->primary, deadline, &c, err);
        if (st != DS_OK)
            return st;
        conn_close(c);
    }
    return DS_OK;
}

DS_EXPORT ds_status ds_pool_open(const ds_config *cfg, ds_pool **out,
                                 ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, cfg, "cfg is NULL");
    ds_status st = ds__ensure_init(err);
    if (st != DS_OK)
        return st;
    if (!cfg->database_url)
        return ds__error_set(err, DS_ERR_CONFIG,
                             "DATABASE_URL: not set (database_url is required)");
    if (cfg->pool_min > cfg->pool_max)
        return ds__error_set(err, DS_ERR_CONFIG,
                             "DS_POOL_MIN (%lld) is larger than DS_POOL_MAX "
                             "(%lld)",
                             (long long)cfg->pool_min,
                             (long long)cfg->pool_max);

    ds_pool *p = ds__calloc(1, sizeof *p);
    if (!p)
        return ds__error_set(err, DS_ERR_NOMEM, "pool: out of memory");
    init_sync(p);
#ifdef DS_POOL_COUNTERS
#define DS_POOL_COUNTER_COPY(name)                                           \
    atomic_store(&p->counters_at_open.name,                                  \
                 atomic_load(&ds__pool_counters.name));
    DS_POOL_COUNTER_LIST(DS_POOL_COUNTER_COPY)
#undef DS_POOL_COUNTER_COPY
#endif
    copy_settings(p, cfg);
    p->application_name = ds__strdup(cfg->application_name
                                         ? cfg->application_name
                                         : "libdatastore");
    if (!p->application_name)
        st = ds__error_set(err, DS_ERR_NOMEM, "pool: out of memory");
    if (st == DS_OK)
        st = open_subpools(p, cfg, err);
    if (st == DS_OK)
        st = prewarm(p, (int)cfg->pool_min, err);
    if (st == DS_OK && pthread_create(&p->maint, NULL, maintenance_main, p))
        st = ds__error_set(err, DS_ERR_NOMEM,
                           "pool: could not start the maintenance thread");
    if (st != DS_OK) {
        pool_free(p);
        return st;
    }
    p->maint_started = true;
    ds__log(DS_LOG_INFO, MODULE,
            "pool open: min %lld, max %d, %zu replica(s), %s mode",
            (long long)cfg->pool_min, p->max, p->nreplicas,
            p->pooler ? "pooler" : "prepared");
    *out = p;
    return DS_OK;
}

DS_EXPORT ds_status ds_pool_open_url(const char *database_url, ds_pool **out,
                                     ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, database_url, "database_url is NULL");
    ds_config *cfg;
    ds_status st = ds_config_new(&cfg, err);
    if (st != DS_OK)
        return st;
    st = ds_config_set(cfg, "database_url", database_url, err);
    if (st == DS_OK)
        st = ds_pool_open(cfg, out, err);
    ds_config_free(cfg);
    return st;
}

/* Detaches a sub-pool's idle stack onto `list`. */
static ds_conn *take_idle_locked(ds_subpool *s, ds_conn *list) {
    while (s->idle) {
        ds_conn *c = s->idle;
        s->idle = c->next;
        c->next = list;
        list = c;
        s->total--;
    }
    s->idle_n = 0;
    return list;
}

static void wake_waiters_closed(ds_subpool *s) {
    ds_waiter *w;
    while ((w = pop_waiter(s)) != NULL) {
        w->done = true; /* no conn, no grant: closed */
        pthread_cond_signal(&w->cond);
    }
}

/* Measurement builds: the counters over this pool's life, one log line. */
static void log_counters(const ds_pool *pool) {
#ifdef DS_POOL_COUNTERS
    char line[1024];
    size_t used = (size_t)snprintf(line, sizeof line, "counters:");
#define DS_POOL_COUNTER_PRINT(name)                                          \
    if (used < sizeof line)                                                  \
        used += (size_t)snprintf(                                            \
            line + used, sizeof line - used, " %s=%llu", #name,              \
            (unsigned long long)(atomic_load(&ds__pool_counters.name) -      \
                                 atomic_load(&pool->counters_at_open.name)));
    DS_POOL_COUNTER_LIST(DS_POOL_COUNTER_PRINT)
#undef DS_POOL_COUNTER_PRINT
    ds__log(DS_LOG_INFO, MODULE, "%s", line);
#else
    (void)pool;
#endif
}

DS_EXPORT void ds_pool_close(ds_pool *pool) {
    if (!pool)
        return;
    pool_lock(pool);
    if (pool->closing) {
        pthread_mutex_unlock(&pool->mu);
        return;
    }
    pool->closing = true;
    wake_waiters_closed(&pool->primary);
    for (size_t i = 0; i < pool->nreplicas; i++)
        wake_waiters_closed(&pool->replicas[i]);
    pthread_cond_broadcast(&pool->maint_cond);
    pthread_mutex_unlock(&pool->mu);
    if (pool->maint_started)
        pthread_join(pool->maint, NULL);

    /* Idle connections close now; leased ones as they come back. */
    pool_lock(pool);
    ds_conn *idle = take_idle_locked(&pool->primary, NULL);
    for (size_t i = 0; i < pool->nreplicas; i++)
        idle = take_idle_locked(&pool->replicas[i], idle);
    bool free_now = pool->leased == 0;
    pthread_mutex_unlock(&pool->mu);
    while (idle) {
        ds_conn *next = idle->next;
        conn_close(idle);
        idle = next;
    }
    log_counters(pool);
    ds__log(DS_LOG_INFO, MODULE, "pool closed");
    if (free_now)
        pool_free(pool);
}

DS_EXPORT ds_status ds_pool_stats_get(ds_pool *pool, ds_pool_stats *caller,
                                      ds_error *err) {
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, caller, "out is NULL");
    ds_status st = DS__OUT_CHECK(caller, ds_pool_stats, err);
    if (st != DS_OK)
        return st;
    ds_pool_stats local = DS_POOL_STATS_INIT, *out = &local;
    pool_lock(pool);
    out->connections = pool->primary.total;
    out->idle = pool->primary.idle_n;
    out->waiters = pool->primary.waiters;
    for (size_t i = 0; i < pool->nreplicas; i++) {
        out->connections += pool->replicas[i].total;
        out->idle += pool->replicas[i].idle_n;
        out->waiters += pool->replicas[i].waiters;
    }
    out->in_use = pool->leased;
    out->acquire_wait_p50_us = wait_percentile(pool, 0.50);
    out->acquire_wait_p99_us = wait_percentile(pool, 0.99);
    out->acquire_wait_max_us = pool->wait_max_us;
    out->waiter_overtaken_max = pool->overtaken_max;
    pthread_mutex_unlock(&pool->mu);
    out->acquires = atomic_load(&pool->acquires);
    out->timeouts = atomic_load(&pool->timeouts);
    out->reconnects = atomic_load(&pool->reconnects);
    out->connect_failures = atomic_load(&pool->connect_failures);
    out->discarded = atomic_load(&pool->discarded);
    ds__growable_out(caller, &local, sizeof local);
    return DS_OK;
}

const ds__pool_settings *ds__pool_settings_get(const ds_pool *pool) {
    return &pool->settings;
}

DS_EXPORT bool ds_pool_is_pooler_mode(const ds_pool *pool) {
    return pool && pool->pooler;
}

