//! The city file (TOML): loading with every error reported by line, and printing.
//!
//! ```toml
//! name = "Springfield"
//! utc_offset_minutes = 60          # local time drives the daily patterns; default 0
//!
//! [[district]]
//! id = "d01"                       # subject token [a-z0-9_-]{1,64}
//! name = "Old Town"                # default: the id
//! pm25_background_ugm3 = 9.0       # default 8.0
//! so2_background_ppb = 1.5         # default 1.5
//!
//! [[district.segment]]             # listed upstream to downstream within a corridor
//! id = "seg-d01-001"
//! corridor = "c01"                 # default "main"
//! lanes = 2                        # 1..=8
//! free_flow_kmh = 50.0             # 5..=200
//! capacity_vphpl = 900.0           # vehicles per hour per lane, 100..=4000
//! facility = "urban_street"        # or "freeway" / "expressway"; default: freeway when
//!                                  # free_flow_kmh >= 90, urban street otherwise
//! length_km = 0.4                  # 0.01..=50; default 1.0
//! peak_demand = 0.85               # weekday peak demand / capacity, 0..=2; default 0.9
//! detectors = ["loop-d01-001"]     # sensor ids of kind traffic
//!
//! [[district.station]]
//! id = "aq-d01-1"                  # sensor id of kind air
//! pollutants = ["pm25", "pm10", "no2", "o3"]   # any of pm25 pm10 o3 no2 so2 co
//! weather = true                   # also temp_c and rh_pct; default true
//! ```
//!
//! Loading is two-phase: the text is deserialized into raw types (`deny_unknown_fields`, every
//! value [`Spanned`]), then validated into a [`City`]. A TOML syntax or shape error stops the
//! first phase (the parser reports one); the second phase reports every invalid value at once.
//! Sensor ids are unique across the whole city: they key `Nats-Msg-Id`.

use super::{City, District, Facility, Segment, Station};
use citypulse_schema::subject::is_token;
use citypulse_schema::Pollutant;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::ops::RangeInclusive;
use toml::Spanned;

/// One problem in a city file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CityFileError {
    /// The text is not TOML of the expected shape (syntax, unknown key, wrong type, missing key).
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// The parser's explanation.
        message: String,
    },
    /// A value outside its allowed range or vocabulary.
    #[error("line {line}: `{field}` {message}")]
    Value {
        /// 1-based line.
        line: usize,
        /// The key.
        field: &'static str,
        /// What is wrong, with the offending value.
        message: String,
    },
    /// An id used twice.
    #[error("line {line}: duplicate {what} id `{id}` (first used on line {first_line})")]
    Duplicate {
        /// 1-based line of the second use.
        line: usize,
        /// `district`, `segment` or `sensor`.
        what: &'static str,
        /// The id.
        id: String,
        /// 1-based line of the first use.
        first_line: usize,
    },
    /// The city has no sensor at all.
    #[error("the city has no sensors (add a district with a segment detector or a station)")]
    NoSensors,
}

/// Every problem found in a city file, in file order. Never empty.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct CityFileErrors(pub Vec<CityFileError>);

