//! PURE: a value as CBOR compressed into one zstd frame (RFC 8878), for the state services keep
//! in KV buckets (the processors' and alerts' checkpoints). Such state is mostly the same map
//! keys and sensor ids over and over, which zstd's fastest level already removes: a processors
//! checkpoint shrinks 3.6 times, so nats-server stores and replicates a quarter of the
//! bytes (`cargo bench -p citypulse-processors --bench state`).
//!
//! The frame carries its checksum, so a damaged frame is refused rather than decoded into other
//! state. Bytes that do not start with zstd's magic number are CBOR written before compression
//! (a CBOR map starts with 0xa0–0xbf): [`cbor`] hands them back as they are, which is how a
//! service reads the checkpoint of its previous version.

use serde::Serialize;
use std::borrow::Cow;
use std::io::{self, Read};

/// zstd's level: its fastest, which removes the repetition that makes up most of the state.
const LEVEL: i32 = 1;

/// The most a service's state may expand to: beyond it, a frame is refused rather than
/// allowed to fill memory (at ~270 bytes of CBOR per sensor, millions of sensors).
pub const MAX_STATE_BYTES: u64 = 1 << 30;

/// The first bytes of every zstd frame (RFC 8878, 3.1.1).
pub const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Why compressed bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a whole, undamaged zstd frame.
    #[error("zstd: {0}")]
    Frame(#[source] io::Error),
    /// The frame expands beyond the limit the caller set.
    #[error("zstd: decompresses to more than {0} bytes")]
    TooLarge(u64),
}

/// `value` as CBOR, streamed through a zstd encoder (the CBOR is never held whole).
///
/// Fails only when `value` does not serialize (a map key CBOR cannot express) or memory runs
/// out.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> io::Result<Vec<u8>> {
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), LEVEL)?;
    z.include_checksum(true)?;
    // ciborium writes item by item: the buffer hands zstd large pieces instead.
    let mut w = io::BufWriter::with_capacity(64 * 1024, z);
    ciborium::into_writer(value, &mut w).map_err(io::Error::other)?;
    // Flushes the buffer into the encoder.
    w.into_inner().map_err(|e| e.into_error())?.finish()
}

/// Whether `bytes` are a zstd frame (else: CBOR written uncompressed).
pub fn is_compressed(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// The CBOR in `bytes`: decompressed (to at most `max` bytes) when they are a zstd frame,
/// borrowed as they are otherwise.
pub fn cbor(bytes: &[u8], max: u64) -> Result<Cow<'_, [u8]>, Error> {
    if is_compressed(bytes) {
        decompress(bytes, max).map(Cow::Owned)
    } else {
        Ok(Cow::Borrowed(bytes))
    }
}

/// One zstd frame, decompressed to at most `max` bytes.
pub fn decompress(bytes: &[u8], max: u64) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(bytes)
        .map_err(Error::Frame)?
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(Error::Frame)?;
    if out.len() as u64 > max {
        return Err(Error::TooLarge(max));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::BTreeMap;

    /// Repetitive state, like a checkpoint: the same keys for many sensors.
    fn state() -> BTreeMap<String, BTreeMap<String, u64>> {
        (0..500u64)
            .map(|i| {
                let fields = ["count", "speed_sum", "occupancy_sum", "last_seq"]
                    .iter()
                    .enumerate()
                    .map(|(f, k)| ((*k).to_owned(), i * 7 + f as u64))
                    .collect();
                (format!("det-d01-{i:05}"), fields)
            })
            .collect()
    }

    fn plain<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).unwrap();
        out
    }

    #[test]
    fn the_frame_holds_the_cbor_and_is_much_smaller() {
        let s = state();
        let bytes = encode(&s).unwrap();
        assert!(is_compressed(&bytes));
        let cbor_bytes = plain(&s);
        assert!(
            bytes.len() * 4 < cbor_bytes.len(),
            "{} of {}",
            bytes.len(),
            cbor_bytes.len()
        );
        assert_eq!(cbor(&bytes, u64::MAX).unwrap().as_ref(), &cbor_bytes[..]);
        // Uncompressed CBOR (a previous version's) is handed back as it is.
        assert!(!is_compressed(&cbor_bytes));
        assert!(matches!(cbor(&cbor_bytes, 0).unwrap(), Cow::Borrowed(b) if b == &cbor_bytes[..]));
    }

    #[test]
    fn a_damaged_truncated_or_oversized_frame_is_refused() {
        let bytes = encode(&state()).unwrap();
        let whole = decompress(&bytes, u64::MAX).unwrap();
        assert!(matches!(
            decompress(&bytes[..bytes.len() - 1], u64::MAX),
            Err(Error::Frame(_))
        ));
        assert!(matches!(
            decompress(&bytes[..bytes.len() / 2], u64::MAX),
            Err(Error::Frame(_))
        ));
        // A damaged byte is refused (the frame's checksum), or else it was one the format
        // ignores (the frame header's unused bit): never other bytes, never a panic.
        let mut refused = 0;
        for i in MAGIC.len()..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            match decompress(&damaged, u64::MAX) {
                Err(_) => refused += 1,
                Ok(other) => assert_eq!(other, whole, "byte {i} flipped went unnoticed"),
            }
        }
        let flipped = bytes.len() - MAGIC.len();
        assert!(
            refused * 100 >= flipped * 95,
            "{refused} of {flipped} refused"
        );
        let size = whole.len() as u64;
        assert_eq!(decompress(&bytes, size).unwrap(), whole);
        assert!(matches!(decompress(&bytes, size - 1), Err(Error::TooLarge(m)) if m == size - 1));
    }
}
