//! The segment registry: what the city file says about the road segment under each detector
//! (free-flow speed, capacity per lane, facility type, length). PURE: it parses text.
//!
//! The file is the simulator's city file (`--city`, TOML, see `simulator/src/city/file.rs`).
//! Only what the processors need is read, and unknown keys are ignored, so the registry keeps
//! working when the city format grows:
//!
//! ```toml
//! [[district]]
//! id = "d01"
//! [[district.segment]]
//! id = "seg-d01-001"
//! free_flow_kmh = 50.0
//! capacity_vphpl = 900.0
//! facility = "urban_street"      # or "freeway" / "expressway"
//! length_km = 0.4
//! detectors = ["loop-d01-001"]
//! ```
//!
//! `facility` decides how level of service is graded (see [`Facility`]). A segment without it
//! is a freeway when its `free_flow_kmh` is 90 km/h or more and an urban street otherwise
//! ([`Facility::from_free_flow`]); a detector not listed at all is an urban street graded against
//! its learned free-flow speed. `length_km` weighs the segment in its district's travel time
//! index; without it every segment counts 1 km.

use crate::domain::traffic::{Facility, SegmentParams};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// Free-flow speed and capacity by detector (sensor id).
///
/// Kept compact, because it lives as long as the service: the detector ids sorted, each with
/// an index into the distinct parameter sets (a scaled city repeats a few hundred). At 100,000
/// sensors (86,783 detectors) a map of detector to parameters took 13 MB, about 150 bytes a
/// detector; this takes 3.4 MB, about 40 (heaptrack, docs/benchmarks.md).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentRegistry {
    /// Detector ids in order, each with the index of its segment's parameters in `params`.
    detectors: Box<[(Box<str>, u32)]>,
    /// The distinct parameter sets.
    params: Box<[SegmentParams]>,
}

/// Why a city file cannot serve as a registry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// Not TOML, or a needed key has the wrong type.
    #[error("city file is not valid: {0}")]
    Syntax(String),
    /// A segment's free-flow speed or capacity is not a positive number.
    #[error("segment `{segment}`: {field} must be a positive number, got {value}")]
    Value {
        /// Segment id.
        segment: String,
        /// The key.
        field: &'static str,
        /// The offending value.
        value: f64,
    },
    /// A segment's facility is not one of the known names.
    #[error("segment `{segment}`: facility `{value}` is not urban_street, freeway or expressway")]
    Facility {
        /// Segment id.
        segment: String,
        /// The offending value.
        value: String,
    },
    /// A detector is listed under two segments.
    #[error("detector `{0}` is listed under more than one segment")]
    DuplicateDetector(String),
}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} problem(s) in the city file: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct RegistryErrors(pub Vec<RegistryError>);

#[derive(Debug, Deserialize)]
struct RawCity {
    #[serde(default)]
    district: Vec<RawDistrict>,
}

#[derive(Debug, Deserialize)]
struct RawDistrict {
    #[serde(default)]
    segment: Vec<RawSegment>,
}

#[derive(Debug, Deserialize)]
struct RawSegment {
    #[serde(default)]
    id: String,
    free_flow_kmh: Option<f64>,
    capacity_vphpl: Option<f64>,
    facility: Option<String>,
    length_km: Option<f64>,
    #[serde(default)]
    detectors: Vec<String>,
}

/// Parses a city file a district at a time where that is certainly the same as parsing it
/// whole ([`district_chunks`]), and whole otherwise or on any error (whose message then has the
/// file's own line numbers). Why: the TOML parser's document tree takes about 24 times the
/// text, so the 19 MB file of a 100,000-sensor city peaked at 460 MB while it was read, and the
/// processors at 620 MB before their first reading (more than deploy/k8s's 512 MiB limit); a
/// district at a time, a twelfth of that.
fn parse_city(text: &str) -> Result<RawCity, toml::de::Error> {
    let Some((prelude, districts)) = district_chunks(text) else {
        return toml::from_str(text);
    };
    parse_pieces(prelude, &districts).or_else(|_| toml::from_str(text))
}

/// The prelude and each district parsed apart, their districts in order.
fn parse_pieces(prelude: &str, districts: &[&str]) -> Result<RawCity, toml::de::Error> {
    let mut city: RawCity = toml::from_str(prelude)?;
    for chunk in districts {
        let part: RawCity = toml::from_str(chunk)?;
        city.district.extend(part.district);
    }
    Ok(city)
}

/// PURE: the text before the first `[[district]]` header and each district from its header to
/// the next, when parsing those apart is certainly parsing the file: no multi-line string
/// (whose lines could look like headers) and, from the first district on, no table header but
/// `[[district]]` and the district's own subtables (`[district.…]`, `[[district.…]]`), so no
/// table can be defined in two pieces. `None` otherwise.
fn district_chunks(text: &str) -> Option<(&str, Vec<&str>)> {
    if text.contains("\"\"\"") || text.contains("'''") {
        return None;
    }
    let mut starts = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let header = line.trim();
        let header = header.split('#').next().unwrap_or("").trim_end();
        if header == "[[district]]" {
            starts.push(offset);
        } else if !starts.is_empty()
            && header.starts_with('[')
            && !["[district.", "[[district."]
                .iter()
                .any(|p| header.starts_with(p))
        {
            return None;
        }
        offset += line.len();
    }
    let first = *starts.first()?;
    let ends = starts.iter().skip(1).copied().chain([text.len()]);
    let districts = starts.iter().zip(ends).map(|(&a, b)| &text[a..b]).collect();
    Some((&text[..first], districts))
}

