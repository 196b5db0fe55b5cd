//! PURE: what a partition checkpoints, and how it is laid out in the KV bucket.
//!
//! A [`Checkpoint`] is the partition's whole state ([`StateData`]) together with the READINGS
//! stream sequence it includes (`last_seq`) and the **outbox**: the window results closed by that
//! state and not yet known to be published. Writing the outbox in the same checkpoint as the
//! state that closed it makes every published result durable *before* it is visible, so a crash
//! at any point can only republish the very same bytes (deduplicated by `Nats-Msg-Id`), never a
//! different version, whatever the processing-time idle advance did.
//!
//! The checkpoint is CBOR (serde), compressed into one zstd frame (format 3, see
//! [`citypulse_runtime::zstd_cbor`]): about 73 instead of 262 bytes per active sensor at 100,000
//! sensors with a day of air history (`cargo bench -p citypulse-processors --bench state`). A
//! NATS message is limited to the server's `max_payload`
//! (1 MiB by default), so a large checkpoint is split into chunks written under the keys
//! `p<N>.<slot>.<i>`, then made current by writing the small [`Manifest`] under `p<N>`; the two
//! slots alternate, so the previous checkpoint stays whole until the manifest points at the new
//! one. A checkpoint small enough is stored inline in the manifest (one write). The manifest
//! carries the length and an FNV-1a 64 hash of the checkpoint, checked on load.
//!
//! Older formats are read on load ([`decode`]): format 2 (uncompressed CBOR, same layout) as it
//! is, format 1 (v0.1) migrated by [`v1`]. Any other format is refused.

pub mod v1;

use crate::window::StateData;
use citypulse_runtime::zstd_cbor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Format of checkpoints this build writes and reads.
///
/// 3: format 2's CBOR, compressed as one zstd frame. The manifest carries the format, so a build
/// that reads only format 2 refuses a format-3 checkpoint instead of misreading it.
///
/// 2 (issue 10): concentrations in billionths instead of thousandths, and an air station's open
/// hours hold covered time spans instead of quarter-hour bits. A format-1 checkpoint is
/// converted on load ([`v1::migrate`]); other formats are refused rather than misread.
pub const FORMAT: u32 = 3;

/// Format 2: the same layout as [`FORMAT`], written uncompressed (v0.2 before format 3).
pub const FORMAT_2: u32 = 2;

/// Whether this build reads checkpoints (and manifests) of `format`: its own, format 2 as it is,
/// or format 1 by migration. The manifest's layout is the same in all three.
pub const fn readable(format: u32) -> bool {
    format == FORMAT || format == FORMAT_2 || format == v1::FORMAT
}

/// Bytes serialized as a CBOR byte string (not an array of integers).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// A window result waiting to be published: its subject, `Nats-Msg-Id` and CBOR body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// `metrics.<kind>.<district>[.<sensor>]`.
    pub subject: String,
    /// `WindowResult::msg_id()`.
    pub msg_id: String,
    /// `WindowResult::encode()`.
    pub payload: Blob,
}

impl OutboxEntry {
    /// The entry of a closed window.
    pub fn of(w: &citypulse_schema::WindowResult) -> OutboxEntry {
        OutboxEntry {
            subject: w.subject(),
            msg_id: w.msg_id(),
            payload: Blob(w.encode()),
        }
    }
}

/// A partition's checkpoint, as written.
#[derive(Serialize)]
struct CheckpointRef<'a> {
    format: u32,
    partition: u32,
    last_seq: u64,
    state: &'a StateData,
    outbox: &'a [OutboxEntry],
}

/// A partition's checkpoint, as read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Checkpoint {
    /// The format the bytes were written in: [`FORMAT`], or an older one whose state was
    /// migrated to this build's on load.
    pub format: u32,
    /// The READINGS partition.
    pub partition: u32,
    /// The highest READINGS stream sequence the state includes.
    pub last_seq: u64,
    /// The windowing state.
    pub state: StateData,
    /// Closed windows not yet known to be published.
    pub outbox: Vec<OutboxEntry>,
}

/// A checkpoint that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Not a checkpoint of this format.
    #[error("checkpoint does not decode: {0}")]
    Malformed(String),
    /// Written by an incompatible build.
    #[error(
        "checkpoint format {found} is not supported (this build reads {FORMAT} and 2, and migrates 1)"
    )]
    Format {
        /// The format found.
        found: u32,
    },
    /// The checkpoint of another partition.
    #[error("checkpoint under the key of partition {expected} belongs to partition {found}")]
    Partition {
        /// The key's partition.
        expected: u32,
        /// The checkpoint's own.
        found: u32,
    },
    /// The chunks do not add up to what the manifest promises.
    #[error("checkpoint chunks are inconsistent with the manifest: {0}")]
    Torn(String),
}

