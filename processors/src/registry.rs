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
use std::collections::btree_map::Entry;
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

/// Segments parsed together when a city is read in pieces. The TOML parser's document tree
/// is about 24 times its text: the 19 MB file of a 100,000-sensor city took 460 MB read whole,
/// and a district at a time the processors still peaked at 118 MB of RSS before their first
/// reading, above what they then need to fold. A piece of 512 segments (about 110 KB of the
/// simulator's city file) is a tree of about 3 MB whatever the size of the city; the peak
/// before the first reading is then 52 MB, mostly the file's text and the registry being
/// built (`VmHWM` of `citypulse-processors --city` on that file, docs/benchmarks.md).
const SEGMENTS_PER_PIECE: usize = 512;

/// Reads the segments of `pieces` into `f`, in file order; `false` when a piece (or the
/// prelude) does not parse or the prelude defines districts of its own (`district = [...]`,
/// which the file's `[[district]]` headers would make an error): the file is then read whole.
fn read_pieces(prelude: &str, pieces: &[Piece<'_>], f: &mut dyn FnMut(RawSegment)) -> bool {
    match toml::from_str::<RawCity>(prelude) {
        Ok(head) if head.district.is_empty() => {}
        _ => return false,
    }
    let mut buf = String::new();
    for piece in pieces {
        let text = if piece.continues {
            buf.clear();
            buf.push_str("[[district]]\n");
            buf.push_str(piece.text);
            buf.as_str()
        } else {
            piece.text
        };
        let Ok(part) = toml::from_str::<RawCity>(text) else {
            return false;
        };
        part.district
            .into_iter()
            .flat_map(|d| d.segment)
            .for_each(&mut *f);
    }
    true
}

/// A piece of a city file: a district's header and first segments, or (`continues`) more
/// segments of the district before it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Piece<'t> {
    text: &'t str,
    continues: bool,
}

/// PURE: the text before the first `[[district]]` header, and the districts from there on cut
/// into pieces at `[[district]]` headers and every [`SEGMENTS_PER_PIECE`]th
/// `[[district.segment]]` header, when parsing those apart certainly reads the same segments
/// as parsing the file: no multi-line string (whose lines could look like headers) and, from the
/// first district on, no table header but `[[district]]` and the district's own subtables
/// (`[district.…]`, `[[district.…]]`), so no table is defined in two pieces. A piece that does
/// not start a district is read after a `[[district]]` header of its own: its segments are the
/// same, in a district the registry does not look at. `None` otherwise.
fn city_pieces(text: &str) -> Option<(&str, Vec<Piece<'_>>)> {
    if text.contains("\"\"\"") || text.contains("'''") {
        return None;
    }
    let mut starts: Vec<(usize, bool)> = Vec::new();
    let mut segments = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let header = line.trim();
        let header = header.split('#').next().unwrap_or("").trim_end();
        if header == "[[district]]" {
            starts.push((offset, false));
            segments = 0;
        } else if starts.is_empty() || !header.starts_with('[') {
        } else if header == "[[district.segment]]" {
            segments += 1;
            if segments > SEGMENTS_PER_PIECE {
                starts.push((offset, true));
                segments = 1;
            }
        } else if !["[district.", "[[district."]
            .iter()
            .any(|p| header.starts_with(p))
        {
            return None;
        }
        offset += line.len();
    }
    let first = starts.first()?.0;
    let ends = starts.iter().skip(1).map(|s| s.0).chain([text.len()]);
    let pieces = starts
        .iter()
        .zip(ends)
        .map(|(&(a, continues), b)| Piece {
            text: &text[a..b],
            continues,
        })
        .collect();
    Some((&text[..first], pieces))
}

/// The segments read so far: each detector's parameters, and every problem in file order.
#[derive(Default)]
struct Reader {
    by_detector: BTreeMap<String, SegmentParams>,
    errors: Vec<RegistryError>,
}

impl Reader {
    /// The segments of the whole file, parsed at once.
    fn whole(text: &str) -> Result<Reader, RegistryErrors> {
        let city: RawCity = toml::from_str(text)
            .map_err(|e| RegistryErrors(vec![RegistryError::Syntax(e.to_string())]))?;
        let mut reader = Reader::default();
        for s in city.district.into_iter().flat_map(|d| d.segment) {
            reader.segment(s);
        }
        Ok(reader)
    }

    /// The registry, or every problem found.
    fn finish(self) -> Result<SegmentRegistry, RegistryErrors> {
        if self.errors.is_empty() {
            Ok(SegmentRegistry::compact(self.by_detector))
        } else {
            Err(RegistryErrors(self.errors))
        }
    }

    fn segment(&mut self, seg: RawSegment) {
        let errors = &mut self.errors;
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
        for d in seg.detectors {
            match self.by_detector.entry(d) {
                Entry::Occupied(e) => {
                    errors.push(RegistryError::DuplicateDetector(e.key().clone()))
                }
                Entry::Vacant(e) => {
                    e.insert(params);
                }
            }
        }
    }
}

impl SegmentRegistry {
    /// An empty registry: every free-flow speed is learned.
    pub fn empty() -> SegmentRegistry {
        SegmentRegistry::default()
    }

