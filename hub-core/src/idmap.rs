//! A map from connection id to a value that stays small when it is small.
//!
//! Registries hold one such map per channel and per user. Most hold one or a few entries
//! (personal channels, a user's one or two tabs), where a hash table's minimum of buckets
//! costs more than the connection itself; a few hold thousands (a popular channel), where a
//! vector's linear search would cost too much. So: an exactly-sized vector up to
//! [`SMALL`] entries, a hash map beyond.

use std::collections::HashMap;
use std::sync::Arc;

/// Entries kept in a vector before switching to a hash map.
const SMALL: usize = 16;

pub(crate) enum IdMap<V> {
    Small(Vec<(Arc<str>, V)>),
    Large(HashMap<Arc<str>, V>),
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        IdMap::Small(Vec::new())
    }
}

impl<V> IdMap<V> {
    pub(crate) fn len(&self) -> usize {
        match self {
            IdMap::Small(v) => v.len(),
            IdMap::Large(m) => m.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inserts or replaces; true if the id is new.
    pub(crate) fn insert(&mut self, id: Arc<str>, value: V) -> bool {
        match self {
            IdMap::Large(m) => m.insert(id, value).is_none(),
            IdMap::Small(v) => {
                if let Some(slot) = v.iter_mut().find(|(k, _)| *k == id) {
                    slot.1 = value;
                    return false;
                }
                if v.len() < SMALL {
                    v.reserve_exact(1);
                    v.push((id, value));
                } else {
                    let mut m: HashMap<Arc<str>, V> = std::mem::take(v).into_iter().collect();
                    m.insert(id, value);
                    *self = IdMap::Large(m);
                }
                true
            }
        }
    }

    /// Removes; true if the id was there.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        match self {
            IdMap::Large(m) => {
                let removed = m.remove(id).is_some();
                if m.len() <= SMALL / 4 {
                    let v: Vec<(Arc<str>, V)> = std::mem::take(m).into_iter().collect();
                    *self = IdMap::Small(v);
                }
                removed
            }
            IdMap::Small(v) => match v.iter().position(|(k, _)| &**k == id) {
                Some(i) => {
                    v.swap_remove(i);
                    v.shrink_to_fit();
                    true
                }
                None => false,
            },
        }
    }

    /// The values, in no particular order.
    pub(crate) fn values(&self) -> Values<'_, V> {
        match self {
            IdMap::Small(v) => Values::Small(v.iter()),
            IdMap::Large(m) => Values::Large(m.values()),
        }
    }
}

/// Iterator over an [`IdMap`]'s values.
pub(crate) enum Values<'a, V> {
    Small(std::slice::Iter<'a, (Arc<str>, V)>),
    Large(std::collections::hash_map::Values<'a, Arc<str>, V>),
}

impl<'a, V> Iterator for Values<'a, V> {
    type Item = &'a V;

    fn next(&mut self) -> Option<&'a V> {
        match self {
            Values::Small(i) => i.next().map(|(_, v)| v),
            Values::Large(i) => i.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_into_a_hash_map_and_shrinks_back() {
        let mut m: IdMap<u32> = IdMap::default();
        for i in 0..100u32 {
            assert!(m.insert(Arc::from(i.to_string()), i));
        }
        assert!(matches!(m, IdMap::Large(_)));
        assert!(!m.insert(Arc::from("7"), 70), "replacing is not new");
        assert_eq!(m.len(), 100);
        let mut sum: u32 = m.values().sum();
        assert_eq!(sum, (0..100).sum::<u32>() - 7 + 70);
        for i in 0..97u32 {
            assert!(m.remove(&i.to_string()));
        }
        assert!(matches!(m, IdMap::Small(_)));
        assert!(!m.remove("5"));
        sum = m.values().sum();
        assert_eq!(sum, 97 + 98 + 99);
        for i in 97..100u32 {
            assert!(m.remove(&i.to_string()));
        }
        assert!(m.is_empty());
    }

    #[test]
    fn a_small_map_holds_exactly_its_entries() {
        let mut m: IdMap<u8> = IdMap::default();
        m.insert(Arc::from("a"), 1);
        match &m {
            IdMap::Small(v) => assert_eq!(v.capacity(), 1),
            IdMap::Large(_) => panic!("one entry is small"),
        }
    }
}