/// Encodes a checkpoint: CBOR streamed through a zstd encoder ([`zstd_cbor`]), so the
/// uncompressed bytes are never held whole.
pub fn encode(partition: u32, last_seq: u64, state: &StateData, outbox: &[OutboxEntry]) -> Vec<u8> {
    let c = CheckpointRef {
        format: FORMAT,
        partition,
        last_seq,
        state,
        outbox,
    };
    // Compressing into a Vec cannot fail but for memory, and every type serializes (no maps
    // with non-string keys that CBOR could not express).
    match zstd_cbor::encode(&c) {
        Ok(bytes) => bytes,
        Err(e) => unreachable!("a checkpoint always serializes: {e}"),
    }
}

/// Only the format of a checkpoint, to choose its decoder.
#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

/// Decodes the checkpoint of `partition`: format 3 decompressed, format 2 as it is, format 1
/// migrated to this build's state.
pub fn decode(partition: u32, bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let malformed =
        |e: ciborium::de::Error<std::io::Error>| CheckpointError::Malformed(e.to_string());
    let cbor = zstd_cbor::cbor(bytes, zstd_cbor::MAX_STATE_BYTES)
        .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    let bytes = &cbor[..];
    let FormatOnly { format } = ciborium::from_reader(bytes).map_err(malformed)?;
    let c: Checkpoint = match format {
        FORMAT | FORMAT_2 => ciborium::from_reader(bytes).map_err(malformed)?,
        v1::FORMAT => v1::migrate(bytes)?,
        found => return Err(CheckpointError::Format { found }),
    };
    if c.partition != partition {
        return Err(CheckpointError::Partition {
            expected: partition,
            found: c.partition,
        });
    }
    Ok(c)
}

/// The current checkpoint of a partition: where its bytes are and how to check them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// Which chunk slot (0 or 1) holds the bytes when not inline.
    pub slot: u8,
    /// How many chunks.
    pub chunks: u32,
    /// Total length, bytes.
    pub len: u64,
    /// FNV-1a 64 of the bytes.
    pub hash: u64,
    /// The bytes themselves, when small.
    pub inline: Option<Blob>,
}

impl Manifest {
    /// Describes `bytes`, inline when at most `max_inline` long, else in `slot`'s chunks of at
    /// most `max_chunk` bytes.
    pub fn describe(bytes: &[u8], slot: u8, max_inline: usize, max_chunk: usize) -> Manifest {
        let inline = bytes.len() <= max_inline;
        Manifest {
            format: FORMAT,
            slot,
            chunks: if inline {
                0
            } else {
                bytes.len().div_ceil(max_chunk.max(1)) as u32
            },
            len: bytes.len() as u64,
            hash: fnv1a64(bytes),
            inline: inline.then(|| Blob(bytes.to_vec())),
        }
    }

    /// Encodes as CBOR.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = ciborium::into_writer(self, &mut out) {
            unreachable!("a manifest always serializes: {e}");
        }
        out
    }

    /// Decodes from CBOR.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, CheckpointError> {
        let m: Manifest =
            ciborium::from_reader(bytes).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        if !readable(m.format) {
            return Err(CheckpointError::Format { found: m.format });
        }
        Ok(m)
    }

    /// Checks reassembled bytes against the manifest.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), CheckpointError> {
        if bytes.len() as u64 != self.len || fnv1a64(bytes) != self.hash {
            return Err(CheckpointError::Torn(format!(
                "expected {} bytes with hash {:016x}, found {} bytes with hash {:016x}",
                self.len,
                self.hash,
                bytes.len(),
                fnv1a64(bytes)
            )));
        }
        Ok(())
    }
}

/// The KV key of a partition's manifest.
pub fn manifest_key(partition: u32) -> String {
    format!("p{partition}")
}

