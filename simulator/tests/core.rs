//! The done-when checks of the pure core: determinism, fault rates, malformed payloads, sequence
//! numbers, scaling. No NATS: the engine's output is what the shell publishes, in that order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use citypulse_schema::{Kind, Measurement, Reading, SensorSubject};
use citypulse_simulator::city::events::EventMode;
use citypulse_simulator::city::City;
use citypulse_simulator::engine::{run_window, Outgoing, Settings, Simulator};
use citypulse_simulator::faults::{Fault, FaultRates, STUCK_RUN};
use citypulse_simulator::truth::{self, TruthRecord, TruthWriter};
use std::collections::{BTreeMap, HashMap};

/// 2026-01-05T06:00:00Z, a Monday morning.
const START: u64 = 1_767_592_800_000;
const MINUTE: u64 = 60_000;
const HOUR: u64 = 3_600_000;

fn settings(seed: u64) -> Settings {
    Settings::new(seed, START)
}

fn sent(msgs: &[Outgoing]) -> Vec<(String, Vec<u8>)> {
    msgs.iter()
        .filter_map(|m| Some((m.subject.to_string(), m.payload.as_ref()?.to_vec())))
        .collect()
}

#[test]
fn same_seed_start_and_duration_publish_identical_bytes_in_the_same_order() {
    let city = City::builtin();
    let mut s = settings(7);
    s.faults = FaultRates::DEMO;
    let a = sent(&run_window(&city, s.clone(), START + 2 * HOUR));
    let b = sent(&run_window(&city, s.clone(), START + 2 * HOUR));
    assert!(a.len() > 70_000, "{}", a.len());
    assert_eq!(a, b);

    let mut other = s.clone();
    other.seed = 8;
    let c = sent(&run_window(&city, other, START + 2 * HOUR));
    assert_ne!(a, c);
    // Same subjects at the same times, different values.
    let differing = a.iter().zip(&c).filter(|(x, y)| x.1 != y.1).count();
    assert!(differing > a.len() / 2, "{differing}");
}

#[test]
fn stepping_in_chunks_gives_the_same_sequence_as_one_go() {
    let city = City::builtin();
    let mut s = settings(3);
    s.faults = FaultRates::DEMO;
    let whole = run_window(&city, s.clone(), START + HOUR);
    let mut sim = Simulator::new(&city, s);
    let mut chunked = Vec::new();
    let mut t = START;
    while t < START + HOUR {
        t += 7_919; // a prime number of ms: chunk edges fall everywhere
        while sim.step(t.min(START + HOUR), 100, &mut chunked) == 100 {}
    }
    sim.drain_held(&mut chunked);
    assert_eq!(sent(&whole), sent(&chunked));
}

#[test]
fn emission_times_never_go_backwards_and_valid_readings_are_not_from_the_future() {
    let city = City::builtin();
    let mut s = settings(5);
    s.faults = FaultRates::DEMO;
    let end = START + HOUR;
    let mut sim = Simulator::new(&city, s);
    let mut out = Vec::new();
    sim.step(end, usize::MAX, &mut out);
    for w in out.windows(2) {
        assert!(w[0].emit_at_ms <= w[1].emit_at_ms);
    }
    for m in &out {
        assert!(m.emit_at_ms < end);
        if m.fault != Some(Fault::ClockSkew) {
            assert!(m.ts <= m.emit_at_ms, "{m:?}");
        }
    }
}

fn faulty_run(rates: FaultRates, sensors: usize, hours: u64) -> Vec<TruthRecord> {
    let city = City::builtin_scaled(sensors);
    let mut s = settings(11);
    s.faults = rates;
    let msgs = run_window(&city, s, START + hours * HOUR);
    // Through the truth writer and back, as a test reading the file would.
    let mut buf = Vec::new();
    {
        let mut w = TruthWriter::new(&mut buf);
        for m in &msgs {
            w.record(m).unwrap();
        }
        w.flush().unwrap();
    }
    truth::parse(std::str::from_utf8(&buf).unwrap()).unwrap()
}

#[test]
fn fault_rates_in_the_truth_file_match_the_flags() {
    let rates = FaultRates {
        dropout: 0.02,
        stuck: 0.03,
        spike: 0.01,
        negative: 0.015,
        clock_skew: 0.01,
        late: 0.02,
        duplicate: 0.025,
        malformed: 0.01,
    };
    let records = faulty_run(rates, 1000, 2);
    // A reading is one (sensor, seq); a duplicate adds a second record of it.
    let readings = records
        .iter()
        .filter(|r| r.fault.as_deref() != Some("duplicate"))
        .count();
    assert!(readings > 200_000, "{readings}");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        *counts
            .entry(r.fault.clone().unwrap_or_default())
            .or_default() += 1;
    }
    for f in Fault::ALL {
        let p = rates.rate(f);
        let n = readings as f64;
        let got = counts.get(f.label()).copied().unwrap_or(0) as f64 / n;
        // Binomial standard deviation; stuck readings come in runs, which inflates it.
        let cluster = if f == Fault::Stuck {
            f64::from(STUCK_RUN)
        } else {
            1.0
        };
        let sd = (p * (1.0 - p) * cluster / n).sqrt();
        assert!(
            (got - p).abs() < 5.0 * sd,
            "{}: {got:.5} vs {p} (sd {sd:.5})",
            f.label()
        );
    }
}

