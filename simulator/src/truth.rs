//! The ground-truth file (`--truth FILE`): one JSON object per line for every message the
//! simulator generated, in generation order, so a test can recompute any window exactly and
//! prove nothing was lost.
//!
//! ```json
//! {"subject":"sensors.d01.traffic.loop-d01-007","msg_id":"loop-d01-007:58907520","seq":58907520,
//!  "ts":1767225600123,"emit_ms":1767225600123,"fault":null,"detail":null,"sent":true,
//!  "payload_hex":"b0617601…","values":{"count":12,"interval_s":30,"occupancy":0.125,"speed_kmh":48.5,"lanes":2}}
//! ```
//! - `fault`: `null` for a valid, on-time, first delivery; otherwise one of `dropout`, `stuck`,
//!   `spike`, `negative`, `clock_skew`, `late`, `duplicate`, `malformed`, with `detail` saying
//!   what was done (`speed_kmh=400`, `delay_intervals=4`, `shift_ms=-7200000`, `bad_cbor: …`).
//! - `sent`: `false` only for a dropout (then `payload_hex` and `values` are `null`). The seq
//!   still advanced, so the gap downstream is intended.
//! - `ts`: as carried in the payload (shifted for `clock_skew`); `emit_ms`: the simulated time
//!   it was sent at (later than `ts` for `late`).
//! - `values`: the measurement the payload carries, for every decodable reading of its subject
//!   (`null` for `malformed` and `dropout`). Valid readings are those with `fault` `null`;
//!   `stuck`, `spike`, `negative`, `clock_skew` and `late` carry values that are wrong or
//!   untimely on purpose; `duplicate` repeats a reading that is already in the file.
//! - One fault per reading; a duplicate adds a second line (the first has `fault: null`).
//!
//! In JetStream mode a line is written when the message is handed to the publisher, and the run
//! waits for every acknowledgement before it exits (after a shutdown request, up to
//! `--drain-timeout`, after which it logs at ERROR that some may not be stored).

use crate::engine::Outgoing;
use citypulse_schema::Measurement;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// One line of the truth file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthRecord {
    /// Subject published to.
    pub subject: String,
    /// `Nats-Msg-Id`.
    pub msg_id: String,
    /// Sequence number of the reading.
    pub seq: u64,
    /// `ts` carried by the payload, ms.
    pub ts: u64,
    /// Simulated time of sending, ms.
    pub emit_ms: u64,
    /// Fault label, `None` when valid.
    pub fault: Option<String>,
    /// What the fault did.
    pub detail: Option<String>,
    /// Whether anything was sent (false for a dropout).
    pub sent: bool,
    /// Payload bytes, lowercase hex.
    pub payload_hex: Option<String>,
    /// The measurement the payload carries, when decodable.
    pub values: Option<Values>,
}

/// A measurement in the wire's key names; absent keys are omitted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Values {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub interval_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub occupancy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub speed_kmh: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lanes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pm25_ugm3: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pm10_ugm3: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub o3_ppb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub no2_ppb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub so2_ppb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub co_ppm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub temp_c: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rh_pct: Option<f64>,
}

impl From<&Measurement> for Values {
    fn from(m: &Measurement) -> Values {
        match m {
            Measurement::Traffic(t) => Values {
                count: Some(t.count),
                interval_s: Some(t.interval_s),
                occupancy: Some(t.occupancy),
                speed_kmh: t.speed_kmh,
                lanes: Some(t.lanes),
                ..Values::default()
            },
            Measurement::Air(a) => Values {
                pm25_ugm3: a.pm25_ugm3,
                pm10_ugm3: a.pm10_ugm3,
                o3_ppb: a.o3_ppb,
                no2_ppb: a.no2_ppb,
                so2_ppb: a.so2_ppb,
                co_ppm: a.co_ppm,
                temp_c: a.temp_c,
                rh_pct: a.rh_pct,
                ..Values::default()
            },
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Bytes of lowercase or uppercase hex; `None` when not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl From<&Outgoing> for TruthRecord {
    fn from(m: &Outgoing) -> TruthRecord {
        TruthRecord {
            subject: m.subject.to_string(),
            msg_id: m.msg_id.clone(),
            seq: m.seq,
            ts: m.ts,
            emit_ms: m.emit_at_ms,
            fault: m.fault.map(|f| f.label().to_owned()),
            detail: m.detail.clone(),
            sent: m.payload.is_some(),
            payload_hex: m.payload.as_deref().map(hex),
            values: m.values.as_ref().map(Values::from),
        }
    }
}

/// Writes truth records as JSON lines.
#[derive(Debug)]
pub struct TruthWriter<W: Write> {
    out: BufWriter<W>,
}

impl TruthWriter<File> {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> io::Result<TruthWriter<File>> {
        Ok(TruthWriter::new(File::create(path)?))
    }
}

impl<W: Write> TruthWriter<W> {
    /// Writes to `out`, buffered.
    pub fn new(out: W) -> TruthWriter<W> {
        TruthWriter {
            out: BufWriter::with_capacity(1 << 20, out),
        }
    }

    /// Appends the record of `msg`.
    pub fn record(&mut self, msg: &Outgoing) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, &TruthRecord::from(msg))?;
        self.out.write_all(b"\n")
    }

    /// Flushes to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Reads a truth file's text back into records.
pub fn parse(text: &str) -> Result<Vec<TruthRecord>, serde_json::Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex("0001abff").unwrap(), bytes);
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
