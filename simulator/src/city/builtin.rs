//! The built-in city: twelve districts of a mid-sized central-European city, ~300 loop detectors
//! on motorway, arterial and local corridors, ~50 air-quality stations.
//!
//! Road classes (capacity per lane is what the segment can pass over an hour, signals included):
//!
//! | class | facility | lanes | free flow, km/h | capacity, veh/h/ln | peak demand / capacity | length, km |
//! |---|---|---|---|---|---|---|
//! | motorway | freeway | 3–4 | 90, 100, 110 | 1,900–2,200 (HCM 6th ed., ch. 12: basic freeway segments) | 0.72–0.85 | 1.0–3.0 |
//! | arterial | urban street | 2–3 | 50, 60, 70 | 800, 900, 1,000 (a signalised arterial: ~1,900 veh/h of green × g/C ≈ 0.45–0.5) | 0.70–0.85 | 0.3–0.8 |
//! | local | urban street | 1–2 | 30, 40, 50 | 600, 700, 800 (stop- or signal-controlled) | 0.50–0.80 | 0.15–0.5 |
//!
//! Peak demand stays below capacity: recurrent weekday peaks run near capacity at lower speeds
//! (the fundamental diagram's free-flow branch), and only incidents break a road down.
//!
//! It is generated from fixed constants, never from `--seed`: every run, and every service that
//! loads it as the segment registry (`citypulse-simulator city --print`), sees the same city. A
//! segment's attributes depend only on its district and index, so [`City::builtin_scaled`] grows
//! the same city: `loop-d01-007` is the same segment at 350 sensors and at 100,000.

use super::{apportion, City, District, Facility, Segment, Station};
use citypulse_schema::Pollutant;

/// Segments per corridor: each corridor is a chain of this many segments, upstream first.
pub const CORRIDOR_LEN: usize = 8;

/// `(id, name, PM2.5 background µg/m³, SO2 background ppb, industrial)`.
const DISTRICTS: [(&str, &str, f64, f64, bool); 12] = [
    ("d01", "Old Town", 9.0, 1.5, false),
    ("d02", "Harbour", 11.0, 6.0, true),
    ("d03", "University", 7.0, 1.0, false),
    ("d04", "Riverside", 8.0, 1.0, false),
    ("d05", "Central Station", 10.0, 1.5, false),
    ("d06", "Market Square", 9.0, 1.5, false),
    ("d07", "Industrial Park", 12.0, 8.0, true),
    ("d08", "Northgate", 7.0, 1.0, false),
    ("d09", "Westend", 6.0, 1.0, false),
    ("d10", "Airport", 10.0, 3.0, false),
    ("d11", "Hillside", 5.0, 0.8, false),
    ("d12", "Lakeshore", 6.0, 1.0, false),
];

/// Fixed salt of the built-in city's hash: the city must not change with `--seed`.
const SALT: u64 = 0x6369_7479_7075_6c73; // "citypuls"

/// SplitMix64 finalizer: a well-mixed, platform-independent hash of small integers.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn h(district: usize, what: u64, index: usize) -> u64 {
    mix(SALT ^ mix((district as u64) << 40 ^ what << 32 ^ index as u64))
}

/// Picks `options[h % len]`.
fn pick<T: Copy>(hash: u64, options: &[T]) -> T {
    options[(hash % options.len() as u64) as usize]
}

/// Uniform in `lo..hi` from a hash, rounded to hundredths.
fn span(hash: u64, lo: f64, hi: f64) -> f64 {
    let x = (hash >> 11) as f64 / (1u64 << 53) as f64;
    ((lo + (hi - lo) * x) * 100.0).round() / 100.0
}

#[derive(Clone, Copy)]
enum RoadClass {
    Motorway,
    Arterial,
    Local,
}

impl City {
    /// The built-in city at its natural size (about 350 sensors).
    pub fn builtin() -> City {
        generate(&base_counts())
    }

    /// The built-in city scaled to exactly `sensors` sensors: each district keeps its share of
    /// detectors and stations, new segments extend the district with further corridors.
    pub fn builtin_scaled(sensors: usize) -> City {
        generate(&apportion(sensors, &base_counts()))
    }
}

/// `[segments of d01, stations of d01, segments of d02, …]` at the natural size.
fn base_counts() -> Vec<usize> {
    (0..DISTRICTS.len())
        .flat_map(|i| {
            [
                20 + (h(i, 1, 0) % 11) as usize,
                3 + (h(i, 2, 0) % 3) as usize,
            ]
        })
        .collect()
}

fn generate(counts: &[usize]) -> City {
    let districts = DISTRICTS
        .iter()
        .enumerate()
        .map(|(i, &(id, name, pm25, so2, industrial))| District {
            id: id.to_owned(),
            name: name.to_owned(),
            pm25_background_ugm3: pm25,
            so2_background_ppb: so2,
            segments: (0..counts[2 * i]).map(|j| segment(i, id, j)).collect(),
            stations: (0..counts[2 * i + 1])
                .map(|j| station(i, id, j, industrial))
                .collect(),
        })
        .collect();
    City {
        name: "Citypulse built-in city".to_owned(),
        utc_offset_minutes: 60,
        districts,
    }
}

/// Lanes, free-flow speeds, capacities per lane, peak demand range and length range (km) of a
/// road class (see the module docs).
type ClassTable = (
    &'static [u32],
    &'static [f64],
    &'static [f64],
    (f64, f64),
    (f64, f64),
);

