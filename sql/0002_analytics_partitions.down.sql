-- Folds every monthly partition back into the default partition (rows
-- included: nothing is lost) and drops the maintenance function.
DO $do$
DECLARE
    parent  regclass := 'analytics_events'::regclass;
    cols    text;
    r       record;
BEGIN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
      FROM pg_attribute a
     WHERE a.attrelid = parent AND a.attnum > 0 AND NOT a.attisdropped;
    FOR r IN
        SELECT c.oid::regclass AS part
          FROM pg_inherits inh JOIN pg_class c ON c.oid = inh.inhrelid
         WHERE inh.inhparent = parent
           AND c.relname ~ '^analytics_events_[0-9]{4}_[0-9]{2}$'
         ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, r.part);
        EXECUTE format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s',
                       parent, cols, cols, r.part);
        EXECUTE format('DROP TABLE %s', r.part);
    END LOOP;
END
$do$;

DROP FUNCTION ds_analytics_ensure_partitions(integer, timestamptz);