impl fmt::Display for CityFileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error(s) in city file", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCity {
    name: Option<Spanned<String>>,
    utc_offset_minutes: Option<Spanned<i64>>,
    #[serde(default)]
    district: Vec<Spanned<RawDistrict>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDistrict {
    id: Spanned<String>,
    name: Option<Spanned<String>>,
    pm25_background_ugm3: Option<Spanned<f64>>,
    so2_background_ppb: Option<Spanned<f64>>,
    #[serde(default)]
    segment: Vec<Spanned<RawSegment>>,
    #[serde(default)]
    station: Vec<Spanned<RawStation>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSegment {
    id: Spanned<String>,
    corridor: Option<Spanned<String>>,
    lanes: Spanned<i64>,
    free_flow_kmh: Spanned<f64>,
    capacity_vphpl: Spanned<f64>,
    facility: Option<Spanned<String>>,
    length_km: Option<Spanned<f64>>,
    peak_demand: Option<Spanned<f64>>,
    #[serde(default)]
    detectors: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStation {
    id: Spanned<String>,
    pollutants: Spanned<Vec<Spanned<String>>>,
    weather: Option<Spanned<bool>>,
}

/// Byte offset to 1-based line.
fn newline_offsets(text: &str) -> Vec<usize> {
    text.bytes()
        .enumerate()
        .filter_map(|(i, b)| (b == b'\n').then_some(i))
        .collect()
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Collects validation errors with line numbers.
struct Check {
    /// Offset of every `\n` in the text, in order: a line number is a binary search (every id
    /// needs its line for the duplicate check; scanning the text each time was quadratic, 22 s
    /// for a 20,000-sensor city).
    newlines: Vec<usize>,
    errors: Vec<CityFileError>,
    /// id → first line, per namespace.
    seen: HashMap<(&'static str, String), usize>,
}

impl Check {
    fn new(text: &str) -> Check {
        Check {
            newlines: newline_offsets(text),
            errors: Vec::new(),
            seen: HashMap::new(),
        }
    }

    fn line<T>(&self, v: &Spanned<T>) -> usize {
        self.newlines.partition_point(|&n| n < v.span().start) + 1
    }

    fn value<T>(&mut self, v: &Spanned<T>, field: &'static str, message: String) {
        let line = self.line(v);
        self.errors.push(CityFileError::Value {
            line,
            field,
            message,
        });
    }

    fn token(&mut self, v: &Spanned<String>, field: &'static str) -> String {
        if !is_token(v.get_ref()) {
            self.value(
                v,
                field,
                format!("`{}` is not a token (1-64 of [a-z0-9_-])", v.get_ref()),
            );
        }
        v.get_ref().clone()
    }

    fn unique(&mut self, v: &Spanned<String>, what: &'static str) {
        let line = self.line(v);
        let key = (what, v.get_ref().clone());
        if let Some(&first_line) = self.seen.get(&key) {
            self.errors.push(CityFileError::Duplicate {
                line,
                what,
                id: key.1,
                first_line,
            });
        } else {
            self.seen.insert(key, line);
        }
    }

    fn float(
        &mut self,
        v: Option<&Spanned<f64>>,
        field: &'static str,
        range: RangeInclusive<f64>,
        default: f64,
    ) -> f64 {
        let Some(v) = v else { return default };
        let x = *v.get_ref();
        if !x.is_finite() || !range.contains(&x) {
            self.value(
                v,
                field,
                format!("{x} is outside {}..={}", range.start(), range.end()),
            );
        }
        x
    }

    fn int(&mut self, v: &Spanned<i64>, field: &'static str, range: RangeInclusive<i64>) -> i64 {
        let x = *v.get_ref();
        if !range.contains(&x) {
            self.value(
                v,
                field,
                format!("{x} is outside {}..={}", range.start(), range.end()),
            );
        }
        x
    }
}

impl City {
    /// Parses and validates a city file. On failure, returns every error found, each with its
    /// line (see the [module docs](self) for the format).
    pub fn from_toml(text: &str) -> Result<City, CityFileErrors> {
        let raw: RawCity = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            CityFileErrors(vec![CityFileError::Syntax {
                line,
                message: e.message().trim().to_owned(),
            }])
        })?;
        let mut c = Check::new(text);
        let name = raw
            .name
            .as_ref()
            .map_or_else(|| "city".to_owned(), |n| n.get_ref().clone());
        let utc_offset_minutes =
            raw.utc_offset_minutes
                .as_ref()
                .map_or(0, |v| c.int(v, "utc_offset_minutes", -720..=840)) as i32;
        let mut districts = Vec::with_capacity(raw.district.len());
        for d in &raw.district {
            let d = d.get_ref();
            let id = c.token(&d.id, "id");
            c.unique(&d.id, "district");
            let segments = d
                .segment
                .iter()
                .map(|s| segment(&mut c, s.get_ref()))
                .collect();
            let stations = d
                .station
                .iter()
                .map(|s| station(&mut c, s.get_ref()))
                .collect();
            districts.push(District {
                name: d
                    .name
                    .as_ref()
                    .map_or_else(|| id.clone(), |n| n.get_ref().clone()),
                id,
                pm25_background_ugm3: c.float(
                    d.pm25_background_ugm3.as_ref(),
                    "pm25_background_ugm3",
                    0.0..=500.0,
                    8.0,
                ),
                so2_background_ppb: c.float(
                    d.so2_background_ppb.as_ref(),
                    "so2_background_ppb",
                    0.0..=500.0,
                    1.5,
                ),
                segments,
                stations,
            });
        }
        let city = City {
            name,
            utc_offset_minutes,
            districts,
        };
        if c.errors.is_empty() && city.sensor_count() == 0 {
            c.errors.push(CityFileError::NoSensors);
        }
        if c.errors.is_empty() {
            Ok(city)
        } else {
            Err(CityFileErrors(c.errors))
        }
    }

    /// The city as a TOML city file that [`City::from_toml`] loads back to an equal city.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        let out = OutCity {
            name: &self.name,
            utc_offset_minutes: self.utc_offset_minutes,
            district: self
                .districts
                .iter()
                .map(|d| OutDistrict {
                    id: &d.id,
                    name: &d.name,
                    pm25_background_ugm3: d.pm25_background_ugm3,
                    so2_background_ppb: d.so2_background_ppb,
                    segment: d
                        .segments
                        .iter()
                        .map(|s| OutSegment {
                            id: &s.id,
                            corridor: &s.corridor,
                            lanes: s.lanes,
                            free_flow_kmh: s.free_flow_kmh,
                            capacity_vphpl: s.capacity_vphpl,
                            facility: s.facility,
                            length_km: s.length_km,
                            peak_demand: s.peak_demand,
                            detectors: &s.detectors,
                        })
                        .collect(),
                    station: d
                        .stations
                        .iter()
                        .map(|s| OutStation {
                            id: &s.id,
                            pollutants: &s.pollutants,
                            weather: s.weather,
                        })
                        .collect(),
                })
                .collect(),
        };
        let body = toml::to_string_pretty(&out)?;
        Ok(format!(
            "# citypulse city file: {} districts, {} loop detectors, {} air stations.\n\
             # Segments of a corridor are listed upstream to downstream.\n\n{body}",
            self.districts.len(),
            self.traffic_sensor_count(),
            self.air_sensor_count()
        ))
    }
}