    /// Parses a city file, reporting every problem at once.
    pub fn from_toml(text: &str) -> Result<SegmentRegistry, RegistryErrors> {
        let mut reader = Reader::default();
        let in_pieces = city_pieces(text).is_some_and(|(prelude, pieces)| {
            read_pieces(prelude, &pieces, &mut |s| reader.segment(s))
        });
        if !in_pieces {
            reader = Reader::whole(text)?;
        }
        reader.finish()
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
    fn a_city_is_read_in_pieces_only_where_that_is_the_same() {
        let (prelude, pieces) = city_pieces(CITY).expect("plain districts");
        assert!(!prelude.contains("[[district]]"));
        assert_eq!(pieces.len(), CITY.matches("[[district]]").count());
        assert!(pieces.iter().all(|p| !p.continues));
        assert_eq!(
            prelude.len() + pieces.iter().map(|p| p.text.len()).sum::<usize>(),
            CITY.len()
        );
        // Another table after a district, or a multi-line string: read whole.
        assert!(city_pieces(&format!("{CITY}\n[meta]\nx = 1\n")).is_none());
        assert!(city_pieces(&format!("{CITY}\nnote = '''\n[[district]]\n'''\n")).is_none());
        assert!(city_pieces("name = \"no districts\"").is_none());
    }

    #[test]
    fn a_long_district_is_cut_every_512_segments_at_a_segment_header() {
        let mut city = String::from("name = \"x\"\n[[district]]\nid = \"d01\"\n");
        for i in 0..1_100 {
            city.push_str(&format!(
                "[[district.segment]]\nid = \"s{i}\"\ndetectors = [\"loop-{i}\"]\n\
                 [[district.segment.lane]]\nn = 1\n"
            ));
        }
        let (_, pieces) = city_pieces(&city).expect("plain");
        let continues: Vec<bool> = pieces.iter().map(|p| p.continues).collect();
        assert_eq!(continues, [false, true, true]);
        let segments = |p: &Piece<'_>| p.text.matches("[[district.segment]]").count();
        assert_eq!(
            pieces.iter().map(segments).collect::<Vec<_>>(),
            [512, 512, 76]
        );
        // A segment's own subtables stay in its piece.
        assert!(pieces[1]
            .text
            .starts_with("[[district.segment]]\nid = \"s512\""));
        let r = SegmentRegistry::from_toml(&city).expect("valid");
        assert_eq!(r.len(), 1_100);
    }

    /// Every detector's parameters, to compare registries.
    fn listing(r: &SegmentRegistry) -> Vec<(String, SegmentParams)> {
        r.detectors
            .iter()
            .map(|(d, _)| (d.to_string(), r.params(d)))
            .collect()
    }

    /// The registry read whole, without pieces.
    fn read_whole(text: &str) -> Result<SegmentRegistry, RegistryErrors> {
        Reader::whole(text)?.finish()
    }

    #[test]
    fn read_in_pieces_or_whole_a_city_gives_the_same_registry_and_errors() {
        // The built-in city at 10,000 sensors, as the simulator writes it: districts of more
        // than 512 segments, so some are cut.
        let city = citypulse_simulator::city::City::builtin_scaled(10_000)
            .to_toml()
            .unwrap();
        let (_, pieces) = city_pieces(&city).expect("plain");
        assert!(pieces.iter().any(|p| p.continues), "no district was cut");
        let whole = read_whole(&city).unwrap();
        let pieces = SegmentRegistry::from_toml(&city).unwrap();
        assert_eq!(listing(&pieces), listing(&whole));
        assert!(whole.len() > 8_000);
        // A syntax error in a later piece reports the file's own line.
        let at = city
            .match_indices("\n[[district.segment]]")
            .nth(1_500)
            .unwrap()
            .0;
        let broken = format!("{}\nlanes = = 2{}", &city[..at], &city[at..]);
        let err = SegmentRegistry::from_toml(&broken).unwrap_err().to_string();
        let expected = read_whole(&broken).unwrap_err().to_string();
        assert_eq!(err, expected);
        assert!(
            err.contains(&format!("line {}", city[..at].lines().count() + 2)),
            "{err}"
        );
        // A bad value and a detector listed twice, in the last piece: the same errors.
        let first = city.match_indices("detectors = [\"").nth(3).unwrap().0;
        let dup = city[first..].split('"').nth(1).unwrap().to_owned();
        let bad = format!(
            "{city}[[district.segment]]\nid = \"x\"\nfree_flow_kmh = -1.0\ndetectors = [\"{dup}\"]\n"
        );
        let errs = SegmentRegistry::from_toml(&bad).unwrap_err();
        assert_eq!(errs, read_whole(&bad).unwrap_err());
        assert_eq!(errs.0.len(), 2, "{errs}");
        // A district defined in the prelude as well: read whole, the same either way.
        let twice =
            format!("district = [{{ segment = [{{ detectors = [\"loop-p\"] }}] }}]\n{city}");
        assert_eq!(
            SegmentRegistry::from_toml(&twice).map(|r| listing(&r)),
            read_whole(&twice).map(|r| listing(&r))
        );
    }
}