impl SegmentRegistry {
    /// An empty registry: every free-flow speed is learned.
    pub fn empty() -> SegmentRegistry {
        SegmentRegistry::default()
    }

    /// Parses a city file, reporting every problem at once.
    pub fn from_toml(text: &str) -> Result<SegmentRegistry, RegistryErrors> {
        let raw = parse_city(text)
            .map_err(|e| RegistryErrors(vec![RegistryError::Syntax(e.to_string())]))?;
        let mut errors = Vec::new();
        let mut by_detector = BTreeMap::new();
        for seg in raw.district.iter().flat_map(|d| &d.segment) {
            let mut positive = |field: &'static str, v: Option<f64>| match v {
                Some(x) if !(x.is_finite() && x > 0.0) => {
                    errors.push(RegistryError::Value {
                        segment: seg.id.clone(),
                        field,
                        value: x,
                    });
                    None
                }
                other => other,
            };
            let free_flow_kmh = positive("free_flow_kmh", seg.free_flow_kmh);
            let capacity_vphpl = positive("capacity_vphpl", seg.capacity_vphpl);
            let length_km = positive("length_km", seg.length_km);
            let facility = match seg.facility.as_deref() {
                None => Facility::from_free_flow(free_flow_kmh),
                Some(name) => Facility::parse(name).unwrap_or_else(|| {
                    errors.push(RegistryError::Facility {
                        segment: seg.id.clone(),
                        value: name.to_owned(),
                    });
                    Facility::UrbanStreet
                }),
            };
            let params = SegmentParams {
                free_flow_kmh,
                capacity_vphpl,
                facility,
                length_km,
            };
            for d in &seg.detectors {
                if by_detector.insert(d.clone(), params).is_some() {
                    errors.push(RegistryError::DuplicateDetector(d.clone()));
                }
            }
        }
        if errors.is_empty() {
            Ok(SegmentRegistry::compact(by_detector))
        } else {
            Err(RegistryErrors(errors))
        }
    }

    /// The compact form of a map of detector to parameters.
    fn compact(by_detector: BTreeMap<String, SegmentParams>) -> SegmentRegistry {
        let mut params = Vec::new();
        let mut index: HashMap<ParamsKey, u32> = HashMap::new();
        let detectors = by_detector
            .into_iter()
            .map(|(detector, p)| {
                let i = *index.entry(ParamsKey::of(&p)).or_insert_with(|| {
                    params.push(p);
                    u32::try_from(params.len() - 1).unwrap_or(u32::MAX)
                });
                (detector.into_boxed_str(), i)
            })
            .collect();
        SegmentRegistry {
            detectors,
            params: params.into_boxed_slice(),
        }
    }

    /// What the registry knows about `detector`'s segment (empty when unlisted).
    pub fn params(&self, detector: &str) -> SegmentParams {
        self.detectors
            .binary_search_by(|(d, _)| d.as_ref().cmp(detector))
            .ok()
            .and_then(|at| self.params.get(self.detectors[at].1 as usize))
            .copied()
            .unwrap_or_default()
    }

    /// Detectors listed.
    pub fn len(&self) -> usize {
        self.detectors.len()
    }

    /// Whether no detector is listed.
    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty()
    }
}

/// Parameter sets compared bit for bit, to share equal ones.
#[derive(PartialEq, Eq, Hash)]
struct ParamsKey([Option<u64>; 3], Facility);

