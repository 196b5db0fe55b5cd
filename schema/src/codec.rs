//! CBOR decoding primitives shared by the contract's types: a size guard, a one-pass reader of a
//! top-level map with text keys that borrows from the input, and typed field accessors whose
//! errors name the field.
//!
//! Every failure can be told apart (truncated input, bad syntax, not a map, a field of the wrong
//! type) and is reported with a bounded [`DecodeError::reason`]. The reader (`reader`) walks any
//! CBOR data item (RFC 8949) but keeps only numbers and text of the top-level map; it accepts and
//! rejects exactly what the ciborium `Value` decoder it replaced for [`Reading`] (issue 9) did,
//! with the same errors and messages, down to that decoder's quirks (marked where they differ
//! from the RFC); `codec::legacy`, test-only, keeps the old decoder for the differential tests.
//! [`WindowResult`] decodes through this reader when it is in the plain form the processors write,
//! and through serde (ciborium) otherwise; [`AlertEvent`] through serde.
//!
//! [`Reading`]: crate::Reading
//! [`WindowResult`]: crate::WindowResult
//! [`AlertEvent`]: crate::AlertEvent

#[cfg(test)]
pub(crate) mod legacy;
mod reader;

pub(crate) use reader::{Fields, Unusual};

/// Largest payload accepted for a reading. A reading is ~150 bytes; anything near this is an
/// attack or a bug, and bounding it bounds decoder memory.
pub const MAX_READING_BYTES: usize = 4096;

/// Why bytes are not a contract message. Purely structural: semantic checks (ranges, clocks) are
/// ingest's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The payload is larger than the limit.
    #[error("payload of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload ends in the middle of a CBOR item (or is empty).
    #[error("truncated CBOR: input ended inside an item")]
    Truncated,
    /// The payload is not well-formed CBOR, or has bytes after the item.
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    /// The top-level item is not a map.
    #[error("top-level CBOR item is a {0}, not a map")]
    NotAMap(&'static str),
    /// The same key appears twice (RFC 8949 §5.6: such a map is not valid).
    #[error("duplicate key `{0}`")]
    DuplicateKey(String),
    /// A known field has the wrong CBOR type or does not fit its type.
    #[error("field `{field}` should be {expected}, found {found}")]
    WrongType {
        /// Field name.
        field: &'static str,
        /// What the contract says.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// `kind` is not one the contract knows.
    #[error("unknown kind `{0}`")]
    UnknownKind(String),
    /// `v` is not a version this reader supports.
    #[error("unsupported schema version {0} (this reader supports 1)")]
    UnsupportedVersion(u64),
}

impl DecodeError {
    /// A bounded label for metrics and the dead-letter subject.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Truncated | DecodeError::Malformed(_) | DecodeError::DuplicateKey(_) => {
                "malformed_cbor"
            }
            DecodeError::NotAMap(_) => "not_a_map",
            DecodeError::WrongType { .. } => "wrong_type",
            DecodeError::MissingField(_) => "missing_field",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
        }
    }

    /// Every value [`DecodeError::reason`] can return.
    pub const REASONS: &'static [&'static str] = &[
        "oversized",
        "malformed_cbor",
        "not_a_map",
        "wrong_type",
        "missing_field",
        "unknown_kind",
        "unsupported_version",
    ];
}

/// Encodes a serializable value as CBOR.
pub(crate) fn to_vec<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    // Writing to a Vec cannot fail with an I/O error, and our types serialize without custom
    // errors; an error here would be a bug in a Serialize impl of this crate.
    if let Err(e) = ciborium::into_writer(value, &mut out) {
        unreachable!("CBOR encoding into a Vec failed: {e}");
    }
    out
}
