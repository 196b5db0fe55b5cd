-- The readings archive as ingest created it before v0.3 (ingest/src/store.rs's SCHEMA before
-- commit a9650c7): the database's collation, the key (sensor, seq), and a (sensor, ts) index.
-- The upgrade tests in archive_store.rs start from it.
CREATE TABLE IF NOT EXISTS readings (
    sensor      text             NOT NULL,
    seq         bigint           NOT NULL CHECK (seq >= 0),
    district    text             NOT NULL,
    kind        text             NOT NULL CHECK (kind IN ('traffic', 'air')),
    ts          timestamptz      NOT NULL,
    count       integer,
    interval_s  integer,
    occupancy   double precision,
    speed_kmh   double precision,
    lanes       integer,
    pm25_ugm3   double precision,
    pm10_ugm3   double precision,
    o3_ppb      double precision,
    no2_ppb     double precision,
    so2_ppb     double precision,
    co_ppm      double precision,
    temp_c      double precision,
    rh_pct      double precision,
    archived_at timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor, seq)
);
CREATE INDEX IF NOT EXISTS readings_district_ts ON readings (district, ts);
CREATE INDEX IF NOT EXISTS readings_sensor_ts ON readings (sensor, ts);
