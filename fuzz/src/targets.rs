//! The fuzz targets: every decoder of the public contract, the ingest validator, the subject
//! parser and the two files operators edit by hand. Each checks its invariants on one input and
//! returns a label for the outcome (`ok` or the rejection's reason), so a run can show that it
//! reached both accepted and rejected inputs of many kinds.

use citypulse_ingest::validate::{Rejection, TimeLimits, Validator};
use citypulse_schema::batch::{decode_batch, encode_batch};
use citypulse_schema::{AlertEvent, DecodeError, Reading, SensorSubject, WindowResult};
use citypulse_simulator::city::City;
use citypulse_simulator::engine::{Settings, Simulator};

/// One fuzz target.
pub struct Target {
    /// Name, as given to `--target`.
    pub name: &'static str,
    /// Valid and invalid inputs the mutations start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Checks the invariants on one input: `Ok(outcome label)` or `Err(broken invariant)`.
    pub check: fn(&[u8]) -> Result<&'static str, String>,
    /// Most bytes the check may hold at once: `factor × input length + slack`.
    pub alloc_factor: usize,
    /// See `alloc_factor`.
    pub alloc_slack: usize,
}

/// Every target.
pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "reading",
            seeds: reading_seeds,
            check: reading,
            alloc_factor: 8,
            alloc_slack: 64 << 10,
        },
        Target {
            name: "validate",
            seeds: validate_seeds,
            check: validate,
            alloc_factor: 8,
            alloc_slack: 64 << 10,
        },
        Target {
            name: "batch",
            seeds: batch_seeds,
            check: batch,
            alloc_factor: 8,
            alloc_slack: 64 << 10,
        },
        Target {
            name: "window",
            seeds: window_seeds,
            check: window,
            alloc_factor: 8,
            alloc_slack: 64 << 10,
        },
        Target {
            name: "alert",
            seeds: alert_seeds,
            check: alert,
            alloc_factor: 8,
            alloc_slack: 64 << 10,
        },
        Target {
            name: "subject",
            seeds: subject_seeds,
            check: subject,
            alloc_factor: 8,
            alloc_slack: 16 << 10,
        },
        Target {
            name: "rules",
            seeds: rules_seeds,
            check: rules,
            alloc_factor: 64,
            alloc_slack: 4 << 20,
        },
        Target {
            name: "city",
            seeds: city_seeds,
            check: city,
            alloc_factor: 64,
            alloc_slack: 8 << 20,
        },
        Target {
            name: "checkpoint",
            seeds: checkpoint_seeds,
            check: checkpoint,
            alloc_factor: 64,
            alloc_slack: 4 << 20,
        },
    ]
}

/// 2026-01-07T06:00:00Z: the simulated samples start here; the validator's clock reads one hour
/// later.
const START_MS: u64 = 1_767_765_600_000;
const NOW_MS: u64 = START_MS + 3_600_000;

macro_rules! fixtures {
    ($($name:literal),* $(,)?) => {
        vec![$(include_bytes!(concat!("../../schema/fixtures/", $name)).to_vec()),*]
    };
}

/// A few minutes of a small simulated city: `(subject, payload)` of real readings.
fn simulated() -> Vec<(String, Vec<u8>)> {
    let city = City::builtin_scaled(24);
    let mut sim = Simulator::new(&city, Settings::new(7, START_MS));
    let mut out = Vec::new();
    sim.step(START_MS + 180_000, 200, &mut out);
    out.into_iter()
        .filter_map(|o| Some((o.subject.to_string(), o.payload?.to_vec())))
        .collect()
}

fn reading_seeds() -> Vec<Vec<u8>> {
    let mut seeds = fixtures![
        "reading_traffic_v1.cbor",
        "reading_traffic_zero_count_v1.cbor",
        "reading_air_full_v1.cbor",
        "reading_air_interval_v1.cbor",
        "reading_air_partial_unknown_keys_v1.cbor",
        "invalid_malformed.cbor",
        "invalid_missing_field.cbor",
        "invalid_wrong_type.cbor",
        "invalid_unsupported_version.cbor",
        "invalid_unknown_kind.cbor",
        "invalid_truncated.cbor",
        "invalid_not_a_map.cbor",
    ];
    seeds.extend(simulated().into_iter().map(|(_, p)| p).take(20));
    seeds
}