#[test]
fn truth_records_describe_what_was_sent() {
    let records = faulty_run(FaultRates::DEMO, 400, 1);
    for r in &records {
        let subject = SensorSubject::parse(&r.subject).unwrap();
        match r.fault.as_deref() {
            Some("dropout") => {
                assert!(!r.sent && r.payload_hex.is_none() && r.values.is_none());
                continue;
            }
            Some("malformed") => {
                let bytes = truth::unhex(r.payload_hex.as_deref().unwrap()).unwrap();
                let really_malformed = match Reading::decode(&bytes) {
                    Err(_) => true,
                    Ok(reading) => !reading.matches(&subject),
                };
                assert!(really_malformed, "{r:?}");
                assert!(r.values.is_none());
                continue;
            }
            _ => {}
        }
        let bytes = truth::unhex(r.payload_hex.as_deref().unwrap()).unwrap();
        let reading = Reading::decode(&bytes).unwrap();
        assert!(reading.matches(&subject));
        assert_eq!((reading.seq, reading.ts), (r.seq, r.ts));
        assert_eq!(r.msg_id.split(":dup").next().unwrap(), reading.msg_id());
        let values = truth::Values::from(&reading.data);
        assert_eq!(r.values.as_ref(), Some(&values));
    }
}

#[test]
fn malformed_payloads_are_really_malformed_in_all_three_ways() {
    let rates = FaultRates {
        malformed: 1.0,
        ..FaultRates::NONE
    };
    let city = City::builtin();
    let mut s = settings(2);
    s.faults = rates;
    let msgs = run_window(&city, s, START + 10 * MINUTE);
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    for m in &msgs {
        assert_eq!(m.fault, Some(Fault::Malformed));
        let subject = SensorSubject::parse(&m.subject).unwrap();
        let kind = match Reading::decode(m.payload.as_ref().unwrap()) {
            Err(e) if e.reason() == "wrong_type" => "wrong_type",
            Err(_) => "bad_cbor",
            Ok(r) => {
                assert!(!r.matches(&subject), "{m:?}");
                "identity"
            }
        };
        *kinds.entry(kind).or_default() += 1;
    }
    assert_eq!(kinds.len(), 3, "{kinds:?}");
}

#[test]
fn seq_increases_by_one_per_sensor_except_where_a_fault_says_otherwise() {
    let records = faulty_run(FaultRates::DEMO, 300, 2);
    let mut by_sensor: HashMap<&str, Vec<&TruthRecord>> = HashMap::new();
    for r in &records {
        by_sensor.entry(r.subject.as_str()).or_default().push(r);
    }
    let mut checked = 0;
    for (subject, rs) in by_sensor {
        // In emission order: valid readings ascend by one; only late deliveries (re-ordered)
        // and duplicates (repeated) break that, and the full set has no holes.
        let mut last_on_time: Option<u64> = None;
        for r in &rs {
            match r.fault.as_deref() {
                Some("late") | Some("duplicate") => continue,
                _ => {}
            }
            if let Some(prev) = last_on_time {
                let late_between = rs
                    .iter()
                    .any(|x| x.fault.as_deref() == Some("late") && x.seq > prev && x.seq < r.seq);
                assert!(
                    r.seq == prev + 1 || late_between,
                    "{subject}: {prev} -> {}",
                    r.seq
                );
                checked += 1;
            }
            last_on_time = Some(r.seq);
        }
        let mut seqs: Vec<u64> = rs
            .iter()
            .filter(|r| r.fault.as_deref() != Some("duplicate"))
            .map(|r| r.seq)
            .collect();
        seqs.sort_unstable();
        for w in seqs.windows(2) {
            assert_eq!(w[1], w[0] + 1, "{subject}: every seq once");
        }
    }
    assert!(checked > 10_000);
}

#[test]
fn stuck_sensors_repeat_their_values() {
    let rates = FaultRates {
        stuck: 0.2,
        ..FaultRates::NONE
    };
    let records = faulty_run(rates, 300, 2);
    let mut last: HashMap<&str, &TruthRecord> = HashMap::new();
    let mut runs = 0;
    for r in &records {
        if r.fault.as_deref() == Some("stuck") {
            let prev = last[r.subject.as_str()];
            assert_eq!(prev.values, r.values, "{r:?}");
            assert_eq!(r.seq, prev.seq + 1);
            if prev.fault.is_none() {
                runs += 1;
            }
        }
        last.insert(&r.subject, r);
    }
    assert!(runs > 100, "{runs}");
}

