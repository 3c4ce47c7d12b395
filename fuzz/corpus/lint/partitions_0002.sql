-- Monthly partitions of analytics_events, created ahead of time.
--
-- ds_analytics_ensure_partitions(months_ahead, from_ts) gives every month
-- from from_ts's month (UTC) to months_ahead months later its own partition,
-- analytics_events_YYYY_MM, and returns how many it created. It is what
-- ds_migrate_maintain() and `ds-migrate maintain` run, and it is safe at any
-- time and from several hosts at once:
--   - runs are serialised with each other and with migrations by the
--     migration runner's advisory lock (transaction-scoped, so it is also
--     correct behind PgBouncer in transaction mode);
--   - a month already covered by any partition is skipped;
--   - rows of a new month that already sit in the default partition (the
--     month had no partition when they arrived) are moved into the new
--     partition, since attaching it over them would fail;
--   - the month's table is created on its own and attached, so the parent
--     is never locked against reads; writes wait for the call
--     (ds_migrate_maintain() does the same in short transactions and
--     copies rows in batches first).
-- The caller's lock_timeout bounds how long it queues behind traffic.
CREATE FUNCTION ds_analytics_ensure_partitions(months_ahead integer,
                                               from_ts timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql
AS $fn$
DECLARE
    parent     regclass := 'analytics_events'::regclass;
    nsp        text;
    def        regclass;
    cols       text;
    first_mon  timestamp;
    lo         timestamptz;
    hi         timestamptz;
    part       text;
    bounds     text;
    has_rows   boolean;
    locked     boolean := false;
    created    integer := 0;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'months_ahead must be 0 to 120, not %', months_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF from_ts IS NULL OR NOT isfinite(from_ts) THEN
        RAISE EXCEPTION 'from_ts must be a finite timestamp'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- libdatastore's migration lock key ('dsmigrat').
    PERFORM pg_advisory_xact_lock(7238249325589062004);

    SELECT n.nspname INTO nsp
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = parent;
    SELECT NULLIF(p.partdefid, 0)::regclass INTO def
      FROM pg_partitioned_table p WHERE p.partrelid = parent;
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
      FROM pg_attribute a
     WHERE a.attrelid = parent AND a.attnum > 0 AND NOT a.attisdropped;

    first_mon := date_trunc('month', from_ts AT TIME ZONE 'UTC');
    FOR i IN 0..months_ahead LOOP
        lo := (first_mon + make_interval(months => i)) AT TIME ZONE 'UTC';
        hi := (first_mon + make_interval(months => i + 1)) AT TIME ZONE 'UTC';
        part := 'analytics_events_' ||
                to_char(first_mon + make_interval(months => i), 'YYYY_MM');
        -- Bounds spelled in UTC, whatever the session's DateStyle/TimeZone.
        bounds := format('FROM (%L) TO (%L)',
                         to_char(lo AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00',
                         to_char(hi AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00');

        -- Covered (even partly) by an existing range partition: leave it.
        CONTINUE WHEN EXISTS (
            SELECT 1
              FROM pg_inherits inh
              JOIN pg_class c ON c.oid = inh.inhrelid
             CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                             '^FOR VALUES FROM \((.*)\) TO \((.*)\)$') AS b(m)
             WHERE inh.inhparent = parent
               AND (CASE WHEN b.m[1] = 'MINVALUE' THEN '-infinity'::timestamptz
                         WHEN b.m[1] = 'MAXVALUE' THEN 'infinity'::timestamptz
                         ELSE btrim(b.m[1], '''')::timestamptz END) < hi
               AND (CASE WHEN b.m[2] = 'MINVALUE' THEN '-infinity'::timestamptz
                         WHEN b.m[2] = 'MAXVALUE' THEN 'infinity'::timestamptz
                         ELSE btrim(b.m[2], '''')::timestamptz END) > lo);

        -- From here on no row may slip into the default partition between
        -- the check and the attach. SHARE on the parent makes writers wait
        -- before their row is routed (one already routed to the default
        -- partition would fail the new bounds); readers go on.
        IF NOT locked THEN
            EXECUTE format('LOCK TABLE ONLY %s IN SHARE MODE', parent);
            locked := true;
        END IF;

        -- The month's table on its own, with a CHECK of its bounds, so that
        -- attaching it needs no scan of it and locks only the new table
        -- (and the parent in SHARE UPDATE EXCLUSIVE, which blocks neither
        -- reads nor writes).
        EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING ALL EXCLUDING IDENTITY, '
                       'CONSTRAINT %I CHECK (occurred_at >= %L AND occurred_at < %L))',
                       nsp, part, parent, part || '_bounds', lo, hi);

        has_rows := false;
        IF def IS NOT NULL THEN
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE occurred_at >= $1 AND occurred_at < $2)', def)
               INTO has_rows USING lo, hi;
        END IF;
        IF has_rows THEN
            -- The month's rows move from the default partition (which the
            -- attach then checks holds none of them).
            EXECUTE format('INSERT INTO %I.%I (%s) SELECT %s FROM %s '
                           'WHERE occurred_at >= $1 AND occurred_at < $2',
                           nsp, part, cols, cols, def) USING lo, hi;
            EXECUTE format('DELETE FROM %s WHERE occurred_at >= $1 AND occurred_at < $2', def)
               USING lo, hi;
        END IF;
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES %s',
                       parent, nsp, part, bounds);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$fn$;

COMMENT ON FUNCTION ds_analytics_ensure_partitions(integer, timestamptz) IS
    'Creates the monthly analytics_events partitions from from_ts''s month to months_ahead months later (UTC); returns how many it created. Run by ds_migrate_maintain() / ds-migrate maintain.';

-- A fresh database starts with this month and the next three. A database
-- that already holds events (an upgrade from version 1) keeps them in the
-- default partition for now: moving them here would make writers wait for
-- the whole move in this one transaction, while `ds-migrate maintain`
-- (ds_migrate_maintain()) moves them in batches.
DO $first$
BEGIN
    IF EXISTS (SELECT 1 FROM analytics_events LIMIT 1) THEN
        RAISE NOTICE 'analytics_events holds rows: run ds-migrate maintain to create its monthly partitions';
    ELSE
        PERFORM ds_analytics_ensure_partitions(3);
    END IF;
END
$first$;
