-- Makes the identifier columns of a readings archive created before v0.3 collate bytewise
-- ("C"), as a new archive's do: the three B-trees then compare ids with memcmp rather than the
-- locale's strcoll, which costs PostgreSQL less CPU per archived row on a UTF-8 locale
-- (docs/benchmarks.md, "The archive: identifiers collated bytewise"), and ORDER BY sorts
-- ids by byte. Optional: an archive left as it is works as before.
--
-- Changing a text column's collation rewrites no rows, but rebuilds the indexes on it (all three)
-- under an exclusive lock: run it with ingest stopped, or let the archive lag meanwhile (its
-- backlog waits in READINGS). The integration test
-- an_earlier_archive_is_converted_by_the_documented_script runs exactly this script.
BEGIN;

ALTER TABLE readings
    ALTER COLUMN sensor TYPE text COLLATE "C",
    ALTER COLUMN district TYPE text COLLATE "C",
    ALTER COLUMN kind TYPE text COLLATE "C";

COMMIT;
