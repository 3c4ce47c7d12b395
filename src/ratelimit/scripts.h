/*
 * The rate limiter's Lua, in a header so that bench/bench_cache.c runs the
 * very same script as its raw-EVALSHA baseline.
 *
 * Both scripts take KEYS[1] the limiter key and ARGV: [1] limit, [2] period
 * ms, [3] burst (GCRA only), [4] cost, [5] "1" to consume or "0" to peek.
 * Both return {allowed 0|1, remaining, retry_after_ms, reset_ms} and use the
 * server's clock (TIME), so app servers with skewed clocks agree. Every key
 * written expires.
 */
#ifndef DS_RATELIMIT_SCRIPTS_H
#define DS_RATELIMIT_SCRIPTS_H

/* GCRA (generic cell rate algorithm): the key holds the theoretical arrival
 * time (TAT) in microseconds. One request costs T = period/limit; up to
 * `burst` requests may arrive at once. */
#define DS_RATELIMIT_GCRA_LUA                                                  \
    "local t = redis.call('TIME')\n"                                           \
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"                  \
    "local limit, period = tonumber(ARGV[1]), tonumber(ARGV[2]) * 1000\n"      \
    "local burst, cost = tonumber(ARGV[3]), tonumber(ARGV[4])\n"               \
    "local T = period / limit\n"                                               \
    "local tat = tonumber(redis.call('GET', KEYS[1])) or now\n"                \
    "if tat < now then tat = now end\n"                                        \
    "local new_tat = tat + cost * T\n"                                         \
    "local allow_at = new_tat - burst * T\n"                                   \
    "if now >= allow_at then\n"                                                \
    "  if ARGV[5] == '1' and cost > 0 then\n"                                  \
    "    redis.call('SET', KEYS[1], string.format('%d', math.ceil(new_tat)),\n"\
    "               'PX', math.max(1, math.ceil((new_tat - now) / 1000)))\n"   \
    "  else new_tat = tat end\n"                                               \
    "  local left = math.floor((now - (new_tat - burst * T)) / T)\n"           \
    "  return {1, math.max(0, math.min(burst, left)), 0,\n"                    \
    "          math.ceil((new_tat - now) / 1000)}\n"                           \
    "end\n"                                                                    \
    "local left = math.floor((now - (tat - burst * T)) / T)\n"                 \
    "return {0, math.max(0, math.min(burst, left)),\n"                         \
    "        math.max(1, math.ceil((allow_at - now) / 1000)),\n"               \
    "        math.ceil((tat - now) / 1000)}\n"

/* Sliding window counter: this window's count plus last window's, weighted
 * by how much of it still overlaps the sliding window. O(1) memory per key
 * (a hash: w = window index, c = count, p = previous count). */
#define DS_RATELIMIT_SLIDING_LUA                                               \
    "local t = redis.call('TIME')\n"                                           \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"  \
    "local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])\n"             \
    "local cost = tonumber(ARGV[4])\n"                                         \
    "local idx = math.floor(now / window)\n"                                   \
    "local v = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')\n"                  \
    "local w, cur, prev = tonumber(v[1]), tonumber(v[2]) or 0,\n"              \
    "                     tonumber(v[3]) or 0\n"                               \
    "if w == idx - 1 then prev, cur = cur, 0\n"                                \
    "elseif w ~= idx then prev, cur = 0, 0 end\n"                              \
    "local elapsed = now - idx * window\n"                                     \
    "local used = prev * (window - elapsed) / window + cur\n"                  \
    "if used + cost <= limit then\n"                                           \
    "  if ARGV[5] == '1' and cost > 0 then\n"                                  \
    "    cur = cur + cost\n"                                                   \
    "    used = used + cost\n"                                                 \
    "    redis.call('HSET', KEYS[1], 'w', string.format('%d', idx),\n"         \
    "               'c', string.format('%d', cur),\n"                          \
    "               'p', string.format('%d', prev))\n"                         \
    "    redis.call('PEXPIRE', KEYS[1], window * 2)\n"                         \
    "  end\n"                                                                  \
    "  local reset = 0\n"                                                      \
    "  if cur > 0 then reset = 2 * window - elapsed\n"                         \
    "  elseif prev > 0 then reset = window - elapsed end\n"                    \
    "  return {1, math.max(0, math.floor(limit - used)), 0, reset}\n"          \
    "end\n"                                                                    \
    "local retry\n"                                                            \
    "if cur + cost <= limit and prev > 0 then\n"                               \
    "  retry = math.ceil(window * (1 - (limit - cur - cost) / prev)) - elapsed\n"\
    "else\n"                                                                   \
    "  retry = window - elapsed\n"                                             \
    "  if cur > 0 then\n"                                                      \
    "    retry = retry + math.max(0,\n"                                        \
    "      math.ceil(window * (1 - (limit - cost) / cur)))\n"                  \
    "  end\n"                                                                  \
    "end\n"                                                                    \
    "local reset = 0\n"                                                        \
    "if cur > 0 then reset = 2 * window - elapsed\n"                           \
    "elseif prev > 0 then reset = window - elapsed end\n"                      \
    "return {0, math.max(0, math.floor(limit - used)), math.max(1, retry),\n"  \
    "        reset}\n"

#endif
