//! PURE: the migration of a format-1 checkpoint (v0.1) to the current format, so a v0.1
//! partition resumes where it stopped instead of replaying READINGS from the start.
//!
//! Format 1 and format 2 lay the state out alike except for two things (commit e4cb514,
//! issue 10):
//!
//! - **concentrations** (a pane's air samples, an open hour's exact sums, a complete hour's
//!   means) were counts of **thousandths** of their unit; they are now **billionths**. The
//!   migration multiplies them by 10⁶, which is exact: v0.1 rounded each reading to the
//!   thousandth, and sums and means of thousandths are whole numbers of billionths. (A complete
//!   hour's mean was floored to the thousandth by v0.1; it stays that mean.)
//! - an air station's **open hours** (not yet complete) recorded which of the hour's four
//!   quarter-hours had a reading, one bit per pollutant (bit `q` = `[q · 15 min, (q + 1) · 15
//!   min)`, v0.1's "3 of 4 quarter-hours" rule); they now hold the covered time spans (the
//!   45-minute rule, [`Coverage`]). Each set bit becomes its 15-minute span, so an hour v0.1
//!   had 3 quarters of counts 45 minutes, exactly the new threshold.
//!
//! Everything else (window shape, watermark, panes' traffic samples, duplicate guards, learned
//! free-flow speeds, the outbox of results already encoded) is carried over unchanged.
//!
//! The layout is described once by `State`, generic over what an open hour records per
//! pollutant: `State<u8>` is format 1, `State<Coverage>` is format 2, which deserializes into
//! [`StateData`]. The structs refuse unknown fields, so a checkpoint holding anything this
//! description does not know is refused rather than silently thinned.

use super::{Checkpoint, CheckpointError, OutboxEntry};
use crate::window::air::Coverage;
use crate::window::seq::SeqGuard;
use crate::window::traffic::{TrafficSample, TrafficSensor};
use crate::window::{StateData, Watermark, WindowSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The format this module reads.
pub const FORMAT: u32 = 1;

/// Billionths per thousandth.
const NANOS_PER_MILLI: i64 = 1_000_000;

/// A quarter-hour, ms: the span one format-1 bit stands for.
const QUARTER_MS: u32 = 15 * 60_000;

/// A format-1 checkpoint.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointV1 {
    format: u32,
    partition: u32,
    last_seq: u64,
    state: State<u8>,
    outbox: Vec<OutboxEntry>,
}

/// The partition state's layout; `C` is what an open hour records per pollutant.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State<C> {
    spec: WindowSpec,
    watermark: Watermark,
    closed_through: Option<u64>,
    swept_hour: Option<u64>,
    panes: BTreeMap<u64, BTreeMap<String, PaneDistrict>>,
    sensors: BTreeMap<String, DistrictSensors<C>>,
}

/// One value per pollutant (PM2.5, PM10, O3, NO2, SO2, CO), as a count of the format's unit.
type Concentrations = [Option<i64>; 6];

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaneDistrict {
    #[serde(rename = "t", default)]
    traffic: BTreeMap<String, Vec<TrafficSample>>,
    #[serde(rename = "a", default)]
    air: BTreeMap<String, Vec<Concentrations>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "C: Deserialize<'de>"))]