fn segment(c: &mut Check, s: &RawSegment) -> Segment {
    let id = c.token(&s.id, "id");
    c.unique(&s.id, "segment");
    let corridor = match &s.corridor {
        Some(v) => c.token(v, "corridor"),
        None => "main".to_owned(),
    };
    let detectors = s
        .detectors
        .iter()
        .map(|d| {
            c.unique(d, "sensor");
            c.token(d, "detectors")
        })
        .collect();
    let lanes = c.int(&s.lanes, "lanes", 1..=8) as u32;
    let free_flow_kmh = c.float(Some(&s.free_flow_kmh), "free_flow_kmh", 5.0..=200.0, 0.0);
    let facility = match &s.facility {
        None => Facility::from_free_flow(free_flow_kmh),
        Some(v) => match v.get_ref().as_str() {
            "urban_street" => Facility::UrbanStreet,
            "freeway" | "expressway" => Facility::Freeway,
            other => {
                c.value(
                    v,
                    "facility",
                    format!("`{other}` is not urban_street, freeway or expressway"),
                );
                Facility::UrbanStreet
            }
        },
    };
    Segment {
        id,
        corridor,
        lanes,
        free_flow_kmh,
        capacity_vphpl: c.float(
            Some(&s.capacity_vphpl),
            "capacity_vphpl",
            100.0..=4000.0,
            0.0,
        ),
        facility,
        length_km: c.float(s.length_km.as_ref(), "length_km", 0.01..=50.0, 1.0),
        peak_demand: c.float(s.peak_demand.as_ref(), "peak_demand", 0.0..=2.0, 0.9),
        detectors,
    }
}

