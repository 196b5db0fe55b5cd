//! How the per-subject state is written into a checkpoint: each [`SubjectState`],
//! [`GroupState`] and [`Run`] as a CBOR array of its fields in declaration order (checkpoint
//! version 2), where version 1 wrote a map keyed by the field names. Both are read.
//!
//! There is one subject per sensor, and the checkpoint holds them all, every time: at 100,000
//! sensors the names of their fields were most of its bytes, and encoding it a quarter of the
//! service's CPU in `scripts/bench` (docs/benchmarks.md, *Alerts at 100,000 sensors: the
//! checkpoint's subjects as arrays*).
//!
//! An array is read by position and must have exactly the fields this build knows: a field
//! added later needs a new checkpoint version (a longer or shorter array is refused, never
//! misread). The map form is the derived `Deserialize` of each struct (`#[serde(remote = "Self")]`
//! turns it into an inherent function), so its defaults for missing fields stay where the
//! fields are declared.

use super::{GroupState, Run, SubjectState};
use citypulse_runtime::small_map::SmallMap;
use citypulse_schema::AlertEvent;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;

type SubjectFields = (u64, u64, u64, bool, SmallMap<String, GroupState>);
type GroupFields = (
    u64,
    SmallMap<String, u64>,
    Option<Run>,
    Option<Box<AlertEvent>>,
    u64,
);

impl Serialize for SubjectState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.start, self.end, self.step, self.silent, &self.groups).serialize(s)
    }
}

impl Serialize for GroupState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let GroupState {
            last_end,
            since,
            run,
            firing,
            hold_until,
        } = self;
        (last_end, since, run, firing, hold_until).serialize(s)
    }
}

impl Serialize for Run {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.value, self.start).serialize(s)
    }
}

impl From<SubjectFields> for SubjectState {
    fn from((start, end, step, silent, groups): SubjectFields) -> SubjectState {
        SubjectState {
            start,
            end,
            step,
            silent,
            groups,
        }
    }
}

impl From<GroupFields> for GroupState {
    fn from((last_end, since, run, firing, hold_until): GroupFields) -> GroupState {
        GroupState {
            last_end,
            since,
            run,
            firing,
            hold_until,
        }
    }
}

impl From<(f64, u64)> for Run {
    fn from((value, start): (f64, u64)) -> Run {
        Run { value, start }
    }
}

/// A state read from either form.
trait Fields<'de>: Sized {
    /// The fields in declaration order: the array form.
    type Array: Deserialize<'de> + Into<Self>;
    /// The map form, through the derived reader.
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

impl<'de> Fields<'de> for SubjectState {
    type Array = SubjectFields;
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        SubjectState::deserialize(MapAccessDeserializer::new(map))
    }
}

impl<'de> Fields<'de> for GroupState {
    type Array = GroupFields;
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        GroupState::deserialize(MapAccessDeserializer::new(map))
    }
}

impl<'de> Fields<'de> for Run {
    type Array = (f64, u64);
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        Run::deserialize(MapAccessDeserializer::new(map))
    }
}

impl<'de> Deserialize<'de> for SubjectState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ArrayOrMap(PhantomData))
    }
}

impl<'de> Deserialize<'de> for GroupState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ArrayOrMap(PhantomData))
    }
}

impl<'de> Deserialize<'de> for Run {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ArrayOrMap(PhantomData))
    }
}

/// Reads a `T` from whichever form it finds.
struct ArrayOrMap<T>(PhantomData<T>);

impl<'de, T: Fields<'de>> Visitor<'de> for ArrayOrMap<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array or a map of the fields")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        let fields = T::Array::deserialize(SeqAccessDeserializer::new(&mut seq))?;
        // A longer array is another layout (a later version's): refused, never read as this
        // one with its last fields taken for whatever follows.
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(A::Error::custom(
                "an array of more fields than this build knows",
            ));
        }
        Ok(fields.into())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn read(fields: &impl Serialize) -> Result<(SubjectState, u64), String> {
        let mut bytes = Vec::new();
        // Followed by another value, which a misread would take a field for.
        ciborium::into_writer(&(fields, 77u64), &mut bytes).unwrap();
        ciborium::from_reader(&bytes[..]).map_err(|e| e.to_string())
    }

    #[test]
    fn an_array_of_other_than_its_fields_is_refused() {
        let groups = SmallMap::<String, GroupState>::default();
        let (subject, next) = read(&(1u64, 2u64, 3u64, true, &groups)).unwrap();
        assert_eq!((subject.start, subject.end, subject.step), (1, 2, 3));
        assert!(subject.silent);
        assert_eq!(next, 77);
        let longer = read(&(1u64, 2u64, 3u64, false, &groups, 9u64));
        assert!(longer.unwrap_err().contains("more fields"));
        let shorter = read(&(1u64, 2u64, 3u64));
        assert!(shorter.unwrap_err().contains("invalid length 3"));
    }
}
