//! PURE: the city model — what exists in the simulated city, and how it behaves over a day.
//!
//! - [`City`], [`District`], [`Segment`], [`Station`]: the typed model. Loop detectors sit on road
//!   [`Segment`]s (lanes, free-flow speed, capacity); air-quality [`Station`]s measure a subset of
//!   the pollutants.
//! - [`file`](mod@file): the TOML city file: raw types with `deny_unknown_fields`, validated into a
//!   [`City`] with every error reported with its line ([`CityFileErrors`]); and the reverse,
//!   [`City::to_toml`], so the built-in city can serve as the segment registry of other services.
//! - [`builtin`]: the built-in city (twelve districts, ~350 sensors) and its scaled variants
//!   ([`City::builtin_scaled`]); [`City::scaled`] scales any city to a sensor count.
//! - [`patterns`]: diurnal profiles, the fundamental diagram of traffic flow, the air model.
//! - [`events`]: incidents (capacity cuts that spill upstream) and pollution episodes, scheduled
//!   deterministically from the seed.

pub mod builtin;
pub mod events;
pub mod file;
pub mod patterns;

pub use file::{CityFileError, CityFileErrors};

use citypulse_schema::subject::is_token;
use citypulse_schema::Pollutant;

/// Why a city cannot be scaled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScaleError {
    /// A replicated id (suffixed `-r<k>`) no longer fits in a subject token.
    #[error("scaled sensor or segment id `{0}` is longer than 64 bytes; shorten the ids in the city file")]
    IdTooLong(String),
}

/// A simulated city.
#[derive(Debug, Clone, PartialEq)]
pub struct City {
    /// Human name.
    pub name: String,
    /// Offset of local time from UTC, minutes; the diurnal patterns follow local time.
    pub utc_offset_minutes: i32,
    /// The districts, in file order (the order sensors are numbered in).
    pub districts: Vec<District>,
}

/// A district: the second token of a reading subject.
#[derive(Debug, Clone, PartialEq)]
pub struct District {
    /// Subject token, e.g. `d01`.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Background PM2.5 of the district, µg/m³ (before traffic, daily cycle and episodes).
    pub pm25_background_ugm3: f64,
    /// Background SO2, ppb (higher near industry and ports).
    pub so2_background_ppb: f64,
    /// Road segments. Segments of one corridor are listed upstream to downstream: an incident
    /// on a segment spills back to the segments listed before it in the same corridor.
    pub segments: Vec<Segment>,
    /// Air-quality stations.
    pub stations: Vec<Station>,
}

/// The HCM facility type of a segment: how its level of service is graded downstream, and the
/// shape of its fundamental diagram here ([`patterns::FundamentalDiagram::for_facility`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Facility {
    /// Signalised arterial, collector or local street: interrupted flow, capacity per lane
    /// bounded by the green time (~800–1,000 veh/h/ln for a signalised arterial).
    UrbanStreet,
    /// Freeway or expressway: uninterrupted flow, 1,900–2,200 veh/h/ln (HCM 6th ed., ch. 12).
    Freeway,
}

impl Facility {
    /// Free-flow speed from which a segment whose city file names no facility is a freeway,
    /// km/h (HCM basic freeway segments: 55–75 mi/h ≈ 90–120 km/h). The processors' registry
    /// applies the same default.
    pub const FREEWAY_FROM_KMH: f64 = 90.0;

    /// The default for a segment without an explicit facility.
    pub fn from_free_flow(free_flow_kmh: f64) -> Facility {
        if free_flow_kmh >= Facility::FREEWAY_FROM_KMH {
            Facility::Freeway
        } else {
            Facility::UrbanStreet
        }
    }
}

/// A directed road segment carrying loop detectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Segment id (a token; not a subject, but the registry key processors use).
    pub id: String,
    /// Corridor within the district (a token); incidents spill upstream along it.
    pub corridor: String,
    /// Lanes; every detector on the segment covers all of them.
    pub lanes: u32,
    /// Free-flow speed, km/h.
    pub free_flow_kmh: f64,
    /// Capacity per lane, vehicles per hour.
    pub capacity_vphpl: f64,
    /// Facility type.
    pub facility: Facility,
    /// Length, km.
    pub length_km: f64,
    /// Demand at the weekday peak as a fraction of capacity (above ~1 the segment congests at
    /// peak hours).
    pub peak_demand: f64,
    /// Loop detector ids (subject tokens), each a sensor of kind `traffic`.
    pub detectors: Vec<String>,
}

/// An air-quality station: a sensor of kind `air`.
#[derive(Debug, Clone, PartialEq)]
pub struct Station {
    /// Sensor id (a subject token).
    pub id: String,
    /// What it measures, in the order given.
    pub pollutants: Vec<Pollutant>,
    /// Whether it also reports temperature and relative humidity.
    pub weather: bool,
}

impl City {
    /// Number of loop detectors.
    pub fn traffic_sensor_count(&self) -> usize {
        self.districts
            .iter()
            .flat_map(|d| &d.segments)
            .map(|s| s.detectors.len())
            .sum()
    }