#[test]
fn scaled_city_has_the_requested_number_of_sensors_and_they_all_report() {
    let city = City::builtin_scaled(100_000);
    assert_eq!(city.sensor_count(), 100_000);
    let sim = Simulator::new(&city, settings(1));
    assert_eq!(sim.sensor_count(), 100_000);
    // One air interval: every sensor reports at least once.
    let msgs = run_window(&city, settings(1), START + MINUTE);
    let mut subjects: Vec<&str> = msgs.iter().map(|m| &*m.subject).collect();
    subjects.sort_unstable();
    subjects.dedup();
    assert_eq!(subjects.len(), 100_000);
}

#[test]
fn loops_report_consistent_flow_speed_and_occupancy() {
    let city = City::builtin();
    let mut s = settings(4);
    s.events = EventMode::None;
    let msgs = run_window(&city, s, START + 4 * HOUR);
    let mut checked = 0;
    for m in &msgs {
        let Some(Measurement::Traffic(t)) = &m.values else {
            continue;
        };
        assert!((0.0..=1.0).contains(&t.occupancy));
        if let Some(v) = t.speed_kmh {
            assert!(t.count > 0 && v > 0.0 && v <= 143.0);
            // occupancy = density × 7.5 m per lane, density = flow / speed.
            let flow = f64::from(t.count) * 3600.0 / f64::from(t.interval_s) / f64::from(t.lanes);
            let expected = (flow / v * 7.5 / 1000.0).min(1.0);
            assert!((t.occupancy - expected).abs() < 0.001, "{t:?}");
            checked += 1;
        }
    }
    assert!(checked > 50_000);
}

#[test]
fn morning_peak_is_busier_and_slower_than_the_night() {
    let city = City::builtin();
    let mut s = settings(4);
    s.events = EventMode::None;
    // From 02:00 local (01:00Z) to 09:00 local.
    s.start_ms = START - 5 * HOUR;
    let msgs = run_window(&city, s, START + 2 * HOUR);
    let mut by_hour: BTreeMap<u64, (f64, f64, u32)> = BTreeMap::new();
    for m in &msgs {
        if let Some(Measurement::Traffic(t)) = &m.values {
            let e = by_hour
                .entry((m.ts - (START - 5 * HOUR)) / HOUR)
                .or_default();
            e.0 += f64::from(t.count);
            e.1 += t.occupancy;
            e.2 += 1;
        }
    }
    let night = by_hour[&0];
    let peak = by_hour[&6]; // 08:00-09:00 local
    assert!(peak.0 > 5.0 * night.0, "{night:?} {peak:?}");
    assert!(peak.1 / f64::from(peak.2) > 3.0 * night.1 / f64::from(night.2));
}

#[test]
fn the_demo_incident_jams_its_segment_and_the_episode_raises_pm25_above_55() {
    let city = City::builtin();
    let s = settings(9);
    let mut sim = Simulator::new(&city, s.clone());
    let mut out = Vec::new();
    sim.step(START + 21 * MINUTE, usize::MAX, &mut out);
    let incident = sim.schedule().incidents()[0].clone();
    let episode = sim.schedule().episodes()[0].clone();
    sim.step(START + 3 * HOUR, usize::MAX, &mut out);

    // The incident segment's detector, during the incident: slow and dense.
    let seg = &city
        .districts
        .iter()
        .flat_map(|d| &d.segments)
        .nth(incident.segment)
        .unwrap();
    let loop_id = &seg.detectors[0];
    let jammed: Vec<f64> = out
        .iter()
        .filter(|m| m.subject.ends_with(&format!(".{loop_id}")))
        .filter(|m| m.ts > incident.start_ms + 5 * MINUTE && m.ts < incident.end_ms)
        .filter_map(|m| match &m.values {
            Some(Measurement::Traffic(t)) => t.speed_kmh,
            _ => None,
        })
        .collect();
    assert!(!jammed.is_empty());
    let mean = jammed.iter().sum::<f64>() / jammed.len() as f64;
    assert!(
        mean < 0.4 * seg.free_flow_kmh,
        "{mean} vs {}",
        seg.free_flow_kmh
    );

    // PM2.5 in the episode district above 55 µg/m³ for hours.
    let district = &city.districts[episode.district].id;
    let high = out
        .iter()
        .filter(|m| m.kind == Kind::Air && m.subject.starts_with(&format!("sensors.{district}.")))
        .filter(|m| m.ts > START + HOUR && m.ts < START + 3 * HOUR)
        .filter_map(|m| match &m.values {
            Some(Measurement::Air(a)) => a.pm25_ugm3,
            _ => None,
        })
        .collect::<Vec<_>>();
    assert!(!high.is_empty());
    assert!(
        high.iter().all(|&p| p > 55.0),
        "{:?}",
        high.iter().fold(f64::MAX, |a, &b| a.min(b))
    );
}
