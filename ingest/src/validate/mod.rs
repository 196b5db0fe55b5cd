//! PURE: the verdict on one raw message — accept (possibly adjusted) or reject with a reason.
//!
//! [`Validator::validate`] takes the subject, the payload bytes and the ingest clock (ms) and
//! knows nothing of NATS. Checks, in order (the first failure wins):
//!
//! 1. **subject** — `sensors.<district>.<kind>.<sensor_id>` with valid tokens, else
//!    `bad_subject`;
//! 2. **decode** — [`Reading::decode`]'s structural errors (`oversized`, `malformed_cbor`,
//!    `not_a_map`, `wrong_type`, `missing_field`, `unknown_kind`, `unsupported_version`);
//! 3. **identity** — the payload's `sensor`, `district` and `kind` equal the subject's tokens,
//!    else `identity_mismatch` (a device may not speak for another);
//! 4. **sequence** — `seq` fits a signed 64-bit integer (the archive's key), else
//!    `seq_out_of_range`;
//! 5. **time** — `ts` at most `max_future_skew` ahead of the clock (`future_timestamp`: one bad
//!    clock must not push watermarks ahead for everyone) and at most `max_age` behind it
//!    (`too_old`; the default is generous so a gateway's backlog after an outage still lands);
//! 6. **physics** — see [`limits`]: every number finite (`not_finite`); `interval_s` (traffic,
//!    and air when present) in 1..=3600 (`interval_out_of_range`), `lanes` in 1..=8
//!    (`lanes_out_of_range`), `occupancy` in 0..=1 (`occupancy_out_of_range`),
//!    `count ≤ lanes × interval_s × 1 veh/s` (`count_exceeds_capacity`), `speed_kmh` in
//!    (0, 250] when vehicles were counted (`speed_out_of_range`); air pollutants within the
//!    instrument range (`concentration_out_of_range`), not below the negative-noise tolerance
//!    (`negative_concentration`), `temp_c` in −90..=60 (`temperature_out_of_range`), `rh_pct`
//!    in 0..=100 (`humidity_out_of_range`).
//!
//! Two documented normalisations make an accepted reading differ from what was sent, each
//! reported as an [`Adjustment`] (and counted by the shell):
//! - a pollutant in `[-tolerance, 0)` is clamped to 0 (`clamped_negative`);
//! - a `speed_kmh` sent with `count` 0 is dropped (`speed_without_vehicles`): a mean speed of no
//!   vehicles means nothing, and the contract says it is absent then. The reading itself (an
//!   empty interval, flow 0) is valuable and kept.
//!
//! A `count` above 0 **without** `speed_kmh` is accepted as it is: single-loop detectors count
//! and measure occupancy but cannot measure speed. An air reading without any pollutant is
//! accepted too (a station measures what it measures; the reading still proves it is alive).

pub mod limits;

use citypulse_schema::{DecodeError, Measurement, Reading, SensorSubject, SubjectError};

/// Time limits relative to the ingest clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLimits {
    /// How far ahead of the ingest clock a reading's `ts` may be, ms.
    pub max_future_skew_ms: u64,
    /// How far behind the ingest clock a reading's `ts` may be, ms.
    pub max_age_ms: u64,
}