    /// Number of air-quality stations.
    pub fn air_sensor_count(&self) -> usize {
        self.districts.iter().map(|d| d.stations.len()).sum()
    }

    /// Number of sensors of both kinds.
    pub fn sensor_count(&self) -> usize {
        self.traffic_sensor_count() + self.air_sensor_count()
    }

    /// The same city with exactly `sensors` sensors: each district keeps its share of detectors
    /// and of stations (largest-remainder apportionment). Growing replicates segments as parallel
    /// corridors (ids and corridors suffixed `-r<k>`) and stations (`-r<k>`); shrinking keeps the
    /// first ones in file order. Segments without detectors are left out.
    pub fn scaled(&self, sensors: usize) -> Result<City, ScaleError> {
        let weights: Vec<usize> = self
            .districts
            .iter()
            .flat_map(|d| {
                let detectors = d.segments.iter().map(|s| s.detectors.len()).sum();
                [detectors, d.stations.len()]
            })
            .collect();
        let counts = apportion(sensors, &weights);
        let mut city = self.clone();
        for (i, d) in city.districts.iter_mut().enumerate() {
            d.segments = replicate_segments(&self.districts[i].segments, counts[2 * i]);
            d.stations = replicate_stations(&self.districts[i].stations, counts[2 * i + 1]);
        }
        let too_long = city.districts.iter().find_map(|d| {
            d.segments
                .iter()
                .flat_map(|s| std::iter::once(&s.id).chain(&s.detectors))
                .chain(d.stations.iter().map(|s| &s.id))
                .find(|id| !is_token(id))
        });
        match too_long {
            Some(id) => Err(ScaleError::IdTooLong(id.clone())),
            None => Ok(city),
        }
    }
}

fn suffixed(id: &str, replica: usize) -> String {
    if replica == 0 {
        id.to_owned()
    } else {
        format!("{id}-r{replica}")
    }
}

fn replicate_segments(segments: &[Segment], detectors: usize) -> Vec<Segment> {
    let per_replica: usize = segments.iter().map(|s| s.detectors.len()).sum();
    let mut out = Vec::new();
    if per_replica == 0 {
        return out;
    }
    let mut left = detectors;
    let mut replica = 0;
    while left > 0 {
        for s in segments.iter().filter(|s| !s.detectors.is_empty()) {
            if left == 0 {
                break;
            }
            let take = s.detectors.len().min(left);
            left -= take;
            out.push(Segment {
                id: suffixed(&s.id, replica),
                corridor: suffixed(&s.corridor, replica),
                detectors: s.detectors[..take]
                    .iter()
                    .map(|d| suffixed(d, replica))
                    .collect(),
                ..s.clone()
            });
        }
        replica += 1;
    }
    out
}

fn replicate_stations(stations: &[Station], count: usize) -> Vec<Station> {
    if stations.is_empty() {
        return Vec::new();
    }
    (0..count)
        .map(|i| {
            let s = &stations[i % stations.len()];
            Station {
                id: suffixed(&s.id, i / stations.len()),
                ..s.clone()
            }
        })
        .collect()
}

/// Splits `total` into integer parts proportional to `weights` (Hamilton's largest-remainder
/// method; ties go to the earlier weight), so the parts sum to `total` exactly. All-zero weights
/// give all zeros.
pub fn apportion(total: usize, weights: &[usize]) -> Vec<usize> {
    let sum: usize = weights.iter().sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    // Integer arithmetic keeps the split exact and platform-independent.
    let total = total as u128;
    let sum = sum as u128;
    let mut parts: Vec<usize> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(weights.len());
    for (i, &w) in weights.iter().enumerate() {
        let exact = total * w as u128;
        parts.push((exact / sum) as usize);
        remainders.push((exact % sum, i));
    }
    let assigned: usize = parts.iter().sum();
    let missing = total as usize - assigned;
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in remainders.iter().take(missing) {
        parts[i] += 1;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportion_sums_exactly_and_is_proportional() {
        assert_eq!(apportion(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(apportion(0, &[5, 3]), vec![0, 0]);
        assert_eq!(apportion(7, &[0, 0]), vec![0, 0]);
        assert_eq!(apportion(100, &[25, 75]), vec![25, 75]);
        let parts = apportion(100_000, &[23, 4, 27, 3, 30, 5]);
        assert_eq!(parts.iter().sum::<usize>(), 100_000);
    }

    #[test]
    fn scaling_a_city_reaches_the_exact_sensor_count() {
        let city = City::builtin();
        for n in [1, 17, 350, 1000, 12_345] {
            let scaled = city.scaled(n).unwrap();
            assert_eq!(scaled.sensor_count(), n, "{n}");
        }
    }

    #[test]
    fn scaling_up_replicates_corridors_with_suffixed_ids() {
        let city = City::builtin();
        let scaled = city.scaled(city.sensor_count() * 2).unwrap();
        let d = &scaled.districts[0];
        assert!(d.segments.iter().any(|s| s.id.ends_with("-r1")
            && s.corridor.ends_with("-r1")
            && s.detectors.iter().all(|x| x.ends_with("-r1"))));
        assert!(d.stations.iter().any(|s| s.id.ends_with("-r1")));
    }
}