fn station(c: &mut Check, s: &RawStation) -> Station {
    c.unique(&s.id, "sensor");
    let id = c.token(&s.id, "id");
    let mut pollutants: Vec<Pollutant> = Vec::new();
    if s.pollutants.get_ref().is_empty() {
        c.value(&s.pollutants, "pollutants", "is empty".to_owned());
    }
    for p in s.pollutants.get_ref() {
        match p.get_ref().parse::<Pollutant>() {
            Ok(x) if pollutants.contains(&x) => {
                c.value(p, "pollutants", format!("lists `{x}` twice"));
            }
            Ok(x) => pollutants.push(x),
            Err(_) => c.value(
                p,
                "pollutants",
                format!(
                    "`{}` is not one of pm25, pm10, o3, no2, so2, co",
                    p.get_ref()
                ),
            ),
        }
    }
    Station {
        id,
        pollutants,
        weather: s.weather.as_ref().is_none_or(|w| *w.get_ref()),
    }
}

#[derive(Serialize)]
struct OutCity<'a> {
    name: &'a str,
    utc_offset_minutes: i32,
    district: Vec<OutDistrict<'a>>,
}

#[derive(Serialize)]
struct OutDistrict<'a> {
    id: &'a str,
    name: &'a str,
    pm25_background_ugm3: f64,
    so2_background_ppb: f64,
    segment: Vec<OutSegment<'a>>,
    station: Vec<OutStation<'a>>,
}

#[derive(Serialize)]
struct OutSegment<'a> {
    id: &'a str,
    corridor: &'a str,
    lanes: u32,
    free_flow_kmh: f64,
    capacity_vphpl: f64,
    facility: Facility,
    length_km: f64,
    peak_demand: f64,
    detectors: &'a [String],
}

#[derive(Serialize)]
struct OutStation<'a> {
    id: &'a str,
    pollutants: &'a [Pollutant],
    weather: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
name = "Tiny"
utc_offset_minutes = 60

[[district]]
id = "d01"

[[district.segment]]
id = "s1"
lanes = 2
free_flow_kmh = 50
capacity_vphpl = 1900
detectors = ["loop-1"]