/// The KV key of chunk `i` in `slot`.
pub fn chunk_key(partition: u32, slot: u8, i: u32) -> String {
    format!("p{partition}.{slot}.{i}")
}

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::SegmentRegistry;
    use crate::window::{CoreConfig, PartitionState, WindowSpec};
    use citypulse_schema::{Air, Measurement, Reading};
    use std::sync::Arc;

    fn state() -> PartitionState {
        let cfg = Arc::new(CoreConfig {
            spec: WindowSpec::tumbling(60_000).expect("valid"),
            allowed_lateness_ms: 30_000,
            idle_timeout_ms: 30_000,
            registry: SegmentRegistry::empty(),
        });
        let mut s = PartitionState::new(cfg);
        for i in 0..200u64 {
            s.observe(
                &Reading {
                    sensor: format!("aq-{}", i % 7),
                    district: "d01".into(),
                    ts: 1_767_225_600_000 + i * 20_000,
                    seq: i,
                    data: Measurement::Air(Air {
                        pm25_ugm3: Some(9.1),
                        ..Air::default()
                    }),
                },
                0,
            );
        }
        s
    }

    #[test]
    fn a_checkpoint_round_trips_with_its_outbox() {
        let mut s = state();
        let mut closed = Vec::new();
        s.close_ready(&mut closed);
        let outbox: Vec<OutboxEntry> = closed.iter().map(OutboxEntry::of).collect();
        assert!(!outbox.is_empty());
        let bytes = encode(3, 42, s.data(), &outbox);
        let c = decode(3, &bytes).expect("decodes");
        assert_eq!((c.partition, c.last_seq), (3, 42));
        assert_eq!(&c.state, s.data());
        assert_eq!(c.outbox, outbox);
        assert_eq!(
            citypulse_schema::WindowResult::decode(&c.outbox[0].payload.0).expect("result"),
            closed[0]
        );
        assert!(matches!(
            decode(4, &bytes),
            Err(CheckpointError::Partition {
                expected: 4,
                found: 3
            })
        ));
        assert!(decode(3, &bytes[..bytes.len() / 2]).is_err());
    }

    /// `encode`'s CBOR without the compression: what format 2 wrote.
    fn format_2(partition: u32, last_seq: u64, state: &StateData) -> Vec<u8> {
        let c = CheckpointRef {
            format: FORMAT_2,
            partition,
            last_seq,
            state,
            outbox: &[],
        };
        let mut out = Vec::new();
        ciborium::into_writer(&c, &mut out).expect("encodes");
        out
    }

    #[test]
    fn a_checkpoint_is_one_zstd_frame_of_the_format_2_layout() {
        let s = state();
        let bytes = encode(3, 42, s.data(), &[]);
        assert!(zstd_cbor::is_compressed(&bytes));
        let cbor = format_2(3, 42, s.data());
        assert!(
            bytes.len() * 3 < cbor.len(),
            "{} bytes compressed, {} as CBOR",
            bytes.len(),
            cbor.len()
        );
        let mut inside: ciborium::Value =
            ciborium::from_reader(&zstd_cbor::decompress(&bytes, 1 << 20).expect("a frame")[..])
                .expect("CBOR inside");
        let format = inside
            .as_map_mut()
            .and_then(|m| m.iter_mut().find(|(k, _)| k.as_text() == Some("format")))
            .expect("a format field");
        assert_eq!(format.1, ciborium::Value::from(FORMAT));
        format.1 = ciborium::Value::from(FORMAT_2);
        let mut relabelled = Vec::new();
        ciborium::into_writer(&inside, &mut relabelled).expect("encodes");
        assert_eq!(relabelled, cbor, "the same layout as format 2");

        let c = decode(3, &cbor).expect("format 2 is read as it is");
        assert_eq!((c.format, c.last_seq, &c.state), (FORMAT_2, 42, s.data()));
        assert_eq!(decode(3, &bytes).expect("format 3").format, FORMAT);
    }

    #[test]
    fn a_damaged_compressed_checkpoint_is_refused_never_misread() {
        let bytes = encode(0, 1, state().data(), &[]);
        assert!(matches!(
            decode(0, &bytes[..bytes.len() - 1]),
            Err(CheckpointError::Malformed(_))
        ));
        assert!(matches!(
            decode(0, &bytes[..bytes.len() / 2]),
            Err(CheckpointError::Malformed(_))
        ));
        // A damaged byte after the magic is refused (the frame's checksum), or else it was one
        // the format ignores (the frame header's unused bit): never a different state, no panic.
        let whole = decode(0, &bytes).expect("whole");
        let mut refused = 0;
        for i in 4..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            match decode(0, &damaged) {
                Err(_) => refused += 1,
                Ok(c) => assert_eq!(c, whole, "byte {i} flipped changed the state unnoticed"),
            }
        }
        let flipped = bytes.len() - 4;
        assert!(
            refused * 100 >= flipped * 95,
            "{refused} of {flipped} refused"
        );
    }

    #[test]
    fn the_manifest_inlines_small_checkpoints_and_detects_torn_ones() {
        let bytes = encode(0, 1, state().data(), &[]);
        let m = Manifest::describe(&bytes, 1, bytes.len(), 100);
        assert_eq!(
            (m.chunks, m.inline.as_ref().map(|b| b.0.len())),
            (0, Some(bytes.len()))
        );
        let m = Manifest::describe(&bytes, 1, 10, 100);
        assert_eq!(m.chunks as usize, bytes.len().div_ceil(100));
        assert_eq!(Manifest::decode(&m.encode()), Ok(m.clone()));
        m.verify(&bytes).expect("whole");
        let mut torn = bytes.clone();
        torn[5] ^= 1;
        assert!(m.verify(&torn).is_err());
        assert!(m.verify(&bytes[1..]).is_err());
    }
}
