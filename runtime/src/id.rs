//! PURE: [`Id`], a sensor's or a district's id as a key of the services' state maps (the
//! processors' windows, the alert evaluator's subjects).
//!
//! Why not `String`: a `String` key keeps its bytes on the heap, so each comparison in a
//! `BTreeMap` search follows a pointer, and at 100,000 sensors most of those are cache misses;
//! each new key is also an allocation. An [`Id`] of up to 24 bytes (the simulator's and most
//! cities' ids) is held inside the key itself, in the same 24 bytes a `String` takes
//! (docs/benchmarks.md, *What the processors' stage spends at 100,000 sensors*).
//!
//! It orders and serializes exactly as the `String` it holds, so a map keyed by [`Id`] keeps a
//! checkpoint's bytes and format, and iterates in the same order. Reading back, it takes text
//! through `deserialize_str`, which ciborium 0.2 limits to definite-length text of at most
//! 4 KiB. ciborium writes nothing else, and an id is a subject token, far shorter.

/// A sensor's or a district's id, held inline up to 24 bytes; see the module docs.
pub type Id = compact_str::CompactString;

#[cfg(test)]
mod tests {
    use super::Id;
    use std::collections::BTreeMap;

    fn cbor<T: serde::Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).unwrap_or_else(|e| panic!("encode: {e}"));
        out
    }

    /// Short, 24-byte (the longest held inline), longer and non-ASCII ids, in an order that is
    /// not theirs.
    const IDS: [&str; 6] = [
        "seg-d01-001-r17",
        "aq-d12-3",
        "a-twenty-four-byte-id-xx",
        "a-twenty-five-byte-id-xyz",
        "d01",
        "capteur-é-01",
    ];

    #[test]
    fn a_map_keyed_by_id_serializes_and_iterates_as_one_keyed_by_string() {
        assert_eq!(IDS[2].len(), 24);
        let by_string: BTreeMap<String, usize> = IDS
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), i))
            .collect();
        let by_id: BTreeMap<Id, usize> = IDS
            .iter()
            .enumerate()
            .map(|(i, s)| (Id::from(*s), i))
            .collect();

        assert_eq!(cbor(&by_id), cbor(&by_string));
        let order: Vec<&str> = by_id.keys().map(Id::as_str).collect();
        let want: Vec<&str> = by_string.keys().map(String::as_str).collect();
        assert_eq!(order, want);

        let read: BTreeMap<Id, usize> = ciborium::from_reader(cbor(&by_string).as_slice())
            .unwrap_or_else(|e| panic!("decode: {e}"));
        assert_eq!(read, by_id);
    }
}
