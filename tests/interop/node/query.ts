// One Drizzle query per table of the generated schema (schema.ts), against
// the database named by the first argument. Prints the tables it read and
// checks that an id beyond 2^53 comes back exact.
import { is } from 'drizzle-orm';
import { PgTable, getTableConfig } from 'drizzle-orm/pg-core';
import { drizzle } from 'drizzle-orm/node-postgres';
import { eq } from 'drizzle-orm';
import { Pool } from 'pg';
import * as schema from './schema';

async function main(): Promise<number> {
  const pool = new Pool({ connectionString: process.argv[2], max: 1 });
  const db = drizzle(pool);
  let tables = 0;
  for (const value of Object.values(schema)) {
    if (!is(value, PgTable)) continue;
    const rows = await db.select().from(value).limit(1);
    console.log(`drizzle: ${getTableConfig(value).name}: ${rows.length} row(s)`);
    tables++;
  }
  // the fixture user of drizzle-check.sh has id 2^53 + 1
  const big = 9007199254740993n;
  const users = await db.select().from(schema.users).where(eq(schema.users.id, big));
  await pool.end();
  if (users.length !== 1 || users[0].id !== big || typeof users[0].id !== 'bigint') {
    console.error('drizzle: the user with id 2^53+1 did not come back exact');
    return 1;
  }
  if (tables < 10) {
    console.error(`drizzle: only ${tables} tables in the schema`);
    return 1;
  }
  console.log(`drizzle: ${tables} tables queried; id ${users[0].id} exact`);
  return 0;
}

main().then((code) => process.exit(code), (e) => {
  console.error('drizzle:', e);
  process.exit(1);
});