/// The decoder either rejects with a known reason or yields a reading that survives a round
/// trip (compared as bytes: a NaN is not equal to itself).
fn reading(input: &[u8]) -> Result<&'static str, String> {
    match Reading::decode(input) {
        Ok(r) => {
            let bytes = r.encode();
            let again = Reading::decode(&bytes).map_err(|e| format!("re-decode: {e}"))?;
            if again.encode() != bytes {
                return Err(format!("round trip changed {r:?} into {again:?}"));
            }
            Ok("ok")
        }
        Err(e) => known(&e),
    }
}

fn known(e: &DecodeError) -> Result<&'static str, String> {
    if DecodeError::REASONS.contains(&e.reason()) {
        Ok(e.reason())
    } else {
        Err(format!("unlisted reason {} ({e})", e.reason()))
    }
}

fn validate_seeds() -> Vec<Vec<u8>> {
    simulated()
        .into_iter()
        .map(|(s, p)| [s.as_bytes(), b"\0", &p].concat())
        .take(40)
        .collect()
}

/// Input: `subject NUL payload`. A rejection has a listed reason; an accepted reading, encoded
/// again, is accepted again as it is (validation is idempotent).
fn validate(input: &[u8]) -> Result<&'static str, String> {
    let (subject, payload) = match input.iter().position(|&b| b == 0) {
        Some(i) => (String::from_utf8_lossy(&input[..i]), &input[i + 1..]),
        None => (String::from_utf8_lossy(b"sensors.d01.air.x"), input),
    };
    let v = Validator::new(TimeLimits {
        max_future_skew_ms: 30_000,
        max_age_ms: 72 * 3_600_000,
    });
    match v.validate(&subject, payload, NOW_MS) {
        Ok(accepted) => {
            let bytes = accepted.reading.encode();
            let again = v
                .validate(&subject, &bytes, NOW_MS)
                .map_err(|e| format!("accepted {:?}, then rejected: {e}", accepted.reading))?;
            if !again.adjustments.is_empty() || again.reading.encode() != bytes {
                return Err(format!("validating twice changed {:?}", accepted.reading));
            }
            Ok("ok")
        }
        Err(rejection) => {
            let reason = rejection.reason();
            if Rejection::reasons().any(|r| r == reason) {
                Ok(reason)
            } else {
                Err(format!("unlisted rejection {reason}"))
            }
        }
    }
}

fn batch_seeds() -> Vec<Vec<u8>> {
    let readings: Vec<Vec<u8>> = simulated().into_iter().map(|(_, p)| p).take(30).collect();
    vec![
        encode_batch(&readings),
        encode_batch(&readings[..1]),
        encode_batch::<Vec<u8>>(&[]),
    ]
}

/// A batch either fails with a reason or re-encodes to one with the same items.
fn batch(input: &[u8]) -> Result<&'static str, String> {
    match decode_batch(input) {
        Ok(items) => {
            let again = encode_batch(&items);
            let items_again = decode_batch(&again).map_err(|e| format!("re-decode: {e}"))?;
            if items_again != items {
                return Err("round trip changed the items".to_owned());
            }
            Ok("ok")
        }
        Err(e) => Ok(e.reason()),
    }
}

fn window_seeds() -> Vec<Vec<u8>> {
    fixtures![
        "window_traffic_district_v1.cbor",
        "window_traffic_district_tti_v1.cbor",
        "window_traffic_sensor_tti_v1.cbor",
        "window_air_sensor_v1.cbor",
        "window_air_district_beyond_v1.cbor",
    ]
}

fn window(input: &[u8]) -> Result<&'static str, String> {
    match WindowResult::decode(input) {
        Ok(w) => {
            let bytes = w.encode();
            let again = WindowResult::decode(&bytes).map_err(|e| format!("re-decode: {e}"))?;
            if again.encode() != bytes {
                return Err(format!("round trip changed {w:?} into {again:?}"));
            }
            // The subject and message id of any decodable result can be built.
            let _ = (w.subject(), w.msg_id());
            Ok("ok")
        }
        Err(e) => known(&e),
    }
}

fn alert_seeds() -> Vec<Vec<u8>> {
    fixtures!["alert_firing_v1.cbor"]
}

fn alert(input: &[u8]) -> Result<&'static str, String> {
    match AlertEvent::decode(input) {
        Ok(a) => {
            let bytes = a.encode();
            let again = AlertEvent::decode(&bytes).map_err(|e| format!("re-decode: {e}"))?;
            if again.encode() != bytes {
                return Err(format!("round trip changed {a:?} into {again:?}"));
            }
            let _ = a.subject();
            Ok("ok")
        }
        Err(e) => known(&e),
    }
}

