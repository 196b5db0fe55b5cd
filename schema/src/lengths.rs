//! A pre-check of CBOR lengths against the input (RFC 8949 §3: item heads and their arguments),
//! run before a serde-driven decode.
//!
//! serde preallocates for the length a CBOR head declares, capped at 1 MiB per sequence
//! (`serde::de::size_hint::cautious`), and ciborium trusts the head: a 200-byte window result
//! whose array head claims 2^60 items held 1 MiB while it failed (found by `citypulse-fuzz`).
//! Every item takes at least one byte, so a definite length larger than the bytes left cannot
//! be right; such an input is truncated, and rejected before any allocation.

/// Open containers tracked; deeper input is left to the decoder (whose own limit is 256).
const DEPTH: usize = 64;
/// Marks an indefinite-length container on the stack (it ends with a `break`).
const INDEFINITE: u64 = u64::MAX;

/// Whether every definite length in the first CBOR item of `bytes` fits in the bytes after its
/// head. Containers nested deeper than 64, reserved heads and misplaced `break`s end the check:
/// the decoder rejects those itself. What follows the first item is not looked at. Allocates
/// nothing.
pub(crate) fn fit(bytes: &[u8]) -> bool {
    // Items still to read per open container (the outermost "container" holds the one item).
    let mut stack = [0u64; DEPTH];
    stack[0] = 1;
    let mut depth = 1;
    // Items still to read in definite containers; each needs a byte, so it never exceeds the input.
    let mut pending: u64 = 1;
    let mut at = 0usize;
    while depth > 0 {
        let top = stack[depth - 1];
        if top == 0 {
            depth -= 1;
            continue;
        }
        let Some(&initial) = bytes.get(at) else {
            return false;
        };
        at += 1;
        if initial == 0xff {
            if top != INDEFINITE {
                return true;
            }
            depth -= 1;
            continue;
        }
        if top != INDEFINITE {
            stack[depth - 1] -= 1;
            pending -= 1;
        }
        let (major, info) = (initial >> 5, initial & 0x1f);
        let children = match info {
            0..=27 => {
                let Some(arg) = argument(bytes, &mut at, info) else {
                    return false;
                };
                let left = (bytes.len() - at) as u64;
                match major {
                    2 | 3 if arg > left => return false,
                    2 | 3 => {
                        at += arg as usize;
                        0
                    }
                    4 => arg,
                    5 => arg.saturating_mul(2),
                    6 => 1,
                    _ => 0,
                }
            }
            31 if (2..=5).contains(&major) => INDEFINITE,
            _ => return true,
        };
        if children == 0 {
            continue;
        }
        if depth == DEPTH {
            return true;
        }
        if children != INDEFINITE {
            pending = pending.saturating_add(children);
            if pending > (bytes.len() - at) as u64 {
                return false;
            }
        }
        stack[depth] = children;
        depth += 1;
    }
    true
}

/// The argument of a head with additional information `info` (0..=27), big-endian after it.
fn argument(bytes: &[u8], at: &mut usize, info: u8) -> Option<u64> {
    if info < 24 {
        return Some(u64::from(info));
    }
    let n = 1usize << (info - 24);
    let raw = bytes.get(*at..*at + n)?;
    *at += n;
    Some(raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor(v: &ciborium::Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).unwrap();
        out
    }

    #[test]
    fn complete_items_fit() {
        use ciborium::Value::*;
        let v = Map(vec![
            (Text("a".into()), Array(vec![Integer(1.into()), Float(0.5)])),
            (Text("b".into()), Bytes(vec![1, 2, 3])),
            (
                Text("c".into()),
                Tag(1, Box::new(Integer(1_700_000_000.into()))),
            ),
        ]);
        let bytes = cbor(&v);
        assert!(fit(&bytes));
        // Trailing bytes are the decoder's business.
        assert!(fit(&[bytes.clone(), vec![0xff]].concat()));
        // Every proper prefix is truncated.
        for n in 0..bytes.len() {
            assert!(!fit(&bytes[..n]), "prefix of {n} bytes");
        }
    }

    #[test]
    fn lengths_beyond_the_input_do_not_fit() {
        // An array head claiming 2^60 items; a map claiming 2 pairs with 3 bytes left; a text
        // of 100 bytes with 2 present.
        assert!(!fit(&[0x9b, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x01]));
        assert!(!fit(&[0xa2, 0x01, 0x02, 0x03]));
        assert!(!fit(&[0x78, 100, b'a', b'b']));
        // Inside an indefinite array too; a complete indefinite array fits, an unclosed one
        // does not.
        assert!(!fit(&[0x9f, 0x9b, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff]));
        assert!(fit(&[0x9f, 0x01, 0x82, 0x01, 0x02, 0xff]));
        assert!(!fit(&[0x9f, 0x01, 0x02]));
        // An indefinite text of definite chunks.
        assert!(fit(&[0x7f, 0x61, b'a', 0x61, b'b', 0xff]));
        assert!(!fit(&[0x7f, 0x78, 50, b'a', 0xff]));
    }
}