/// Why a reading is rejected. Every rejection is final: the message is dead-lettered on
/// `dlq.<reason>` and terminated, because the same bytes would get the same verdict again.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// The subject is not `sensors.<district>.<kind>.<sensor_id>` with valid tokens.
    #[error("bad subject: {0}")]
    BadSubject(#[from] SubjectError),
    /// The payload is not a v1 reading (structure only).
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// The payload names another sensor, district or kind than its subject.
    #[error("payload {field} `{payload}` does not match the subject's `{subject}`")]
    IdentityMismatch {
        /// Which identity field differs.
        field: &'static str,
        /// The payload's value.
        payload: String,
        /// The subject's token.
        subject: String,
    },
    /// `seq` does not fit a signed 64-bit integer.
    #[error("seq {0} exceeds 9223372036854775807")]
    SeqOutOfRange(u64),
    /// `ts` is too far ahead of the ingest clock.
    #[error("ts {ts} is {ahead_ms} ms ahead of the ingest clock (limit {limit_ms} ms)")]
    FutureTimestamp {
        /// The reading's event time, ms.
        ts: u64,
        /// How far ahead, ms.
        ahead_ms: u64,
        /// The configured skew, ms.
        limit_ms: u64,
    },
    /// `ts` is too far behind the ingest clock.
    #[error("ts {ts} is {age_ms} ms old (limit {limit_ms} ms)")]
    TooOld {
        /// The reading's event time, ms.
        ts: u64,
        /// How old, ms.
        age_ms: u64,
        /// The configured maximum age, ms.
        limit_ms: u64,
    },
    /// A number is NaN or infinite.
    #[error("{field} is {value}, not a finite number")]
    NotFinite {
        /// The field.
        field: &'static str,
        /// The value (NaN or ±inf).
        value: f64,
    },
    /// `interval_s` outside 1..=3600.
    #[error("interval_s {0} outside 1..=3600")]
    IntervalOutOfRange(u32),
    /// `lanes` outside 1..=8.
    #[error("lanes {0} outside 1..=8")]
    LanesOutOfRange(u32),
    /// `occupancy` outside 0..=1.
    #[error("occupancy {0} outside 0..=1")]
    OccupancyOutOfRange(f64),
    /// More vehicles than the lanes can carry in the interval.
    #[error("count {count} exceeds {max}, the most {lanes} lane(s) can carry in {interval_s} s")]
    CountExceedsCapacity {
        /// The reported count.
        count: u32,
        /// Lanes covered.
        lanes: u32,
        /// Interval, s.
        interval_s: u32,
        /// The bound.
        max: u64,
    },
    /// `speed_kmh` not in (0, 250] although vehicles were counted.
    #[error("speed_kmh {0} outside (0, 250] with vehicles counted")]
    SpeedOutOfRange(f64),
    /// A pollutant below its negative-noise tolerance.
    #[error("{field} {value} is below -{tolerance}, more than zero-drift noise")]
    NegativeConcentration {
        /// The field.
        field: &'static str,
        /// The value.
        value: f64,
        /// The tolerance.
        tolerance: f64,
    },
    /// A pollutant above the instrument range.
    #[error("{field} {value} is above the instrument range (max {max})")]
    ConcentrationOutOfRange {
        /// The field.
        field: &'static str,
        /// The value.
        value: f64,
        /// The ceiling.
        max: f64,
    },
    /// `temp_c` outside −90..=60.
    #[error("temp_c {0} outside -90..=60")]
    TemperatureOutOfRange(f64),
    /// `rh_pct` outside 0..=100.
    #[error("rh_pct {0} outside 0..=100")]
    HumidityOutOfRange(f64),
}

impl Rejection {
    /// Whether the payload was a reading of the subject's own sensor, with a usable `seq`, and
    /// only its time or values were refused: the reading arrived (its `seq` is no gap).
    pub fn identifies_reading(&self) -> bool {
        !matches!(
            self,
            Rejection::BadSubject(_)
                | Rejection::Decode(_)
                | Rejection::IdentityMismatch { .. }
                | Rejection::SeqOutOfRange(_)
        )
    }

    /// A bounded label for metrics and the dead-letter subject `dlq.<reason>`.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::BadSubject(_) => "bad_subject",
            Rejection::Decode(e) => e.reason(),
            Rejection::IdentityMismatch { .. } => "identity_mismatch",
            Rejection::SeqOutOfRange(_) => "seq_out_of_range",
            Rejection::FutureTimestamp { .. } => "future_timestamp",
            Rejection::TooOld { .. } => "too_old",
            Rejection::NotFinite { .. } => "not_finite",
            Rejection::IntervalOutOfRange(_) => "interval_out_of_range",
            Rejection::LanesOutOfRange(_) => "lanes_out_of_range",
            Rejection::OccupancyOutOfRange(_) => "occupancy_out_of_range",
            Rejection::CountExceedsCapacity { .. } => "count_exceeds_capacity",
            Rejection::SpeedOutOfRange(_) => "speed_out_of_range",
            Rejection::NegativeConcentration { .. } => "negative_concentration",
            Rejection::ConcentrationOutOfRange { .. } => "concentration_out_of_range",
            Rejection::TemperatureOutOfRange(_) => "temperature_out_of_range",
            Rejection::HumidityOutOfRange(_) => "humidity_out_of_range",
        }
    }

    /// Every value [`Rejection::reason`] can return: the decode reasons, then ingest's own.
    pub fn reasons() -> impl Iterator<Item = &'static str> {
        DecodeError::REASONS
            .iter()
            .chain(OWN_REASONS.iter())
            .copied()
    }
}