fn subject_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = simulated()
        .into_iter()
        .map(|(s, _)| s.into_bytes())
        .take(10)
        .collect();
    seeds.push(b"readings.d01.traffic.loop-1".to_vec());
    seeds
}

/// A parsed subject builds the subjects it parsed from.
fn subject(input: &[u8]) -> Result<&'static str, String> {
    let text = String::from_utf8_lossy(input);
    match SensorSubject::parse(&text) {
        Ok(s) => {
            let built = s.sensors_subject();
            if built != text {
                return Err(format!("parsed {text:?}, built {built:?}"));
            }
            match SensorSubject::parse_readings(&s.readings_subject()) {
                Ok(r) if r == s => Ok("ok"),
                other => Err(format!("{s:?} → readings subject → {other:?}")),
            }
        }
        Err(_) => Ok("rejected"),
    }
}

fn rules_seeds() -> Vec<Vec<u8>> {
    vec![include_bytes!("../../alerts/rules/default.toml").to_vec()]
}

/// The rule loader either loads or lists at least one problem.
fn rules(input: &[u8]) -> Result<&'static str, String> {
    let text = String::from_utf8_lossy(input);
    match citypulse_alerts::engine::rules::load(&text) {
        Ok(_) => Ok("ok"),
        Err(e) if e.0.is_empty() => Err("rejected without a problem".to_owned()),
        Err(_) => Ok("rejected"),
    }
}

fn city_seeds() -> Vec<Vec<u8>> {
    [12, 40]
        .into_iter()
        .filter_map(|n| City::builtin_scaled(n).to_toml().ok())
        .map(String::into_bytes)
        .collect()
}

/// The simulator's and the processors' city loaders either load or list a problem; a loaded
/// city written out loads again as the same city, and the processors accept what it accepts.
fn city(input: &[u8]) -> Result<&'static str, String> {
    let text = String::from_utf8_lossy(input);
    let registry = citypulse_processors::registry::SegmentRegistry::from_toml(&text);
    match City::from_toml(&text) {
        Ok(c) => {
            let written = c.to_toml().map_err(|e| format!("to_toml: {e}"))?;
            match City::from_toml(&written) {
                Ok(again) if again == c => {}
                other => return Err(format!("round trip: {other:?}")),
            }
            if let Err(e) = registry {
                return Err(format!(
                    "the simulator loads it, the processors refuse: {e}"
                ));
            }
            Ok("ok")
        }
        Err(e) if e.0.is_empty() => Err("rejected without a problem".to_owned()),
        Err(_) => Ok("rejected"),
    }
}

fn checkpoint_seeds() -> Vec<Vec<u8>> {
    use citypulse_processors::checkpoint;
    let v1 = include_bytes!("../../processors/tests/fixtures/checkpoint_v1.cbor").to_vec();
    let v2 = include_bytes!("../../processors/tests/fixtures/checkpoint_v2.cbor").to_vec();
    // This build's format (3: compressed) of the same state.
    let v3 = citypulse_processors::checkpoint::decode(0, &v2)
        .map(|c| checkpoint::encode(c.partition, c.last_seq, &c.state, &c.outbox))
        .unwrap_or_default();
    vec![v1, v2, v3]
}

/// A processors checkpoint read from KV (partition 0's key): any format this build reads either
/// decodes, and then writes out as this build's format and reads back as the same, or is
/// refused with an error; never a panic, never memory far beyond its size (the decompression
/// is capped).
fn checkpoint(input: &[u8]) -> Result<&'static str, String> {
    use citypulse_processors::checkpoint::{self, CheckpointError};
    match checkpoint::decode(0, input) {
        Ok(c) => {
            let bytes = checkpoint::encode(c.partition, c.last_seq, &c.state, &c.outbox);
            let again = checkpoint::decode(0, &bytes).map_err(|e| format!("re-decode: {e}"))?;
            let bytes_again =
                checkpoint::encode(again.partition, again.last_seq, &again.state, &again.outbox);
            if bytes_again != bytes || again.format != checkpoint::FORMAT {
                return Err(format!(
                    "format {} read, written as format {} and read back differently",
                    c.format,
                    checkpoint::FORMAT
                ));
            }
            Ok("ok")
        }
        Err(CheckpointError::Malformed(_)) => Ok("malformed"),
        Err(CheckpointError::Format { .. }) => Ok("format"),
        Err(CheckpointError::Partition { .. }) => Ok("partition"),
        Err(e @ CheckpointError::Torn(_)) => {
            Err(format!("a single checkpoint cannot be torn: {e}"))
        }
    }
}
