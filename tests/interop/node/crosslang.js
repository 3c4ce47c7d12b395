// The Node side of the cross-language example (tests/interop/crosslang.sh),
// written from docs/formats.md: reads the cache entry and validates the
// session token that examples/interop.c (C, linked with the library) wrote,
// then enqueues a job for the C worker.
//
//   DATABASE_URL=... REDIS_URL=... DS_TOKEN_KEYS=kid:base64key \
//       node crosslang.js HANDOFF.json
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const Redis = require('ioredis');
const { Client } = require('pg');
const sodium = require('libsodium-wrappers');

function fail(msg) {
  console.error(`node: ${msg}`);
  process.exit(1);
}

// formats.md 5.1: "1 V <fresh_until_ms> <load_ms>\n<JSON>"
function readCacheValue(raw) {
  const m = /^1 V (\d+) (\d+)\n/.exec(raw);
  if (!m) fail(`not a cache value: ${JSON.stringify(raw.slice(0, 40))}`);
  if (Number(m[1]) <= Date.now()) fail('the cache entry is no longer fresh');
  return raw.slice(m[0].length);
}

// formats.md 2.2: the stored hash of a session token
function tokenHash(token, ringKey) {
  const raw = sodium.from_base64(token, sodium.base64_variants.URLSAFE_NO_PADDING);
  if (raw.length !== 32) fail('a session token is 32 bytes');
  const subkey = sodium.crypto_kdf_derive_from_key(32, 1, 'dssessn1', ringKey);
  return Buffer.from(sodium.crypto_generichash(32, raw, subkey));
}

async function main() {
  await sodium.ready;
  const handoff = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const [kid, keyB64] = process.env.DS_TOKEN_KEYS.split(',')[0].split(':');
  const ringKey = Buffer.from(keyB64, 'base64');

  // 1. the cache entry C wrote: 0.7 is 0.7, 2^53+1 is kept as text
  const redis = new Redis(process.env.REDIS_URL);
  const raw = await redis.get(handoff.cache_key);
  if (raw === null) fail(`no cache entry at ${handoff.cache_key}`);
  const body = readCacheValue(raw);
  const value = JSON.parse(body);
  if (value.temp !== 0.7) fail(`temp is ${value.temp}`);
  if (!body.includes('"big":9007199254740993')) fail(`big lost digits: ${body}`);
  console.log(`node: cache ${handoff.cache_key}: temp=${value.temp}, big=9007199254740993 (as text)`);

  // 2. the session token C issued, checked against PostgreSQL
  const pg = new Client({ connectionString: process.env.DATABASE_URL });
  await pg.connect();
  const res = await pg.query(
    'SELECT user_id::text FROM auth_sessions WHERE token_hash = $1 ' +
      'AND NOT revoked AND expires_at > now()',
    [tokenHash(handoff.session_token, ringKey)]);
  if (res.rows.length !== 1 || res.rows[0].user_id !== String(handoff.user_id))
    fail('the session token does not validate');
  console.log(`node: session token of user ${res.rows[0].user_id} validates (key ${kid})`);
  const forged = tokenHash(handoff.session_token.replace(/^./, (c) => (c === 'A' ? 'B' : 'A')), ringKey);
  const none = await pg.query('SELECT 1 FROM auth_sessions WHERE token_hash = $1', [forged]);
  if (none.rows.length !== 0) fail('a different token validates');
  await pg.end();

  // 3. a job for the C worker (formats.md 5.2), payload as JSON text so
  //    that 2^53+1 keeps every digit
  const id = crypto.randomBytes(16).toString('hex');
  const payload = '{"from":"node","n":9007199254740993,"temp":0.7}';
  await redis.xadd(handoff.queue_stream, '*', 'id', id, 'a', '0', 'p', payload);
  console.log(`node: enqueued job ${id}`);
  await redis.quit();
}

main().catch((e) => fail(e.stack || String(e)));
