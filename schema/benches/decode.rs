//! Criterion bench of [`Reading::decode`]: the in-process cost of decoding one typical traffic
//! reading and one typical air reading, as ingest decodes every device payload and the
//! processors every reading of a READINGS batch. Payloads are what the simulator publishes
//! ([`Reading::encode`]: non-round values are 8-byte floats).
//!
//! And of [`WindowResult::decode`], as alerts decodes every result on METRICS: a district's
//! traffic result and a station's air result, as the processors write them.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use citypulse_schema::{Air, Measurement, Reading, Traffic};
use citypulse_schema::{
    AirMetrics, AqiCategory, EaqiBand, Los, Pollutant, TrafficMetrics, WindowMetrics, WindowResult,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

fn traffic() -> Reading {
    Reading {
        sensor: "loop-d03-007".into(),
        district: "d03".into(),
        ts: 1_767_225_630_000,
        seq: 1_234,
        data: Measurement::Traffic(Traffic {
            count: 17,
            interval_s: 30,
            occupancy: 0.173_418_2,
            speed_kmh: Some(47.816_3),
            lanes: 2,
        }),
    }
}

fn air() -> Reading {
    Reading {
        sensor: "aq-d03-1".into(),
        district: "d03".into(),
        ts: 1_767_225_660_000,
        seq: 617,
        data: Measurement::Air(Air {
            pm25_ugm3: Some(13.417_9),
            pm10_ugm3: Some(24.061_2),
            o3_ppb: Some(31.772_4),
            no2_ppb: Some(18.230_9),
            so2_ppb: None,
            co_ppm: None,
            temp_c: Some(11.38),
            rh_pct: Some(72.416),
            interval_s: Some(60),
        }),
    }
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("reading_decode");
    g.throughput(Throughput::Elements(1));
    for (name, reading) in [("traffic", traffic()), ("air", air())] {
        let bytes = reading.encode();
        assert_eq!(Reading::decode(&bytes).unwrap(), reading);
        eprintln!("{name}: {} bytes", bytes.len());
        g.bench_function(name, |b| b.iter(|| Reading::decode(black_box(&bytes))));
    }
    g.finish();
}

fn traffic_result() -> WindowResult {
    WindowResult {
        window_start: 1_767_225_600_000,
        window_end: 1_767_225_660_000,
        district: "d03".into(),
        sensor: None,
        readings: 96,
        sensors: 48,
        metrics: WindowMetrics::Traffic(TrafficMetrics {
            flow_vph: 1_012.5,
            occupancy: 0.182_734_1,
            speed_kmh: Some(38.416_2),
            density_vpkm: Some(13.177_9),
            los: Some(Los::C),
            congestion_index: Some(0.231_8),
            congested_share: Some(0.187_5),
            travel_time_index: Some(1.301_7),
        }),
    }
}

fn air_result() -> WindowResult {
    WindowResult {
        window_start: 1_767_225_600_000,
        window_end: 1_767_225_660_000,
        district: "d03".into(),
        sensor: Some("aq-d03-1".into()),
        readings: 1,
        sensors: 1,
        metrics: WindowMetrics::Air(Box::new(AirMetrics {
            aqi: Some(58),
            category: Some(AqiCategory::Moderate),
            dominant: Some(Pollutant::Pm25),
            aqi_pm25: Some(58),
            aqi_pm10: Some(23),
            aqi_o3: Some(29),
            aqi_no2: Some(17),
            pm25_ugm3: Some(13.417_9),
            pm25_nowcast_ugm3: Some(12.6),
            pm10_ugm3: Some(24.061_2),
            pm10_nowcast_ugm3: Some(25.0),
            o3_1h_ppb: Some(31.772_4),
            o3_8h_ppb: Some(30.114_7),
            no2_1h_ppb: Some(18.230_9),
            eaqi: Some(EaqiBand::Fair),
            eaqi_dominant: Some(Pollutant::Pm25),
            ..AirMetrics::default()
        })),
    }
}

fn decode_results(c: &mut Criterion) {
    let mut g = c.benchmark_group("window_decode");
    g.throughput(Throughput::Elements(1));
    for (name, result) in [("traffic", traffic_result()), ("air", air_result())] {
        let bytes = result.encode();
        assert_eq!(WindowResult::decode(&bytes).unwrap(), result);
        eprintln!("{name} result: {} bytes", bytes.len());
        g.bench_function(name, |b| b.iter(|| WindowResult::decode(black_box(&bytes))));
    }
    g.finish();
}

criterion_group!(benches, decode, decode_results);
criterion_main!(benches);