struct DistrictSensors<C> {
    #[serde(rename = "t", default)]
    traffic: BTreeMap<String, TrafficSensor>,
    #[serde(rename = "a", default)]
    air: BTreeMap<String, AirStation<C>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AirStation<C> {
    guard: SeqGuard,
    newest_ts: u64,
    open: BTreeMap<u64, HourAcc<C>>,
    hourly: BTreeMap<u64, Concentrations>,
}

/// An open hour: the exact mean and the coverage of each pollutant.
#[derive(Serialize, Deserialize)]
struct HourAcc<C>([Mean; 6], [C; 6]);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mean {
    sum: i128,
    count: u64,
}

/// Decodes a format-1 checkpoint and converts it to the current format. The result keeps
/// `format: 1`, saying where it came from; its state is in the current format.
pub fn migrate(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let old: CheckpointV1 =
        ciborium::from_reader(bytes).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    if old.format != FORMAT {
        return Err(CheckpointError::Format { found: old.format });
    }
    let state = into_state_data(convert_state(old.state)?)?;
    Ok(Checkpoint {
        format: FORMAT,
        partition: old.partition,
        last_seq: old.last_seq,
        state,
        outbox: old.outbox,
    })
}

/// A value that does not convert: the checkpoint is refused rather than misread.
fn unconvertible(what: &str) -> CheckpointError {
    CheckpointError::Malformed(format!("format-1 checkpoint: {what}"))
}

fn convert_state(s: State<u8>) -> Result<State<Coverage>, CheckpointError> {
    let panes = s
        .panes
        .into_iter()
        .map(|(start, districts)| Ok((start, map_values(districts, convert_pane)?)))
        .collect::<Result<_, CheckpointError>>()?;
    let sensors = map_values(s.sensors, |d| {
        Ok(DistrictSensors {
            traffic: d.traffic,
            air: map_values(d.air, convert_station)?,
        })
    })?;
    Ok(State {
        spec: s.spec,
        watermark: s.watermark,
        closed_through: s.closed_through,
        swept_hour: s.swept_hour,
        panes,
        sensors,
    })
}

fn map_values<K: Ord, A, B>(
    m: BTreeMap<K, A>,
    f: impl Fn(A) -> Result<B, CheckpointError>,
) -> Result<BTreeMap<K, B>, CheckpointError> {
    m.into_iter().map(|(k, v)| Ok((k, f(v)?))).collect()
}

fn convert_pane(p: PaneDistrict) -> Result<PaneDistrict, CheckpointError> {
    let air = map_values(p.air, |samples| {
        samples.into_iter().map(convert_concentrations).collect()
    })?;
    Ok(PaneDistrict {
        traffic: p.traffic,
        air,
    })
}

fn convert_station(s: AirStation<u8>) -> Result<AirStation<Coverage>, CheckpointError> {
    let open = map_values(s.open, |HourAcc(means, quarters)| {
        Ok(HourAcc(
            try_map(means, convert_mean)?,
            try_map(quarters, quarters_to_coverage)?,
        ))
    })?;
    Ok(AirStation {
        guard: s.guard,
        newest_ts: s.newest_ts,
        open,
        hourly: map_values(s.hourly, convert_concentrations)?,
    })
}

/// Thousandths to billionths.
fn convert_concentrations(c: Concentrations) -> Result<Concentrations, CheckpointError> {
    try_map(c, |v| {
        v.map(|milli| {
            milli
                .checked_mul(NANOS_PER_MILLI)
                .ok_or_else(|| unconvertible("a concentration beyond ±9.2 × 10⁹ units"))
        })
        .transpose()
    })
}

/// `f` applied to each element, or its first error.
fn try_map<T, U, const N: usize>(
    a: [T; N],
    f: impl Fn(T) -> Result<U, CheckpointError>,
) -> Result<[U; N], CheckpointError> {
    let v = a.into_iter().map(f).collect::<Result<Vec<U>, _>>()?;
    v.try_into()
        .map_err(|_| unconvertible("an array changed length"))
}

/// An exact sum of thousandths to one of billionths; the count stays.
fn convert_mean(m: Mean) -> Result<Mean, CheckpointError> {
    let sum = m
        .sum
        .checked_mul(i128::from(NANOS_PER_MILLI))
        .ok_or_else(|| unconvertible("a concentration sum out of range"))?;
    Ok(Mean {
        sum,
        count: m.count,
    })
}

/// The quarter-hours with a reading (bit `q` = `[q · 15 min, (q + 1) · 15 min)` of the hour)
/// as covered spans. v0.1 set only bits 0–3.
fn quarters_to_coverage(bits: u8) -> Result<Coverage, CheckpointError> {
    if bits >> 4 != 0 {
        return Err(unconvertible("a quarter-hour bit beyond the hour's four"));
    }
    let mut c = Coverage::default();
    for q in 0..4u32 {
        if bits & (1 << q) != 0 {
            c.add(q * QUARTER_MS, (q + 1) * QUARTER_MS);
        }
    }
    Ok(c)
}

/// The converted state as this build's [`StateData`] (same layout, read through serde).
fn into_state_data(s: State<Coverage>) -> Result<StateData, CheckpointError> {
    ciborium::Value::serialized(&s)
        .and_then(|v| v.deserialized())
        .map_err(|e| unconvertible(&format!("the converted state does not read back: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::SegmentRegistry;
    use crate::window::{CoreConfig, PartitionState};
    use citypulse_schema::{Air, Measurement, Reading, Traffic};
    use std::sync::Arc;

    fn spans(spans: &[(u32, u32)]) -> Coverage {
        let mut c = Coverage::default();
        for &(a, b) in spans {
            c.add(a, b);
        }
        c
    }

    #[test]
    fn each_quarter_hour_bit_becomes_its_fifteen_minutes() {
        const Q: u32 = 900_000;
        // Bits, the spans they stand for, the covered time in ms.
        type Case = (u8, &'static [(u32, u32)], u64);
        let cases: [Case; 5] = [
            (0b0000, &[], 0),
            (0b0001, &[(0, Q)], 900_000),
            (0b0111, &[(0, 3 * Q)], 2_700_000),
            (0b1010, &[(Q, 2 * Q), (3 * Q, 4 * Q)], 1_800_000),
            (0b1111, &[(0, 4 * Q)], 3_600_000),
        ];
        for (bits, expected, total_ms) in cases {
            let c = quarters_to_coverage(bits).expect("v0.1 bits");
            assert_eq!(c, spans(expected), "{bits:04b}");
            assert_eq!(c.total_ms(), total_ms, "{bits:04b}");
        }
        assert!(quarters_to_coverage(0b1_0000).is_err());
    }

    #[test]
    fn thousandths_become_billionths() {
        assert_eq!(
            convert_concentrations([Some(9_100), None, Some(-5), Some(0), None, Some(1)]),
            Ok([
                Some(9_100_000_000),
                None,
                Some(-5_000_000),
                Some(0),
                None,
                Some(1_000_000)
            ])
        );
        assert!(
            convert_concentrations([Some(i64::MAX / 1000), None, None, None, None, None]).is_err()
        );
        let m = convert_mean(Mean {
            sum: 27_300,
            count: 3,
        })
        .expect("in range");
        assert_eq!((m.sum, m.count), (27_300_000_000, 3));
    }

    /// `State<Coverage>` describes this build's [`StateData`] exactly: a real state read
    /// through it and back is unchanged (a field it lacked would be refused, one it renamed
    /// would not read back).
    #[test]
    fn the_format_2_layout_is_the_current_state() {
        let cfg = Arc::new(CoreConfig {
            spec: WindowSpec::hopping(300_000, 60_000).expect("valid"),
            allowed_lateness_ms: 30_000,
            idle_timeout_ms: 30_000,
            registry: SegmentRegistry::empty(),
        });
        let mut s = PartitionState::new(cfg);
        let t0 = 1_767_225_600_000;
        for i in 0..300u64 {
            let (sensor, data) = if i % 3 == 0 {
                let air = Air {
                    pm25_ugm3: Some(9.1),
                    o3_ppb: Some(40.5),
                    interval_s: (i % 2 == 0).then_some(60),
                    ..Air::default()
                };
                (format!("aq-{}", i % 2), Measurement::Air(air))
            } else {
                let t = Traffic {
                    count: 7,
                    interval_s: 30,
                    occupancy: 0.1,
                    speed_kmh: Some(50.0),
                    lanes: 2,
                };
                (format!("tl-{}", i % 2), Measurement::Traffic(t))
            };
            let r = Reading {
                sensor,
                district: format!("d0{}", i % 2),
                ts: t0 + i * 20_000,
                seq: i,
                data,
            };
            s.observe(&r, 0);
        }
        let mut closed = Vec::new();
        s.close_ready(&mut closed);
        let value = ciborium::Value::serialized(s.data()).expect("serializes");
        let mirror: State<Coverage> = value.deserialized().expect("reads as State<Coverage>");
        assert!(!mirror.panes.is_empty());
        let open_hours: usize = mirror
            .sensors
            .values()
            .flat_map(|d| d.air.values())
            .map(|a| a.open.len())
            .sum();
        assert!(open_hours > 0);
        assert_eq!(into_state_data(mirror).as_ref(), Ok(s.data()));
    }
}
