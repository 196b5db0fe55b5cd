//! Criterion bench of [`Reading::decode`]: the in-process cost of decoding one typical traffic
//! reading and one typical air reading, as ingest decodes every device payload and the
//! processors every reading of a READINGS batch. Payloads are what the simulator publishes
//! ([`Reading::encode`]: non-round values are 8-byte floats).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use citypulse_schema::{Air, Measurement, Reading, Traffic};
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

criterion_group!(benches, decode);
criterion_main!(benches);
