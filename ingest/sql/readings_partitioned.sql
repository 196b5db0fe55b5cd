-- Converts the readings archive that citypulse-ingest created into a table range-partitioned by
-- month on ts (PostgreSQL >= 11), keeping every row. Run it with ingest stopped, or let the
-- archive lag meanwhile: its backlog waits in READINGS.
--
-- A partitioned table's unique keys must contain the partitioning column: the key,
-- (sensor, ts, seq), does. Ingest's insert names no conflict target, so it needs no change.
-- Ingest's start-up DDL (CREATE ... IF NOT EXISTS) leaves the converted table alone, because
-- the names are kept. A table with an earlier version's key, (sensor, seq), and its
-- (sensor, ts) index is converted too, to the new key.
--
-- Create next months' partitions ahead of time (cron, pg_partman): a month without its
-- partition lands in readings_default, and a partition cannot be attached for a range the
-- default partition already holds rows of.
BEGIN;

ALTER TABLE readings RENAME TO readings_unpartitioned;
ALTER TABLE readings_unpartitioned RENAME CONSTRAINT readings_pkey TO readings_unpartitioned_pkey;
ALTER INDEX readings_district_ts RENAME TO readings_unpartitioned_district_ts;
ALTER INDEX IF EXISTS readings_sensor_ts RENAME TO readings_unpartitioned_sensor_ts;

CREATE TABLE readings (LIKE readings_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (ts);
ALTER TABLE readings ADD CONSTRAINT readings_pkey PRIMARY KEY (sensor, ts, seq);
CREATE INDEX readings_district_ts ON readings (district, ts);

-- Monthly partitions from the oldest row to three months ahead, and a default partition so
-- that no insert can ever fail for want of one.
DO $$
DECLARE
    m date;
BEGIN
    FOR m IN
        SELECT generate_series(
            date_trunc('month', coalesce((SELECT min(ts) FROM readings_unpartitioned), now())),
            date_trunc('month', now()) + interval '3 months',
            interval '1 month')::date
    LOOP
        EXECUTE format('CREATE TABLE readings_%s PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                       to_char(m, 'YYYY_MM'), m, m + interval '1 month');
    END LOOP;
END $$;
CREATE TABLE readings_default PARTITION OF readings DEFAULT;

INSERT INTO readings SELECT * FROM readings_unpartitioned;
DROP TABLE readings_unpartitioned;

COMMIT;
