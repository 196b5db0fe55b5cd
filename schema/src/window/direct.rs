//! The fast path of [`WindowResult::decode`]: one pass of the borrowed-bytes reader over the
//! plain form the processors write. A result that is not in that form — an error, an unknown or
//! non-text key, a repeated key, a chunked string, a tag, an integer for a float, a field of the
//! other kind, a token or number out of range — is left to the serde decoder, which decides it
//! (and words its error) as before. So this path only has to be right on what it accepts: the
//! differential tests (`window::differential`) check that on every input it accepts, the serde
//! decoder returns the same result, floats bit for bit.
//!
//! Why: a third of the alerts service's CPU went to the serde decoder, whose `flatten` buffers
//! every entry of the map before reading it (issue 9, `perf` on `scripts/bench`'s alerts stage).

use super::{AirMetrics, TrafficMetrics, WindowMetrics, WindowResult, MAX_WINDOW_BYTES};
use crate::codec::{Fields, Unusual};
use crate::vocab::Kind;
use std::str::FromStr;

/// The wire keys in the order the encoder writes them: the common keys, then the traffic
/// figures, then the air figures (the field order of `WireWindow`, `WireTraffic` and
/// [`AirMetrics`]). A test checks this against the encoder.
pub(super) const NAMES: [&str; 40] = [
    // common
    "window_start",
    "window_end",
    "district",
    "kind",
    "sensor",
    "readings",
    "sensors",
    // traffic
    "flow_vph",
    "occupancy",
    "speed_kmh",
    "density_vpkm",
    "los",
    "congestion_index",
    "congested_share",
    "travel_time_index",
    // air
    "aqi",
    "category",
    "dominant",
    "aqi_pm25",
    "aqi_pm10",
    "aqi_o3",
    "aqi_no2",
    "aqi_so2",
    "aqi_co",
    "pm25_ugm3",
    "pm25_nowcast_ugm3",
    "pm25_24h_ugm3",
    "pm10_ugm3",
    "pm10_nowcast_ugm3",
    "pm10_24h_ugm3",
    "o3_1h_ppb",
    "o3_8h_ppb",
    "no2_1h_ppb",
    "so2_1h_ppb",
    "co_8h_ppm",
    "eaqi",
    "eaqi_dominant",
    "beyond_aqi",
    "aqi_sensor",
    "so2_24h_ppb",
];
/// Where the traffic keys start in [`NAMES`].
const TRAFFIC: usize = 7;
/// Where the air keys start in [`NAMES`].
const AIR: usize = 15;

/// The result, if `bytes` is a window result in the plain form; `None` leaves it to serde.
pub(super) fn decode(bytes: &[u8]) -> Option<WindowResult> {
    let mut f = Fields::parse(bytes, MAX_WINDOW_BYTES, &NAMES).ok()?;
    if f.has_others() {
        return None;
    }
    let mut next = Next { f: &mut f, i: 0 };
    (|| {
        let window_start = next.u64()?.ok_or(Unusual)?;
        let window_end = next.u64()?.ok_or(Unusual)?;
        let district = next.str()?.ok_or(Unusual)?.to_owned();
        let kind: Kind = next.token()?.ok_or(Unusual)?;
        let sensor = next.str()?.map(str::to_owned);
        let readings = next.u64()?.ok_or(Unusual)?;
        let sensors = next.u64()?.ok_or(Unusual)?;
        let metrics = match kind {
            Kind::Traffic => {
                let traffic = traffic(&mut next)?;
                next.none_from(AIR)?;
                WindowMetrics::Traffic(traffic)
            }
            Kind::Air => {
                next.none_until(AIR)?;
                WindowMetrics::Air(Box::new(air(&mut next)?))
            }
        };
        Ok::<_, Unusual>(WindowResult {
            window_start,
            window_end,
            district,
            sensor,
            readings,
            sensors,
            metrics,
        })
    })()
    .ok()
}