[[district.station]]
id = "aq-1"
pollutants = ["pm25", "no2"]
"#;

    fn errors(text: &str) -> Vec<CityFileError> {
        City::from_toml(text).unwrap_err().0
    }

    #[test]
    fn loads_a_small_city_with_defaults() {
        let city = City::from_toml(SMALL).unwrap();
        assert_eq!(city.name, "Tiny");
        let d = &city.districts[0];
        assert_eq!(d.name, "d01");
        assert_eq!(d.pm25_background_ugm3, 8.0);
        assert_eq!(d.segments[0].corridor, "main");
        assert_eq!(d.segments[0].peak_demand, 0.9);
        assert_eq!(d.segments[0].free_flow_kmh, 50.0);
        assert_eq!(d.segments[0].facility, Facility::UrbanStreet);
        assert_eq!(d.segments[0].length_km, 1.0);
        assert_eq!(
            d.stations[0].pollutants,
            vec![Pollutant::Pm25, Pollutant::No2]
        );
        assert!(d.stations[0].weather);
        assert_eq!(city.sensor_count(), 2);
    }

    #[test]
    fn facility_defaults_by_free_flow_speed_and_is_checked() {
        let fast = SMALL.replace("free_flow_kmh = 50", "free_flow_kmh = 100");
        let seg = |text: &str| City::from_toml(text).unwrap().districts[0].segments[0].clone();
        assert_eq!(seg(&fast).facility, Facility::Freeway);
        let at_90 = SMALL.replace("free_flow_kmh = 50", "free_flow_kmh = 90");
        assert_eq!(seg(&at_90).facility, Facility::Freeway);
        let at_89 = SMALL.replace("free_flow_kmh = 50", "free_flow_kmh = 89.9");
        assert_eq!(seg(&at_89).facility, Facility::UrbanStreet);
        let urban_fast = fast.replace("lanes = 2", "lanes = 2\nfacility = \"urban_street\"");
        assert_eq!(seg(&urban_fast).facility, Facility::UrbanStreet);
        let expressway = SMALL.replace(
            "lanes = 2",
            "lanes = 2\nfacility = \"expressway\"\nlength_km = 2.5",
        );
        assert_eq!(seg(&expressway).facility, Facility::Freeway);
        assert_eq!(seg(&expressway).length_km, 2.5);
        let bad = SMALL.replace(
            "lanes = 2",
            "lanes = 2\nfacility = \"highway\"\nlength_km = 0",
        );
        let errs = errors(&bad);
        assert!(
            matches!(
                &errs[..],
                [
                    CityFileError::Value {
                        line: 11,
                        field: "facility",
                        ..
                    },
                    CityFileError::Value {
                        line: 12,
                        field: "length_km",
                        ..
                    },
                ]
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn the_builtin_city_round_trips_through_toml() {
        let city = City::builtin();
        let text = city.to_toml().unwrap();
        assert_eq!(City::from_toml(&text).unwrap(), city);
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let text = SMALL.replace("lanes = 2", "lanes = 2\nlane_width = 3.5");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1);
        let CityFileError::Syntax { line, message } = &errs[0] else {
            panic!("{errs:?}")
        };
        assert_eq!(*line, 11, "{message}");
        assert!(message.contains("lane_width"), "{message}");
    }

    #[test]
    fn syntax_error_is_reported_with_its_line() {
        let errs = errors("name = \"x\"\n\n[[district]\nid = \"d01\"\n");
        assert!(
            matches!(errs[0], CityFileError::Syntax { line: 3, .. }),
            "{errs:?}"
        );
    }

    #[test]
    fn every_invalid_value_is_reported_at_once_with_lines() {
        let text = r#"
[[district]]
id = "D 01"

[[district.segment]]
id = "s1"
lanes = 0
free_flow_kmh = 500
capacity_vphpl = 1900
detectors = ["loop-1"]

[[district.station]]
id = "loop-1"
pollutants = ["pm25", "benzene", "pm25"]

[[district]]
id = "d02"
pm25_background_ugm3 = -1
"#;
        let errs = errors(text);
        let summary: Vec<(usize, String)> = errs
            .iter()
            .map(|e| match e {
                CityFileError::Value { line, field, .. } => (*line, (*field).to_owned()),
                CityFileError::Duplicate { line, what, .. } => (*line, format!("dup {what}")),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (3, "id".to_owned()),
                (7, "lanes".to_owned()),
                (8, "free_flow_kmh".to_owned()),
                (13, "dup sensor".to_owned()),
                (14, "pollutants".to_owned()),
                (14, "pollutants".to_owned()),
                (18, "pm25_background_ugm3".to_owned()),
            ],
            "{errs:#?}"
        );
        let text = CityFileErrors(errs).to_string();
        assert!(
            text.contains("line 13: duplicate sensor id `loop-1` (first used on line 10)"),
            "{text}"
        );
    }

    #[test]
    fn a_city_without_sensors_is_rejected() {
        assert_eq!(
            errors("[[district]]\nid = \"d01\"\n"),
            vec![CityFileError::NoSensors]
        );
    }

    #[test]
    fn missing_required_key_names_it() {
        let text = SMALL.replace("lanes = 2\n", "");
        let errs = errors(&text);
        let CityFileError::Syntax { message, .. } = &errs[0] else {
            panic!("{errs:?}")
        };
        assert!(message.contains("lanes"), "{message}");
    }
}