impl ParamsKey {
    fn of(p: &SegmentParams) -> ParamsKey {
        let bits = |v: Option<f64>| v.map(f64::to_bits);
        ParamsKey(
            [
                bits(p.free_flow_kmh),
                bits(p.capacity_vphpl),
                bits(p.length_km),
            ],
            p.facility,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CITY: &str = r#"
        name = "Springfield"
        utc_offset_minutes = 60
        [[district]]
        id = "d01"
        pm25_background_ugm3 = 9.0
        [[district.segment]]
        id = "seg-1"
        corridor = "c01"
        lanes = 2
        free_flow_kmh = 50.0
        capacity_vphpl = 1900.0
        peak_demand = 0.95
        detectors = ["loop-1", "loop-2"]
        [[district.station]]
        id = "aq-1"
        pollutants = ["pm25"]
        [[district]]
        id = "d02"
        [[district.segment]]
        id = "seg-2"
        lanes = 3
        free_flow_kmh = 90
        capacity_vphpl = 2100.0
        detectors = ["loop-3"]
        [[district.segment]]
        id = "seg-3"
        lanes = 2
        free_flow_kmh = 110
        capacity_vphpl = 900.0
        facility = "urban_street"
        length_km = 0.25
        detectors = ["loop-4"]
    "#;

    #[test]
    fn reads_free_flow_and_capacity_by_detector_ignoring_the_rest() {
        let r = SegmentRegistry::from_toml(CITY).expect("valid");
        assert_eq!(r.len(), 4);
        assert_eq!(r.params("loop-2").free_flow_kmh, Some(50.0));
        assert_eq!(r.params("loop-3").capacity_vphpl, Some(2100.0));
        assert_eq!(r.params("aq-1"), SegmentParams::default());
        // Without `facility`: by free-flow speed (50 → urban street, 90 → freeway); an
        // explicit facility wins over the speed.
        assert_eq!(r.params("loop-1").facility, Facility::UrbanStreet);
        assert_eq!(r.params("loop-3").facility, Facility::Freeway);
        assert_eq!(r.params("loop-4").facility, Facility::UrbanStreet);
        assert_eq!(r.params("loop-4").length_km, Some(0.25));
        assert_eq!(r.params("loop-1").length_km, None);
    }

    #[test]
    fn equal_parameters_are_kept_once_and_every_detector_finds_its_own() {
        // 300 segments of one detector each, cycling through three parameter sets, listed out
        // of order: three sets kept, and each detector gets its segment's.
        let mut city = String::from("[[district]]\nid = \"d01\"\n");
        for i in (0..300).rev() {
            let speed = [40.0, 50.0, 100.0][i % 3];
            city.push_str(&format!(
                "[[district.segment]]\nid = \"s{i}\"\nfree_flow_kmh = {speed:.1}\n\
                 detectors = [\"loop-{i}\"]\n"
            ));
        }
        let r = SegmentRegistry::from_toml(&city).expect("valid");
        assert_eq!((r.len(), r.params.len()), (300, 3));
        for i in 0..300 {
            let want = [40.0, 50.0, 100.0][i % 3];
            assert_eq!(
                r.params(&format!("loop-{i}")).free_flow_kmh,
                Some(want),
                "loop-{i}"
            );
        }
        for unlisted in ["", "loop", "loop-300", "loop-1 ", "zzz"] {
            assert_eq!(r.params(unlisted), SegmentParams::default(), "{unlisted:?}");
        }
    }

    #[test]
    fn reports_every_problem() {
        let bad = r#"
            [[district]]
            [[district.segment]]
            id = "a"
            free_flow_kmh = -5.0
            detectors = ["x"]
            [[district.segment]]
            id = "b"
            capacity_vphpl = 0.0
            facility = "highway"
            length_km = -1.0
            detectors = ["x"]
        "#;
        let errs = SegmentRegistry::from_toml(bad).expect_err("invalid");
        assert_eq!(errs.0.len(), 5, "{errs}");
        assert!(SegmentRegistry::from_toml("district = 3").is_err());
    }

    #[test]
    fn a_city_is_read_a_district_at_a_time_only_where_that_is_the_same() {
        let (prelude, districts) = district_chunks(CITY).expect("plain districts");
        assert!(!prelude.contains("[[district]]"));
        assert_eq!(districts.len(), CITY.matches("[[district]]").count());
        assert_eq!(
            prelude.len() + districts.iter().map(|d| d.len()).sum::<usize>(),
            CITY.len()
        );
        // Another table after a district, or a multi-line string: read whole.
        assert!(district_chunks(&format!("{CITY}\n[meta]\nx = 1\n")).is_none());
        assert!(district_chunks(&format!("{CITY}\nnote = '''\n[[district]]\n'''\n")).is_none());
        assert!(district_chunks("name = \"no districts\"").is_none());
    }

    #[test]
    fn read_in_pieces_or_whole_a_city_gives_the_same_registry_and_errors() {
        // The built-in city at 1,000 sensors, as the simulator writes it.
        let city = citypulse_simulator::city::City::builtin_scaled(1_000)
            .to_toml()
            .unwrap();
        assert!(district_chunks(&city).is_some_and(|(_, d)| d.len() > 1));
        let whole: RawCity = toml::from_str(&city).unwrap();
        let pieces = parse_city(&city).unwrap();
        let segments = |c: &RawCity| -> Vec<(String, Vec<String>, Option<f64>)> {
            c.district
                .iter()
                .flat_map(|d| &d.segment)
                .map(|s| (s.id.clone(), s.detectors.clone(), s.free_flow_kmh))
                .collect()
        };
        assert_eq!(segments(&pieces), segments(&whole));
        assert!(segments(&whole).len() > 100);
        // A syntax error in the third district reports the file's own line.
        let third = city.match_indices("\n[[district]]").nth(2).unwrap().0;
        let broken = format!("{}\nlanes = = 2{}", &city[..third], &city[third..]);
        let err = parse_city(&broken).unwrap_err().to_string();
        let expected = toml::from_str::<RawCity>(&broken).unwrap_err().to_string();
        assert_eq!(err, expected);
        assert!(
            err.contains(&format!("line {}", city[..third].lines().count() + 2)),
            "{err}"
        );
    }
}
