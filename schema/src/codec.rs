//! CBOR decoding primitives shared by the contract's types: a size guard, a structural parse into
//! a text-keyed map, and typed field accessors whose errors name the field.
//!
//! Decoding goes through [`ciborium::Value`] so every failure can be told apart (truncated input,
//! bad syntax, not a map, a field of the wrong type) and reported with a bounded
//! [`DecodeError::reason`].

use ciborium::Value;

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

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) => "integer",
        Value::Bytes(_) => "byte string",
        Value::Float(_) => "float",
        Value::Text(_) => "text",
        Value::Bool(_) => "bool",
        Value::Null => "null",
        Value::Tag(..) => "tagged item",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        _ => "unknown item",
    }
}

/// A decoded top-level map with text keys. Entries with non-text keys are ignored, like unknown
/// text keys: readers tolerate what they do not know.
pub(crate) struct Fields {
    entries: Vec<(String, Value)>,
}

impl Fields {
    /// Parses `bytes` as exactly one CBOR map, bounded by `max` bytes.
    pub(crate) fn parse(bytes: &[u8], max: usize) -> Result<Fields, DecodeError> {
        if bytes.len() > max {
            return Err(DecodeError::Oversized {
                len: bytes.len(),
                max,
            });
        }
        let mut reader = bytes;
        let value: Value = ciborium::from_reader(&mut reader).map_err(|e| match e {
            ciborium::de::Error::Io(_) => DecodeError::Truncated,
            ciborium::de::Error::Syntax(off) => {
                DecodeError::Malformed(format!("syntax error at byte {off}"))
            }
            ciborium::de::Error::Semantic(_, msg) => DecodeError::Malformed(msg),
            ciborium::de::Error::RecursionLimitExceeded => {
                DecodeError::Malformed("nesting too deep".to_owned())
            }
        })?;
        if !reader.is_empty() {
            return Err(DecodeError::Malformed(format!(
                "{} trailing bytes after the item",
                reader.len()
            )));
        }
        let Value::Map(map) = value else {
            return Err(DecodeError::NotAMap(type_name(&value)));
        };
        let mut entries: Vec<(String, Value)> = Vec::with_capacity(map.len());
        for (k, v) in map {
            if let Value::Text(k) = k {
                if entries.iter().any(|(seen, _)| *seen == k) {
                    return Err(DecodeError::DuplicateKey(k));
                }
                entries.push((k, v));
            }
        }
        Ok(Fields { entries })
    }

    fn take(&mut self, field: &str) -> Option<Value> {
        let i = self.entries.iter().position(|(k, _)| k == field)?;
        Some(self.entries.swap_remove(i).1)
    }

    fn wrong(field: &'static str, expected: &'static str, v: &Value) -> DecodeError {
        DecodeError::WrongType {
            field,
            expected,
            found: type_name(v).to_owned(),
        }
    }

    /// An optional unsigned integer field.
    pub(crate) fn opt_u64(&mut self, field: &'static str) -> Result<Option<u64>, DecodeError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Integer(i)) => {
                u64::try_from(i)
                    .map(Some)
                    .map_err(|_| DecodeError::WrongType {
                        field,
                        expected: "an unsigned integer",
                        found: format!("integer {}", i128::from(i)),
                    })
            }
            Some(v) => Err(Self::wrong(field, "an unsigned integer", &v)),
        }
    }

    /// A required unsigned integer field.
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.opt_u64(field)?.ok_or(DecodeError::MissingField(field))
    }

    /// A required unsigned integer field that must fit in `u32`.
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.opt_u32(field)?.ok_or(DecodeError::MissingField(field))
    }

    /// An optional unsigned integer field that must fit in `u32`.
    pub(crate) fn opt_u32(&mut self, field: &'static str) -> Result<Option<u32>, DecodeError> {
        let Some(v) = self.opt_u64(field)? else {
            return Ok(None);
        };
        u32::try_from(v)
            .map(Some)
            .map_err(|_| DecodeError::WrongType {
                field,
                expected: "an unsigned integer below 2^32",
                found: v.to_string(),
            })
    }

    /// An optional number. Integers are accepted where the contract says float: a device that
    /// sends `0` for `0.0` is speaking the contract.
    pub(crate) fn opt_f64(&mut self, field: &'static str) -> Result<Option<f64>, DecodeError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Float(f)) => Ok(Some(f)),
            // i128 -> f64 is exact for every value a sensor could mean; larger ones round.
            #[allow(clippy::cast_precision_loss)]
            Some(Value::Integer(i)) => Ok(Some(i128::from(i) as f64)),
            Some(v) => Err(Self::wrong(field, "a number", &v)),
        }
    }

    /// A required number.
    pub(crate) fn f64(&mut self, field: &'static str) -> Result<f64, DecodeError> {
        self.opt_f64(field)?.ok_or(DecodeError::MissingField(field))
    }

    /// An optional text field.
    pub(crate) fn opt_text(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Text(t)) => Ok(Some(t)),
            Some(v) => Err(Self::wrong(field, "text", &v)),
        }
    }

    /// A required text field.
    pub(crate) fn text(&mut self, field: &'static str) -> Result<String, DecodeError> {
        self.opt_text(field)?
            .ok_or(DecodeError::MissingField(field))
    }
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
