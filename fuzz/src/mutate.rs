//! Input generation, deterministic from a seed: byte-level mutation of a corpus (the golden
//! fixtures and valid samples) and structure-aware mutation of CBOR values, which keeps a map's
//! shape while changing what one key holds, so inputs get past the decoder's first checks.

use ciborium::Value;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The generator's random source.
pub struct Rng(ChaCha8Rng);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.0.next_u64() % n as u64) as usize
        }
    }

    /// A random `u64`.
    pub fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

/// Bytes that often sit on decoder edges: CBOR headers of each major type with 1-, 2-, 4- and
/// 8-byte arguments, indefinite lengths, `break`, float headers, and the extremes.
const INTERESTING: &[u8] = &[
    0x00, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1f, 0x20, 0x38, 0x3b, 0x40, 0x58, 0x5f, 0x60, 0x78, 0x7b,
    0x7f, 0x80, 0x98, 0x9f, 0xa0, 0xb8, 0xbf, 0xc0, 0xc2, 0xd8, 0xf4, 0xf5, 0xf6, 0xf7, 0xf9, 0xfa,
    0xfb, 0xff, 0x7e, 0x80,
];

/// One to four byte-level mutations of `input`, sometimes spliced with `other`.
pub fn bytes(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        mutate_once(rng, &mut out, other);
    }
    out
}

fn mutate_once(rng: &mut Rng, out: &mut Vec<u8>, other: &[u8]) {
    let len = out.len();
    let at = rng.below(len + 1);
    match rng.below(8) {
        0 if len > 0 => out[at.min(len - 1)] ^= 1 << rng.below(8),
        1 if len > 0 => out[at.min(len - 1)] = INTERESTING[rng.below(INTERESTING.len())],
        2 => out.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
        3 => {
            let n = 1 + rng.below(8);
            let end = (at + n).min(len);
            out.drain(at..end);
        }
        4 => out.truncate(at),
        5 if len > 0 => {
            // Repeat a slice (nesting, duplicate keys, long runs).
            let start = rng.below(len);
            let end = (start + 1 + rng.below(32)).min(len);
            let piece = out[start..end].to_vec();
            let most = if rng.one_in(16) { 1000 } else { 4 };
            let times = 1 + rng.below(most);
            for _ in 0..times {
                out.splice(at..at, piece.iter().copied());
            }
        }
        6 if !other.is_empty() => {
            let start = rng.below(other.len());
            let end = (start + 1 + rng.below(64)).min(other.len());
            out.splice(at.., other[start..end].iter().copied());
        }
        _ => {
            let byte = rng.u64() as u8;
            out.insert(at, byte);
        }
    }
}

/// A CBOR-level mutation of `input` when it decodes as CBOR: one value somewhere in the tree is
/// replaced, removed, duplicated or given a sibling; otherwise a byte-level mutation.
pub fn structured(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let Ok(mut value) = ciborium::from_reader::<Value, _>(input) else {
        return bytes(rng, input, other);
    };
    for _ in 0..=rng.below(2) {
        mutate_value(rng, &mut value, 0);
    }
    let mut out = Vec::new();
    match ciborium::into_writer(&value, &mut out) {
        Ok(()) => out,
        Err(_) => bytes(rng, input, other),
    }
}

fn mutate_value(rng: &mut Rng, v: &mut Value, depth: usize) {
    match v {
        Value::Map(entries) if !entries.is_empty() && depth < 4 && !rng.one_in(4) => {
            let i = rng.below(entries.len());
            match rng.below(6) {
                0 => {
                    entries.remove(i);
                }
                1 => {
                    let e = entries[i].clone();
                    entries.push(e);
                }
                2 => entries[i].0 = random_value(rng, 0),
                _ => mutate_value(rng, &mut entries[i].1, depth + 1),
            }
        }
        Value::Array(items) if !items.is_empty() && depth < 4 && !rng.one_in(4) => {
            let i = rng.below(items.len());
            mutate_value(rng, &mut items[i], depth + 1);
        }
        _ => *v = random_value(rng, depth),
    }
}

/// A random CBOR value, biased towards edges (0, the largest integers, NaN, ±∞, empty and long
/// text, deep nesting).
pub fn random_value(rng: &mut Rng, depth: usize) -> Value {
    let floats = [0.0, -0.0, f64::NAN, f64::INFINITY, -1.0, 1e308, 5e-324, 0.5];
    match rng.below(if depth > 3 { 7 } else { 9 }) {
        0 => Value::Integer(rng.u64().into()),
        1 => Value::Integer([0u64, 1, 23, 24, 255, 65_535, u64::MAX][rng.below(7)].into()),
        2 => Value::Integer((-(rng.below(1 << 20) as i64) - 1).into()),
        3 => Value::Float(floats[rng.below(floats.len())]),
        4 => Value::Float(f64::from_bits(rng.u64())),
        5 => Value::Text("x".repeat([0, 1, 64, 65, 300][rng.below(5)])),
        6 => [Value::Bool(true), Value::Null, Value::Bytes(vec![0; 3])][rng.below(3)].clone(),
        7 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Map(
            (0..rng.below(4))
                .map(|_| (random_value(rng, depth + 1), random_value(rng, depth + 1)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_changes_the_input() {
        let seed = [0xa2u8, 0x61, 0x76, 0x01, 0x61, 0x6b, 0x61, 0x78];
        let run = |s| {
            let mut rng = Rng::new(s);
            (0..100)
                .map(|_| structured(&mut rng, &seed, &seed))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).iter().filter(|m| m[..] != seed[..]).count() > 80);
    }
}
