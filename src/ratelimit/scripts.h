/*
 * The rate limiter's Lua, in a header so that bench/bench_cache.c runs the
 * very same script as its raw-EVALSHA baseline.
 *
 * Every script takes KEYS[1] the limiter key and ARGV: [1] limit, [2] period
 * ms, [3] burst (GCRA only), [4] cost, [5] "1" to consume or "0" to peek.
 * Each returns {allowed 0|1, remaining, retry_after_ms, reset_ms} and use the
 * server's clock (TIME), so app servers with skewed clocks agree. Every key
 * written expires.
 */
#ifndef DS_RATELIMIT_SCRIPTS_H
#define DS_RATELIMIT_SCRIPTS_H

/* Sliding windows up to this limit keep one member per request (exact);
 * larger ones count buckets (never over the limit, see below). */
#define DS__RATELIMIT_LOG_MAX 1000

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

/* The sliding window scripts meet keys of the estimate they replaced (a
 * hash with fields w, c, p) and start such a key afresh. */

/* Sliding log (limit <= DS__RATELIMIT_LOG_MAX): a sorted set with one member
 * per admitted request, scored by the server's time in microseconds (member
 * "<us>:<seq>", seq counting within one microsecond). A request of `cost`
 * is admitted when at most `limit` - cost members lie in (now - period,
 * now], so no window of `period_ms` ever holds more than `limit`. A clock
 * stepped back is clamped to the newest member. Every number is formatted
 * with %d: Lua would print a 16-digit score with %.14g. */
#define DS_RATELIMIT_SLIDING_LOG_LUA                                           \
    "local t = redis.call('TIME')\n"                                           \
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"                  \
    "local limit, P = tonumber(ARGV[1]), tonumber(ARGV[2]) * 1000\n"           \
    "local cost, k = tonumber(ARGV[4]), KEYS[1]\n"                             \
    "local seq = 0\n"                                                          \
    "local last = redis.pcall('ZRANGE', k, -1, -1, 'WITHSCORES')\n"            \
    "if last.err then\n"                                                       \
    "  redis.call('DEL', k)\n"                                                 \
    "  last = {}\n"                                                            \
    "end\n"                                                                    \
    "if last[2] and tonumber(last[2]) >= now then\n"                           \
    "  now = tonumber(last[2])\n"                                              \
    "  seq = (tonumber(string.match(last[1], ':(%d+)$')) or 0) + 1\n"          \
    "end\n"                                                                    \
    "local from = string.format('%d', now - P)\n"                              \
    "local used = redis.call('ZCOUNT', k, '(' .. from, '+inf')\n"              \
    "local allowed = used + cost <= limit\n"                                   \
    "if allowed and ARGV[5] == '1' then\n"                                     \
    "  redis.call('ZREMRANGEBYSCORE', k, '-inf', from)\n"                      \
    "  local add, ns = {}, string.format('%d', now)\n"                         \
    "  for i = 0, cost - 1 do\n"                                               \
    "    add[#add + 1] = ns\n"                                                 \
    "    add[#add + 1] = ns .. ':' .. string.format('%012d', seq + i)\n"       \
    "  end\n"                                                                  \
    "  redis.call('ZADD', k, unpack(add))\n"                                   \
    "  redis.call('PEXPIRE', k, ARGV[2])\n"                                    \
    "  used = used + cost\n"                                                   \
    "end\n"                                                                    \
    "local reset = 0\n"                                                        \
    "if allowed and ARGV[5] == '1' then\n"                                     \
    "  reset = tonumber(ARGV[2])\n"                                            \
    "elseif used > 0 then\n"                                                   \
    "  local newest = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')\n"         \
    "  reset = math.max(1, math.ceil((tonumber(newest[2]) + P - now) / 1000))\n"\
    "end\n"                                                                    \
    "if allowed then return {1, limit - used, 0, reset} end\n"                 \
    /* the oldest live members that must leave before `cost` fits */          \
    "local need = used + cost - limit\n"                                       \
    "local e = redis.call('ZRANGEBYSCORE', k, '(' .. from, '+inf',\n"          \
    "                     'WITHSCORES', 'LIMIT', need - 1, 1)\n"               \
    "local retry = math.ceil((tonumber(e[2]) + P - now) / 1000)\n"             \
    "return {0, math.max(0, limit - used), math.max(1, retry), reset}\n"

/* Sliding buckets (limit > DS__RATELIMIT_LOG_MAX): a hash of counts per
 * bucket of w = period/20 ms (at least 1 ms), field = bucket index. Every
 * bucket that overlaps (now - period, now] is counted whole, so the count
 * is never below the true one and no window of `period_ms` holds more than
 * `limit`; a request stays counted for up to period + w. */
#define DS_RATELIMIT_SLIDING_BUCKETS_LUA                                       \
    "local t = redis.call('TIME')\n"                                           \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"  \
    "local limit, P = tonumber(ARGV[1]), tonumber(ARGV[2])\n"                  \
    "local cost, k = tonumber(ARGV[4]), KEYS[1]\n"                             \
    "local w = math.max(1, math.floor(P / 20))\n"                              \
    "local ty = redis.call('TYPE', k).ok\n"                                    \
    "if ty ~= 'hash' and ty ~= 'none' then redis.call('DEL', k) end\n"         \
    "local idx = math.floor(now / w)\n"                                        \
    "local first = math.floor((now - P) / w)\n"                                \
    "local all = redis.call('HGETALL', k)\n"                                   \
    "local live, used, stale = {}, 0, {}\n"                                    \
    "for i = 1, #all, 2 do\n"                                                  \
    "  local b, c = tonumber(all[i]), tonumber(all[i + 1]) or 0\n"             \
    "  if b and b >= first then\n"                                             \
    "    live[#live + 1] = {b, c}\n"                                           \
    "    used = used + c\n"                                                    \
    "  else stale[#stale + 1] = all[i] end\n"                                  \
    "end\n"                                                                    \
    "local allowed = used + cost <= limit\n"                                   \
    "if allowed and ARGV[5] == '1' then\n"                                     \
    "  if #stale > 0 then redis.call('HDEL', k, unpack(stale)) end\n"          \
    "  local f = string.format('%d', idx)\n"                                   \
    "  redis.call('HINCRBY', k, f, cost)\n"                                    \
    "  redis.call('PEXPIRE', k, string.format('%d', (idx + 1) * w + P - now))\n"\
    "  live[#live + 1] = {idx, cost}\n"                                        \
    "  used = used + cost\n"                                                   \
    "end\n"                                                                    \
    "table.sort(live, function(a, b) return a[1] < b[1] end)\n"                \
    "local reset = 0\n"                                                        \
    "if used > 0 then reset = (live[#live][1] + 1) * w + P - now end\n"        \
    "if allowed then return {1, limit - used, 0, reset} end\n"                 \
    "local need, freed, retry = used + cost - limit, 0, reset\n"               \
    "for _, e in ipairs(live) do\n"                                            \
    "  freed = freed + e[2]\n"                                                 \
    "  if freed >= need then retry = (e[1] + 1) * w + P - now break end\n"     \
    "end\n"                                                                    \
    "return {0, math.max(0, limit - used), math.max(1, retry), reset}\n"

#endif
