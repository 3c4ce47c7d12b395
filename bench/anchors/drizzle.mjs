// One side of `make bench-anchors`: the same workloads as the library's,
// written as a Drizzle ORM user would (prepared statements on
// node-postgres), run for a given time by a given number of concurrent
// clients. Prints one line: ops=N seconds=S p50_us=X p99_us=Y, N the
// operations completed within the S seconds (as the C harness counts).
//
//   node drizzle.mjs get_user|list|append CLIENTS SECONDS
//
// Reads DATABASE_URL, ANCHOR_USER_IDS (comma list), ANCHOR_LIST_CONV and
// ANCHOR_APPEND_CONVS (comma list, one conversation per client).
import pg from 'pg';
import { drizzle } from 'drizzle-orm/node-postgres';
import { and, desc, eq, isNull, sql } from 'drizzle-orm';
import { bigint, boolean, jsonb, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

const users = pgTable('users', {
  id: bigint('id', { mode: 'number' }).primaryKey(),
  email: text('email').notNull(),
  status: text('status').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull(),
  deletedAt: timestamp('deleted_at', { withTimezone: true }),
});

const profiles = pgTable('profiles', {
  userId: bigint('user_id', { mode: 'number' }).primaryKey(),
  displayName: text('display_name').notNull(),
  locale: text('locale').notNull(),
  timezone: text('timezone').notNull(),
  preferences: jsonb('preferences').notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull(),
});

const conversations = pgTable('conversations', {
  id: bigint('id', { mode: 'number' }).primaryKey(),
  ownerId: bigint('owner_id', { mode: 'number' }).notNull(),
  title: text('title').notNull(),
  archived: boolean('archived').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull(),
});

const messages = pgTable('messages', {
  id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
  conversationId: bigint('conversation_id', { mode: 'number' }).notNull(),
  role: text('role').notNull(),
  content: text('content').notNull(),
  metadata: jsonb('metadata').notNull(),
  idempotencyKey: text('idempotency_key'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});

const [workload, clientsArg, secondsArg] = process.argv.slice(2);
const clients = Number(clientsArg);
const seconds = Number(secondsArg);
if (!['get_user', 'list', 'append'].includes(workload) || !(clients > 0) || !(seconds > 0)) {
  console.error('usage: node drizzle.mjs get_user|list|append CLIENTS SECONDS');
  process.exit(2);
}
const ids = (name) => (process.env[name] || '').split(',').filter(Boolean).map(Number);
const userIds = ids('ANCHOR_USER_IDS');
const listConv = Number(process.env.ANCHOR_LIST_CONV || 0);
const appendConvs = ids('ANCHOR_APPEND_CONVS');

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: clients });
const db = drizzle(pool);

const getUser = db
  .select({
    id: users.id, email: users.email, status: users.status, createdAt: users.createdAt,
    updatedAt: users.updatedAt, deletedAt: users.deletedAt, displayName: profiles.displayName,
    locale: profiles.locale, timezone: profiles.timezone, preferences: profiles.preferences,
    profileUpdatedAt: profiles.updatedAt,
  })
  .from(users)
  .leftJoin(profiles, eq(profiles.userId, users.id))
  .where(and(eq(users.id, sql.placeholder('id')), isNull(users.deletedAt)))
  .prepare('anchor_get_user');

const listNewest = db
  .select()
  .from(messages)
  .where(eq(messages.conversationId, sql.placeholder('cid')))
  .orderBy(desc(messages.id))
  .limit(50)
  .prepare('anchor_list_newest');

const content = 'Sure, here is a short answer to your question about the weather in Lisbon tomorrow.';
// The insert and the bump as two prepared statements: Drizzle's fastest
// form (a transaction around them costs two more round trips).
const insertMessage = db
  .insert(messages)
  .values({
    conversationId: sql.placeholder('cid'), role: 'assistant', content,
    metadata: {},
  })
  .returning()
  .prepare('anchor_insert_message');
const bump = db
  .update(conversations)
  .set({ updatedAt: sql`now()` })
  .where(eq(conversations.id, sql.placeholder('cid')))
  .prepare('anchor_bump');

async function op(client, i) {
  if (workload === 'get_user') {
    const rows = await getUser.execute({ id: userIds[(client * 7919 + i) % userIds.length] });
    if (rows.length !== 1) throw new Error('get_user: no row');
  } else if (workload === 'list') {
    const rows = await listNewest.execute({ cid: listConv });
    if (rows.length !== 50) throw new Error(`list: ${rows.length} rows`);
  } else {
    const cid = appendConvs[client % appendConvs.length];
    const rows = await insertMessage.execute({ cid });
    if (rows.length !== 1) throw new Error('append: no row');
    await bump.execute({ cid });
  }
}

async function run(untilNs, lat) {
  const workers = [];
  let ops = 0;
  for (let c = 0; c < clients; c++) {
    workers.push((async () => {
      for (let i = 0; process.hrtime.bigint() < untilNs; i++) {
        const t0 = process.hrtime.bigint();
        await op(c, i);
        const t1 = process.hrtime.bigint();
        if (lat) lat.push(Number(t1 - t0) / 1000);
        // as the C harness counts: what completes within the window
        if (t1 <= untilNs) ops++;
      }
    })());
  }
  await Promise.all(workers);
  return ops;
}

// Warm up (connections open, statements prepared, JIT settled) outside
// the measured window.
await run(process.hrtime.bigint() + 300_000_000n, null);
const lat = [];
const start = process.hrtime.bigint();
const ops = await run(start + BigInt(Math.round(seconds * 1e9)), lat);
lat.sort((a, b) => a - b);
const pct = (q) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] : 0);
console.log(`ops=${ops} seconds=${seconds.toFixed(3)} p50_us=${pct(0.5).toFixed(1)} p99_us=${pct(0.99).toFixed(1)}`);
await pool.end();
