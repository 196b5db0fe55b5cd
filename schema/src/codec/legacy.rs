//! The ciborium-based reading decoder that [`Reading::decode`] replaced (issue 9), kept verbatim
//! for the differential tests: the new decoder must return exactly what this one returns, `Ok`
//! value or error, on every input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::{DecodeError, MAX_READING_BYTES};
use crate::reading::{Air, Measurement, Reading, Traffic, SCHEMA_VERSION};
use crate::vocab::Kind;
use ciborium::Value;

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) => "integer",
        Value::Bytes(_) => "byte string",
        Value::Float(_) => "float",
        Value::Text(_) => "text",
        Value::Bool(_) => "bool",
        Value::Null => "null",
        Value::Tag(..) => "tagged item",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        _ => "unknown item",
    }
}

/// A decoded top-level map with text keys. Entries with non-text keys are ignored, like unknown
/// text keys: readers tolerate what they do not know.
pub(crate) struct Fields {
    entries: Vec<(String, Value)>,
}

impl Fields {
    /// Parses `bytes` as exactly one CBOR map, bounded by `max` bytes.
    pub(crate) fn parse(bytes: &[u8], max: usize) -> Result<Fields, DecodeError> {
        if bytes.len() > max {
            return Err(DecodeError::Oversized {
                len: bytes.len(),
                max,
            });
        }
        let mut reader = bytes;
        let value: Value = ciborium::from_reader(&mut reader).map_err(|e| match e {
            ciborium::de::Error::Io(_) => DecodeError::Truncated,
            ciborium::de::Error::Syntax(off) => {
                DecodeError::Malformed(format!("syntax error at byte {off}"))
            }
            ciborium::de::Error::Semantic(_, msg) => DecodeError::Malformed(msg),
            ciborium::de::Error::RecursionLimitExceeded => {
                DecodeError::Malformed("nesting too deep".to_owned())
            }
        })?;
        if !reader.is_empty() {
            return Err(DecodeError::Malformed(format!(
                "{} trailing bytes after the item",
                reader.len()
            )));
        }
        let Value::Map(map) = value else {
            return Err(DecodeError::NotAMap(type_name(&value)));
        };
        let mut entries: Vec<(String, Value)> = Vec::with_capacity(map.len());
        for (k, v) in map {
            if let Value::Text(k) = k {
                if entries.iter().any(|(seen, _)| *seen == k) {
                    return Err(DecodeError::DuplicateKey(k));
                }
                entries.push((k, v));
            }
        }
        Ok(Fields { entries })
    }

    fn take(&mut self, field: &str) -> Option<Value> {
        let i = self.entries.iter().position(|(k, _)| k == field)?;
        Some(self.entries.swap_remove(i).1)
    }

    fn wrong(field: &'static str, expected: &'static str, v: &Value) -> DecodeError {
        DecodeError::WrongType {
            field,
            expected,
            found: type_name(v).to_owned(),
        }
    }

    /// An optional unsigned integer field.
    pub(crate) fn opt_u64(&mut self, field: &'static str) -> Result<Option<u64>, DecodeError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Integer(i)) => {
                u64::try_from(i)
                    .map(Some)
                    .map_err(|_| DecodeError::WrongType {
                        field,
                        expected: "an unsigned integer",
                        found: format!("integer {}", i128::from(i)),
                    })
            }
            Some(v) => Err(Self::wrong(field, "an unsigned integer", &v)),
        }
    }

    /// A required unsigned integer field.
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.opt_u64(field)?.ok_or(DecodeError::MissingField(field))
    }

    /// A required unsigned integer field that must fit in `u32`.
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.opt_u32(field)?.ok_or(DecodeError::MissingField(field))
    }

    /// An optional unsigned integer field that must fit in `u32`.
    pub(crate) fn opt_u32(&mut self, field: &'static str) -> Result<Option<u32>, DecodeError> {
        let Some(v) = self.opt_u64(field)? else {
            return Ok(None);
        };
        u32::try_from(v)
            .map(Some)
            .map_err(|_| DecodeError::WrongType {
                field,
                expected: "an unsigned integer below 2^32",
                found: v.to_string(),
            })
    }

    /// An optional number. Integers are accepted where the contract says float: a device that
    /// sends `0` for `0.0` is speaking the contract.
    pub(crate) fn opt_f64(&mut self, field: &'static str) -> Result<Option<f64>, DecodeError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Float(f)) => Ok(Some(f)),
            // i128 -> f64 is exact for every value a sensor could mean; larger ones round.
            #[allow(clippy::cast_precision_loss)]
            Some(Value::Integer(i)) => Ok(Some(i128::from(i) as f64)),
            Some(v) => Err(Self::wrong(field, "a number", &v)),
        }
    }

    /// A required number.
    pub(crate) fn f64(&mut self, field: &'static str) -> Result<f64, DecodeError> {
        self.opt_f64(field)?.ok_or(DecodeError::MissingField(field))
    }

    /// An optional text field.
    pub(crate) fn opt_text(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Text(t)) => Ok(Some(t)),
            Some(v) => Err(Self::wrong(field, "text", &v)),
        }
    }

    /// A required text field.
    pub(crate) fn text(&mut self, field: &'static str) -> Result<String, DecodeError> {
        self.opt_text(field)?
            .ok_or(DecodeError::MissingField(field))
    }
}

/// The old `Reading::decode`, verbatim.
pub(crate) fn decode_reading(bytes: &[u8]) -> Result<Reading, DecodeError> {
    let mut f = Fields::parse(bytes, MAX_READING_BYTES)?;
    let v = f.u64("v")?;
    if v != SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion(v));
    }
    let kind_token = f.text("kind")?;
    let kind: Kind = kind_token
        .parse()
        .map_err(|_| DecodeError::UnknownKind(kind_token))?;
    let sensor = f.text("sensor")?;
    let district = f.text("district")?;
    let ts = f.u64("ts")?;
    let seq = f.u64("seq")?;
    let data = match kind {
        Kind::Traffic => Measurement::Traffic(Traffic {
            count: f.u32("count")?,
            interval_s: f.u32("interval_s")?,
            occupancy: f.f64("occupancy")?,
            speed_kmh: f.opt_f64("speed_kmh")?,
            lanes: f.u32("lanes")?,
        }),
        Kind::Air => Measurement::Air(Air {
            pm25_ugm3: f.opt_f64("pm25_ugm3")?,
            pm10_ugm3: f.opt_f64("pm10_ugm3")?,
            o3_ppb: f.opt_f64("o3_ppb")?,
            no2_ppb: f.opt_f64("no2_ppb")?,
            so2_ppb: f.opt_f64("so2_ppb")?,
            co_ppm: f.opt_f64("co_ppm")?,
            temp_c: f.opt_f64("temp_c")?,
            rh_pct: f.opt_f64("rh_pct")?,
            interval_s: f.opt_u32("interval_s")?,
        }),
    };
    Ok(Reading {
        sensor,
        district,
        ts,
        seq,
        data,
    })
}
