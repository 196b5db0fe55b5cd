//! PURE: [`SmallMap`], an ordered map for the handful of entries one sensor keeps in the
//! services' state (an air station's open clock hours and its day of hourly means in the
//! processors; a subject's rule groups and their armed levels in alerts), stored as one sorted
//! vector.
//!
//! Why not `BTreeMap`: a B-tree node always has room for 11 entries, so a map of one entry
//! costs eleven. One open hour (336 bytes) took a 4 KiB node and a day of hourly means five
//! nodes of 1.25 KiB: about 10 KB per station after a day, seven times what its checkpoint holds
//! (`cargo bench -p citypulse-processors --bench state`, docs/benchmarks.md); one alert group
//! (248 bytes) took 3 KiB per sensor. A sorted vector that grows one entry at a time holds what
//! it holds. Lookups are binary searches over a few dozen entries at most.
//!
//! It serializes exactly as a `BTreeMap` with the same entries (a map in key order), so
//! checkpoints keep their bytes and their format.

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;

/// An ordered map of a few entries, kept as a vector sorted by key with no spare capacity
/// beyond one entry's growth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmallMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap(Vec::new())
    }
}

impl<K: Ord, V> SmallMap<K, V> {
    /// An empty map (allocates nothing).
    pub const fn new() -> Self {
        SmallMap(Vec::new())
    }

    /// Whether the map holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn find<Q: Ord + ?Sized>(&self, k: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(key, _)| key.borrow().cmp(k))
    }

    /// The value at `k`.
    pub fn get<Q: Ord + ?Sized>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(k).ok().map(|i| &self.0[i].1)
    }

    /// The value at `k`, to change.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.find(k).ok().map(|i| &mut self.0[i].1)
    }

    /// Sets `k` to `v`, replacing a value already there.
    pub fn insert(&mut self, k: K, v: V) {
        match self.find(&k) {
            Ok(i) => self.0[i].1 = v,
            Err(i) => self.insert_at(i, k, v),
        }
    }

    /// The value at `k`, inserted as `V::default()` (under an owned copy of `k`) when absent.
    pub fn get_or_default<Q: Ord + ToOwned<Owned = K> + ?Sized>(&mut self, k: &Q) -> &mut V
    where
        K: Borrow<Q>,
        V: Default,
    {
        self.get_or_insert_with(k, V::default)
    }

    /// The value at `k`, inserted as `make()` (under an owned copy of `k`) when absent.
    pub fn get_or_insert_with<Q: Ord + ToOwned<Owned = K> + ?Sized>(
        &mut self,
        k: &Q,
        make: impl FnOnce() -> V,
    ) -> &mut V
    where
        K: Borrow<Q>,
    {
        let i = match self.find(k) {
            Ok(i) => i,
            Err(i) => {
                self.insert_at(i, k.to_owned(), make());
                i
            }
        };
        &mut self.0[i].1
    }

    fn insert_at(&mut self, i: usize, k: K, v: V) {
        // One entry at a time: these maps grow by an entry now and then (a station's by one an
        // hour), and a doubling vector would keep up to half its size unused.
        self.0.reserve_exact(1);
        self.0.insert(i, (k, v));
    }

    /// Removes the entry at `k`, returning its value.
    pub fn remove<Q: Ord + ?Sized>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.find(k).ok().map(|i| self.0.remove(i).1)
    }

    /// Keeps the entries for which `keep` holds (the vector keeps its capacity).
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }

    /// Removes every entry (the vector keeps its capacity).
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Removes and returns, in key order, the entries with keys below `k`.
    pub fn take_below<Q: Ord + ?Sized>(&mut self, k: &Q) -> impl Iterator<Item = (K, V)> + '_
    where
        K: Borrow<Q>,
    {
        let end = self.find(k).unwrap_or_else(|i| i);
        self.0.drain(..end)
    }

    /// The values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }
}

impl<K: Serialize, V: Serialize> Serialize for SmallMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for SmallMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Visitor<'de> for Entries<K, V> {
            type Value = SmallMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                // The claimed length is the sender's word: cap what it reserves.
                let mut out = SmallMap(Vec::with_capacity(a.size_hint().unwrap_or(0).min(64)));
                while let Some((k, v)) = a.next_entry()? {
                    // As a BTreeMap reads it: in key order, a repeated key's last value.
                    out.insert(k, v);
                }
                out.0.shrink_to_fit();
                Ok(out)
            }
        }
        d.deserialize_map(Entries(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn cbor<T: Serialize>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).unwrap();
        out
    }

    impl<K: Clone, V: Clone> SmallMap<K, V> {
        fn entries(&self) -> Vec<(K, V)> {
            self.0.clone()
        }
    }

    proptest! {
        /// Any sequence of inserts and cuts leaves the same entries as a BTreeMap, and both
        /// serialize to the same bytes; reading those bytes back gives the same map.
        #[test]
        fn behaves_and_serializes_like_a_btreemap(
            ops in proptest::collection::vec((any::<bool>(), 0u64..40, any::<i32>()), 0..120)
        ) {
            let mut small = SmallMap::new();
            let mut tree = BTreeMap::new();
            for (insert, k, v) in ops {
                if insert {
                    small.insert(k, v);
                    tree.insert(k, v);
                } else {
                    let cut: Vec<_> = small.take_below(&k).collect();
                    let rest = tree.split_off(&k);
                    let expected: Vec<_> = std::mem::replace(&mut tree, rest).into_iter().collect();
                    prop_assert_eq!(cut, expected);
                }
                prop_assert_eq!(small.0.len(), tree.len());
            }
            prop_assert_eq!(small.entries(), tree.clone().into_iter().collect::<Vec<_>>());
            prop_assert_eq!(cbor(&small), cbor(&tree));
            let back: SmallMap<u64, i32> = ciborium::from_reader(&cbor(&tree)[..]).unwrap();
            prop_assert_eq!(back, small);
        }
    }

    #[test]
    fn get_or_default_inserts_once_and_keeps_order() {
        let mut m = SmallMap::new();
        *m.get_or_default(&7u64) += 1;
        *m.get_or_default(&3) += 10;
        *m.get_or_default(&7) += 1;
        assert_eq!(m.entries(), vec![(3, 10), (7, 2)]);
        assert_eq!(m.get(&7), Some(&2));
        assert_eq!(m.get(&5), None);
        let mut names: SmallMap<String, u32> = SmallMap::new();
        *names.get_or_default("b") += 1;
        *names.get_or_default("a") += 2;
        names.retain(|k, _| k != "b");
        assert_eq!(names.remove("a"), Some(2));
        assert!(names.is_empty());
    }

    #[test]
    fn an_unsorted_map_with_a_repeated_key_reads_as_a_btreemap_would() {
        let entries: Vec<(u64, i32)> = vec![(5, 1), (2, 2), (5, 3)];
        let mut bytes = Vec::new();
        ciborium::into_writer(
            &ciborium::Value::Map(
                entries
                    .iter()
                    .map(|&(k, v)| (ciborium::Value::from(k), ciborium::Value::from(v)))
                    .collect(),
            ),
            &mut bytes,
        )
        .unwrap();
        let small: SmallMap<u64, i32> = ciborium::from_reader(&bytes[..]).unwrap();
        let tree: BTreeMap<u64, i32> = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(small.entries(), tree.into_iter().collect::<Vec<_>>());
    }
}
