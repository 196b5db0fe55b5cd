//! READINGS batches — an internal format between ingest and its READINGS readers (processors,
//! archive), not part of the public contract.
//!
//! Ingest validates RAW in pull batches and stores the valid readings of one batch that fall in
//! one partition as **one** READINGS message: subject `readings.<district>.batch.v1` (the
//! district of the first reading; every reading in it hashes to the same partition, so the
//! stream's subject transform files it under that partition), body a CBOR array of byte strings,
//! each one reading as the device encoded it, or re-encoded when ingest adjusted a value (readers decode it with
//! [`Reading::decode`](crate::Reading::decode)). Order inside the array is RAW order.
//!
//! Readers also accept the single-reading messages of v0.1 (`readings.<district>.<kind>.<sensor>`,
//! body one reading): a stream written by an older ingest drains unchanged.

use crate::subject::READINGS_PREFIX;

/// The third token of a batch subject (where a single reading has its sensor's kind).
pub const BATCH_TOKEN: &str = "batch";
/// The fourth token: the batch format.
pub const BATCH_FORMAT: &str = "v1";
/// Most readings in one batch message (bounds a reader's allocation).
pub const MAX_BATCH_READINGS: usize = 65_536;
/// Most bytes of readings a writer puts in one batch message: half of nats-server's default
/// `max_payload` (1 MiB), leaving room for headers and a server configured lower. Ingest splits
/// a partition's readings of one RAW batch into several messages beyond it.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;

/// Why a READINGS batch does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Not a CBOR array of byte strings, or truncated.
    #[error("malformed readings batch: {0}")]
    Malformed(&'static str),
    /// More readings than [`MAX_BATCH_READINGS`].
    #[error("readings batch of {0} items exceeds {MAX_BATCH_READINGS}")]
    TooLarge(u64),
}

impl BatchError {
    /// A bounded label (metric and dead-letter reason).
    pub fn reason(&self) -> &'static str {
        "malformed_batch"
    }
}

/// The subject ingest publishes a batch on: `readings.<district>.batch.v1`.
pub fn batch_subject(district: &str) -> String {
    format!("{READINGS_PREFIX}.{district}.{BATCH_TOKEN}.{BATCH_FORMAT}")
}

/// Whether a READINGS subject (as published, or as stored with its partition token) is a batch.
pub fn is_batch_subject(subject: &str) -> bool {
    let mut tokens = subject.rsplit('.');
    tokens.next() == Some(BATCH_FORMAT) && tokens.next() == Some(BATCH_TOKEN)
}

/// Encodes readings (each already CBOR) as a batch body.
pub fn encode_batch<B: AsRef<[u8]>>(readings: &[B]) -> Vec<u8> {
    let len: usize = readings.iter().map(|r| r.as_ref().len() + 9).sum();
    let mut out = Vec::with_capacity(len + 9);
    head(&mut out, 4, readings.len() as u64);
    for r in readings {
        let r = r.as_ref();
        head(&mut out, 2, r.len() as u64);
        out.extend_from_slice(r);
    }
    out
}

/// The readings of a batch body, as slices of it, in order.
pub fn decode_batch(body: &[u8]) -> Result<Vec<&[u8]>, BatchError> {
    let mut at = 0;
    let n = read_head(body, &mut at, 4)?;
    if n > MAX_BATCH_READINGS as u64 {
        return Err(BatchError::TooLarge(n));
    }
    // Each item takes at least one byte: never reserve for more than the body can hold.
    let mut out = Vec::with_capacity((n as usize).min(body.len() - at));
    for _ in 0..n {
        let len = read_head(body, &mut at, 2)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|&e| e <= body.len())
            .ok_or(BatchError::Malformed("item runs past the end"))?;
        out.push(&body[at..end]);
        at = end;
    }
    if at != body.len() {
        return Err(BatchError::Malformed("bytes after the array"));
    }
    Ok(out)
}

/// Writes a CBOR head: major type `major`, argument `n`, in its shortest form (RFC 8949 §3).
fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// Reads a CBOR head of major type `major` (definite length only) at `*at`.
fn read_head(body: &[u8], at: &mut usize, major: u8) -> Result<u64, BatchError> {
    let first = *body.get(*at).ok_or(BatchError::Malformed("truncated"))?;
    if first >> 5 != major {
        return Err(BatchError::Malformed("unexpected item type"));
    }
    *at += 1;
    let info = first & 0x1f;
    let width = match info {
        0..=23 => return Ok(u64::from(info)),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        _ => return Err(BatchError::Malformed("indefinite or reserved length")),
    };
    let bytes = body
        .get(*at..*at + width)
        .ok_or(BatchError::Malformed("truncated"))?;
    *at += width;
    Ok(bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips_and_is_plain_cbor() {
        let items: Vec<Vec<u8>> = vec![vec![], vec![1; 23], vec![2; 24], vec![3; 300]];
        let body = encode_batch(&items);
        let back = decode_batch(&body).unwrap();
        assert_eq!(back, items.iter().map(Vec::as_slice).collect::<Vec<_>>());
        // Any CBOR library reads it as an array of byte strings.
        let v: ciborium::Value = ciborium::from_reader(&body[..]).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 4);
        assert_eq!(arr[3].as_bytes().unwrap(), &vec![3u8; 300]);
    }

    #[test]
    fn hostile_bodies_are_refused_without_panic() {
        for bad in [
            &[][..],
            &[0x81][..],             // one item, missing
            &[0x81, 0x45, 1, 2][..], // 5 bytes announced, 2 there
            &[0xa0][..],             // a map
            &[0x9f][..],             // indefinite array
            &[0x80, 0x00][..],       // trailing byte
            &[0x81, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
        ] {
            assert!(decode_batch(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            decode_batch(&[0x9b, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(BatchError::TooLarge(1 << 32))
        );
    }

    #[test]
    fn batch_subjects_are_told_apart_from_sensor_subjects() {
        assert_eq!(batch_subject("d01"), "readings.d01.batch.v1");
        assert!(is_batch_subject("readings.d01.batch.v1"));
        assert!(is_batch_subject("readings.3.d01.batch.v1"));
        assert!(!is_batch_subject("readings.3.d01.air.v1"));
        assert!(!is_batch_subject("readings.3.d01.traffic.loop-1"));
    }
}