/// The reasons ingest adds to the decoder's.
const OWN_REASONS: &[&str] = &[
    "bad_subject",
    "identity_mismatch",
    "seq_out_of_range",
    "future_timestamp",
    "too_old",
    "not_finite",
    "interval_out_of_range",
    "lanes_out_of_range",
    "occupancy_out_of_range",
    "count_exceeds_capacity",
    "speed_out_of_range",
    "negative_concentration",
    "concentration_out_of_range",
    "temperature_out_of_range",
    "humidity_out_of_range",
];

/// A documented change made to an accepted reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjustment {
    /// A pollutant slightly below zero was set to 0.
    ClampedNegative {
        /// The pollutant field.
        field: &'static str,
    },
    /// `speed_kmh` was dropped because `count` is 0.
    SpeedWithoutVehicles,
}

impl Adjustment {
    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Adjustment::ClampedNegative { .. } => "clamped_negative",
            Adjustment::SpeedWithoutVehicles => "speed_without_vehicles",
        }
    }

    /// The field adjusted.
    pub fn field(&self) -> &'static str {
        match self {
            Adjustment::ClampedNegative { field } => field,
            Adjustment::SpeedWithoutVehicles => "speed_kmh",
        }
    }
}

/// A reading that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The subject it arrived on (equal to the reading's identity).
    pub subject: SensorSubject,
    /// The reading, after any [`Adjustment`].
    pub reading: Reading,
    /// What was changed, usually nothing.
    pub adjustments: Vec<Adjustment>,
}

/// Validates raw readings against the contract, the subject and physics. Cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct Validator {
    time: TimeLimits,
}

impl Validator {
    /// A validator with the given time limits.
    pub fn new(time: TimeLimits) -> Self {
        Validator { time }
    }

    /// The verdict on `payload` received on `subject` when the ingest clock reads `now_ms`.
    pub fn validate(
        &self,
        subject: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Accepted, Rejection> {
        let subject = SensorSubject::parse(subject)?;
        let mut reading = Reading::decode(payload)?;
        check_identity(&reading, &subject)?;
        if i64::try_from(reading.seq).is_err() {
            return Err(Rejection::SeqOutOfRange(reading.seq));
        }
        self.check_time(reading.ts, now_ms)?;
        let mut adjustments = Vec::new();
        match &mut reading.data {
            Measurement::Traffic(t) => check_traffic(t, &mut adjustments)?,
            Measurement::Air(a) => check_air(a, &mut adjustments)?,
        }
        Ok(Accepted {
            subject,
            reading,
            adjustments,
        })
    }

    fn check_time(&self, ts: u64, now_ms: u64) -> Result<(), Rejection> {
        let limits = self.time;
        if ts > now_ms.saturating_add(limits.max_future_skew_ms) {
            return Err(Rejection::FutureTimestamp {
                ts,
                ahead_ms: ts - now_ms,
                limit_ms: limits.max_future_skew_ms,
            });
        }
        if ts < now_ms.saturating_sub(limits.max_age_ms) {
            return Err(Rejection::TooOld {
                ts,
                age_ms: now_ms - ts,
                limit_ms: limits.max_age_ms,
            });
        }
        Ok(())
    }
}

fn check_identity(reading: &Reading, subject: &SensorSubject) -> Result<(), Rejection> {
    let mismatch = |field, payload: &str, subject: &str| Rejection::IdentityMismatch {
        field,
        payload: payload.to_owned(),
        subject: subject.to_owned(),
    };
    if reading.sensor != subject.sensor {
        return Err(mismatch("sensor", &reading.sensor, &subject.sensor));
    }
    if reading.district != subject.district {
        return Err(mismatch("district", &reading.district, &subject.district));
    }
    if reading.kind() != subject.kind {
        return Err(mismatch(
            "kind",
            reading.kind().as_str(),
            subject.kind.as_str(),
        ));
    }
    Ok(())
}

fn finite(field: &'static str, value: f64) -> Result<f64, Rejection> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Rejection::NotFinite { field, value })
    }
}