fn road_class(class: RoadClass) -> ClassTable {
    match class {
        RoadClass::Motorway => (
            &[3, 4],
            &[90.0, 100.0, 110.0],
            &[1900.0, 2000.0, 2100.0, 2200.0],
            (0.72, 0.85),
            (1.0, 3.0),
        ),
        RoadClass::Arterial => (
            &[2, 3],
            &[50.0, 60.0, 70.0],
            &[800.0, 900.0, 1000.0],
            (0.7, 0.85),
            (0.3, 0.8),
        ),
        RoadClass::Local => (
            &[1, 2],
            &[30.0, 40.0, 50.0],
            &[600.0, 700.0, 800.0],
            (0.5, 0.8),
            (0.15, 0.5),
        ),
    }
}

fn segment(i: usize, district: &str, j: usize) -> Segment {
    let corridor = j / CORRIDOR_LEN;
    let ch = h(i, 3, corridor);
    let class = match ch % 10 {
        0 | 1 => RoadClass::Motorway,
        2..=6 => RoadClass::Arterial,
        _ => RoadClass::Local,
    };
    let (lanes, speeds, capacities, demand, length) = road_class(class);
    let facility = match class {
        RoadClass::Motorway => Facility::Freeway,
        RoadClass::Arterial | RoadClass::Local => Facility::UrbanStreet,
    };
    let n = j + 1;
    Segment {
        id: format!("seg-{district}-{n:03}"),
        corridor: format!("c{:02}", corridor + 1),
        lanes: pick(ch >> 8, lanes),
        free_flow_kmh: pick(ch >> 16, speeds),
        capacity_vphpl: pick(ch >> 24, capacities),
        facility,
        length_km: span(h(i, 6, j), length.0, length.1),
        peak_demand: span(h(i, 4, j), demand.0, demand.1),
        detectors: vec![format!("loop-{district}-{n:03}")],
    }
}

fn station(i: usize, district: &str, j: usize, industrial: bool) -> Station {
    use Pollutant::{Co, No2, Pm10, Pm25, So2, O3};
    let mut pollutants = match h(i, 5, j) % 10 {
        0..=5 => vec![Pm25, Pm10, No2, O3],
        6 | 7 => vec![Pm25, Pm10, No2, O3, Co],
        8 => vec![Pm25, Pm10],
        _ => vec![Pm25, Pm10, No2, O3, So2, Co],
    };
    if industrial && !pollutants.contains(&So2) && pollutants.len() > 2 {
        pollutants.push(So2);
    }
    Station {
        id: format!("aq-{district}-{}", j + 1),
        pollutants,
        weather: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use citypulse_schema::subject::is_token;
    use std::collections::HashSet;

    #[test]
    fn builtin_city_has_the_documented_shape() {
        let city = City::builtin();
        assert_eq!(city.districts.len(), 12);
        for d in &city.districts {
            assert!((20..=30).contains(&d.segments.len()), "{}", d.id);
            assert!((3..=5).contains(&d.stations.len()), "{}", d.id);
        }
        let n = city.sensor_count();
        assert!((250..=420).contains(&n), "{n}");
    }

    #[test]
    fn builtin_ids_are_unique_tokens() {
        let city = City::builtin_scaled(20_000);
        let mut seen = HashSet::new();
        for d in &city.districts {
            assert!(is_token(&d.id));
            for s in &d.segments {
                assert!(is_token(&s.id) && is_token(&s.corridor));
                for x in &s.detectors {
                    assert!(is_token(x) && seen.insert(x.clone()), "{x}");
                }
            }
            for s in &d.stations {
                assert!(is_token(&s.id) && seen.insert(s.id.clone()), "{}", s.id);
            }
        }
    }

    #[test]
    fn scaled_builtin_city_has_exactly_the_requested_sensors() {
        for n in [1, 100, 350, 100_000] {
            assert_eq!(City::builtin_scaled(n).sensor_count(), n);
        }
    }

    #[test]
    fn scaling_keeps_existing_segments_unchanged() {
        let small = City::builtin();
        let big = City::builtin_scaled(100_000);
        for (a, b) in small.districts.iter().zip(&big.districts) {
            assert_eq!(a.segments[..], b.segments[..a.segments.len()]);
            assert_eq!(a.stations[..], b.stations[..a.stations.len()]);
        }
    }

    #[test]
    fn natural_size_is_a_fixed_point_of_scaling() {
        let city = City::builtin();
        assert_eq!(City::builtin_scaled(city.sensor_count()), city);
    }

    #[test]
    fn segment_attributes_are_in_realistic_ranges() {
        for d in &City::builtin().districts {
            for s in &d.segments {
                assert!((1..=4).contains(&s.lanes));
                assert!((30.0..=110.0).contains(&s.free_flow_kmh));
                let capacity = match s.facility {
                    Facility::Freeway => 1900.0..=2200.0,
                    Facility::UrbanStreet => 600.0..=1000.0,
                };
                assert!(capacity.contains(&s.capacity_vphpl), "{s:?}");
                assert!((0.5..=0.9).contains(&s.peak_demand), "{s:?}");
                assert!((0.15..=3.0).contains(&s.length_km), "{s:?}");
                // The processors' default for a city file without `facility` agrees.
                assert_eq!(
                    Facility::from_free_flow(s.free_flow_kmh),
                    s.facility,
                    "{s:?}"
                );
            }
        }
    }
}
