-- Gives a readings archive created before v0.3 the key a new archive has, (sensor, ts, seq),
-- in place of (sensor, seq), and drops the (sensor, ts) index the new key makes redundant.
--
-- Why: a device whose counter restarted sends seq numbers it sent before, at newer times.
-- Ingest passes them on, but a (sensor, seq) key skips them as duplicates, so the archive loses
-- them (ingest warns at start while the key is the earlier one). A repeat of a reading repeats
-- its ts too, so the new key still absorbs redeliveries. And with one B-tree fewer, PostgreSQL
-- spends about a quarter less CPU per archived row (docs/benchmarks.md, "The archive: one index
-- fewer").
--
-- Building the new key reads the whole table under an exclusive lock: run it with ingest
-- stopped, or let the archive lag meanwhile (its backlog waits in READINGS). For a table
-- partitioned by an earlier sql/readings_partitioned.sql, whose key (sensor, seq, ts) holds ts
-- already, it is optional: the new key orders the same entries for time-range queries.
-- The integration test an_earlier_key_is_converted_by_the_documented_script runs exactly this
-- script.
BEGIN;

ALTER TABLE readings DROP CONSTRAINT readings_pkey;
ALTER TABLE readings ADD CONSTRAINT readings_pkey PRIMARY KEY (sensor, ts, seq);
DROP INDEX IF EXISTS readings_sensor_ts;

COMMIT;