fn check_traffic(
    t: &mut citypulse_schema::Traffic,
    adjustments: &mut Vec<Adjustment>,
) -> Result<(), Rejection> {
    finite("occupancy", t.occupancy)?;
    if let Some(v) = t.speed_kmh {
        finite("speed_kmh", v)?;
    }
    if !(limits::MIN_INTERVAL_S..=limits::MAX_INTERVAL_S).contains(&t.interval_s) {
        return Err(Rejection::IntervalOutOfRange(t.interval_s));
    }
    if !(limits::MIN_LANES..=limits::MAX_LANES).contains(&t.lanes) {
        return Err(Rejection::LanesOutOfRange(t.lanes));
    }
    if !(0.0..=1.0).contains(&t.occupancy) {
        return Err(Rejection::OccupancyOutOfRange(t.occupancy));
    }
    let max = u64::from(t.lanes) * u64::from(t.interval_s) * limits::MAX_VEHICLES_PER_S_PER_LANE;
    if u64::from(t.count) > max {
        return Err(Rejection::CountExceedsCapacity {
            count: t.count,
            lanes: t.lanes,
            interval_s: t.interval_s,
            max,
        });
    }
    match t.speed_kmh {
        Some(_) if t.count == 0 => {
            t.speed_kmh = None;
            adjustments.push(Adjustment::SpeedWithoutVehicles);
        }
        Some(v) if !(v > 0.0 && v <= limits::MAX_SPEED_KMH) => {
            return Err(Rejection::SpeedOutOfRange(v));
        }
        _ => {}
    }
    Ok(())
}

fn check_air(
    a: &mut citypulse_schema::Air,
    adjustments: &mut Vec<Adjustment>,
) -> Result<(), Rejection> {
    let [pm25, pm10, o3, no2, so2, co] = limits::POLLUTANTS;
    let pollutants = [
        (&mut a.pm25_ugm3, pm25),
        (&mut a.pm10_ugm3, pm10),
        (&mut a.o3_ppb, o3),
        (&mut a.no2_ppb, no2),
        (&mut a.so2_ppb, so2),
        (&mut a.co_ppm, co),
    ];
    for (value, range) in pollutants {
        let Some(v) = *value else { continue };
        finite(range.field, v)?;
        if v < -range.tolerance {
            return Err(Rejection::NegativeConcentration {
                field: range.field,
                value: v,
                tolerance: range.tolerance,
            });
        }
        if v > range.max {
            return Err(Rejection::ConcentrationOutOfRange {
                field: range.field,
                value: v,
                max: range.max,
            });
        }
        if v < 0.0 {
            *value = Some(0.0);
            adjustments.push(Adjustment::ClampedNegative { field: range.field });
        }
    }
    if let Some(i) = a.interval_s {
        if !(limits::MIN_INTERVAL_S..=limits::MAX_INTERVAL_S).contains(&i) {
            return Err(Rejection::IntervalOutOfRange(i));
        }
    }
    if let Some(t) = a.temp_c {
        if !(limits::MIN_TEMP_C..=limits::MAX_TEMP_C).contains(&finite("temp_c", t)?) {
            return Err(Rejection::TemperatureOutOfRange(t));
        }
    }
    if let Some(rh) = a.rh_pct {
        if !(limits::MIN_RH_PCT..=limits::MAX_RH_PCT).contains(&finite("rh_pct", rh)?) {
            return Err(Rejection::HumidityOutOfRange(rh));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