fn traffic(next: &mut Next<'_, '_>) -> Result<TrafficMetrics, Unusual> {
    debug_assert_eq!(next.i, TRAFFIC);
    Ok(TrafficMetrics {
        flow_vph: next.f64()?.ok_or(Unusual)?,
        occupancy: next.f64()?.ok_or(Unusual)?,
        speed_kmh: next.f64()?,
        density_vpkm: next.f64()?,
        los: next.token()?,
        congestion_index: next.f64()?,
        congested_share: next.f64()?,
        travel_time_index: next.f64()?,
    })
}

fn air(next: &mut Next<'_, '_>) -> Result<AirMetrics, Unusual> {
    debug_assert_eq!(next.i, AIR);
    Ok(AirMetrics {
        aqi: next.u16()?,
        category: next.token()?,
        dominant: next.token()?,
        aqi_pm25: next.u16()?,
        aqi_pm10: next.u16()?,
        aqi_o3: next.u16()?,
        aqi_no2: next.u16()?,
        aqi_so2: next.u16()?,
        aqi_co: next.u16()?,
        pm25_ugm3: next.f64()?,
        pm25_nowcast_ugm3: next.f64()?,
        pm25_24h_ugm3: next.f64()?,
        pm10_ugm3: next.f64()?,
        pm10_nowcast_ugm3: next.f64()?,
        pm10_24h_ugm3: next.f64()?,
        o3_1h_ppb: next.f64()?,
        o3_8h_ppb: next.f64()?,
        no2_1h_ppb: next.f64()?,
        so2_1h_ppb: next.f64()?,
        co_8h_ppm: next.f64()?,
        eaqi: next.token()?,
        eaqi_dominant: next.token()?,
        // A boolean is not kept by the reader; `true` only ever comes with an AQI above 500.
        beyond_aqi: next.absent()?,
        aqi_sensor: next.str()?.map(str::to_owned),
        so2_24h_ppb: next.f64()?,
    })
}

/// Reads the fields in [`NAMES`] order.
struct Next<'f, 'a> {
    f: &'f mut Fields<'a, 40>,
    i: usize,
}

impl<'a> Next<'_, 'a> {
    fn step(&mut self) -> usize {
        self.i += 1;
        self.i - 1
    }

    fn u64(&mut self) -> Result<Option<u64>, Unusual> {
        let i = self.step();
        self.f.plain_u64(i)
    }

    fn u16(&mut self) -> Result<Option<u16>, Unusual> {
        self.u64()?
            .map(|n| u16::try_from(n).map_err(|_| Unusual))
            .transpose()
    }

    fn f64(&mut self) -> Result<Option<f64>, Unusual> {
        let i = self.step();
        self.f.plain_f64(i)
    }

    fn str(&mut self) -> Result<Option<&'a str>, Unusual> {
        let i = self.step();
        self.f.plain_str(i)
    }

    /// A closed-vocabulary token (`kind`, `los`, `category`, ...).
    fn token<T: FromStr>(&mut self) -> Result<Option<T>, Unusual> {
        self.str()?
            .map(|s| s.parse().map_err(|_| Unusual))
            .transpose()
    }

    /// A field this path does not read: only its absence is plain.
    fn absent<T>(&mut self) -> Result<Option<T>, Unusual> {
        let i = self.step();
        match self.f.is_absent(i) {
            true => Ok(None),
            false => Err(Unusual),
        }
    }

    /// The fields from here to `end` (exclusive) are absent: the other kind's figures.
    fn none_until(&mut self, end: usize) -> Result<(), Unusual> {
        while self.i < end {
            self.absent::<()>()?;
        }
        Ok(())
    }

    /// The fields from `start` to the end of [`NAMES`] are absent.
    fn none_from(&mut self, start: usize) -> Result<(), Unusual> {
        debug_assert_eq!(self.i, start);
        self.none_until(NAMES.len())
    }
}
