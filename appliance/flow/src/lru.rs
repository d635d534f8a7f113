//! A bounded map that remembers use order: a slab of entries threaded on an
//! intrusive doubly-linked list, so touch, insert, remove and "oldest" are O(1).
//! The flow table and the window aggregator both use it for their size bounds.

use std::collections::HashMap;
use std::hash::Hash;

const NIL: u32 = u32::MAX;

#[derive(Debug)]
struct Slot<K, V> {
    key: K,
    value: Option<V>,
    /// Toward the newest entry.
    newer: u32,
    /// Toward the oldest entry.
    older: u32,
    generation: u32,
}

/// Handle to a live entry; stale once the entry is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handle {
    pub index: u32,
    pub generation: u32,
}

#[derive(Debug)]
pub(crate) struct LruMap<K, V> {
    index: HashMap<K, u32, ahash::RandomState>,
    slots: Vec<Slot<K, V>>,
    free: Vec<u32>,
    newest: u32,
    oldest: u32,
    capacity: usize,
}

impl<K: Hash + Eq + Copy, V> LruMap<K, V> {
    pub fn new(capacity: usize) -> LruMap<K, V> {
        assert!(capacity > 0 && capacity < NIL as usize, "LruMap capacity must be in 1..u32::MAX");
        LruMap { index: HashMap::with_hasher(ahash::RandomState::new()), slots: Vec::new(), free: Vec::new(), newest: NIL, oldest: NIL, capacity }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity
    }

    pub fn find(&self, key: &K) -> Option<Handle> {
        self.index.get(key).map(|index| Handle { index: *index, generation: self.slots[*index as usize].generation })
    }

    /// The value behind `handle`, if the entry still exists.
    pub fn get_mut(&mut self, handle: Handle) -> Option<&mut V> {
        let slot = self.slots.get_mut(handle.index as usize)?;
        if slot.generation != handle.generation {
            return None;
        }
        slot.value.as_mut()
    }

    pub fn get(&self, handle: Handle) -> Option<&V> {
        let slot = self.slots.get(handle.index as usize)?;
        if slot.generation != handle.generation {
            return None;
        }
        slot.value.as_ref()
    }

    /// Marks the entry as the most recently used.
    pub fn touch(&mut self, handle: Handle) {
        if self.newest == handle.index {
            return;
        }
        self.unlink(handle.index);
        self.link_newest(handle.index);
    }

    /// Inserts a new key as the newest entry. The caller makes room first (`is_full`).
    pub fn insert(&mut self, key: K, value: V) -> Handle {
        debug_assert!(!self.is_full(), "insert into a full LruMap");
        debug_assert!(!self.index.contains_key(&key), "insert of a present key");
        let index = match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                slot.key = key;
                slot.value = Some(value);
                slot.generation = slot.generation.wrapping_add(1);
                index
            }
            None => {
                self.slots.push(Slot { key, value: Some(value), newer: NIL, older: NIL, generation: 0 });
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key, index);
        self.link_newest(index);
        Handle { index, generation: self.slots[index as usize].generation }
    }

    pub fn remove(&mut self, handle: Handle) -> Option<(K, V)> {
        let slot = self.slots.get_mut(handle.index as usize)?;
        if slot.generation != handle.generation || slot.value.is_none() {
            return None;
        }
        let value = slot.value.take()?;
        let key = slot.key;
        self.index.remove(&key);
        self.unlink(handle.index);
        self.free.push(handle.index);
        Some((key, value))
    }

    /// The key of a live entry.
    pub fn key(&self, handle: Handle) -> Option<K> {
        let slot = self.slots.get(handle.index as usize)?;
        (slot.generation == handle.generation && slot.value.is_some()).then_some(slot.key)
    }

    /// The live entry in slab slot `index` (any use order), for a scan that walks the
    /// slots with a cursor; `None` for a free slot or past the end.
    pub fn at(&self, index: usize) -> Option<Handle> {
        let slot = self.slots.get(index)?;
        slot.value.is_some().then_some(Handle { index: index as u32, generation: slot.generation })
    }

    /// Slots in the slab (live or free): the bound of an `at` scan.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The least recently used entry.
    pub fn oldest(&self) -> Option<Handle> {
        (self.oldest != NIL).then(|| Handle { index: self.oldest, generation: self.slots[self.oldest as usize].generation })
    }

    fn unlink(&mut self, index: u32) {
        let (newer, older) = {
            let slot = &self.slots[index as usize];
            (slot.newer, slot.older)
        };
        if newer == NIL {
            self.newest = older;
        } else {
            self.slots[newer as usize].older = older;
        }
        if older == NIL {
            self.oldest = newer;
        } else {
            self.slots[older as usize].newer = newer;
        }
    }

    fn link_newest(&mut self, index: u32) {
        let previous_newest = self.newest;
        {
            let slot = &mut self.slots[index as usize];
            slot.newer = NIL;
            slot.older = previous_newest;
        }
        if previous_newest == NIL {
            self.oldest = index;
        } else {
            self.slots[previous_newest as usize].newer = index;
        }
        self.newest = index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_follows_use_order() {
        let mut map = LruMap::new(3);
        let a = map.insert('a', 1);
        let b = map.insert('b', 2);
        let _c = map.insert('c', 3);
        assert!(map.is_full());
        assert_eq!(map.oldest(), Some(a));
        map.touch(a);
        assert_eq!(map.oldest(), Some(b));
        assert_eq!(map.remove(b), Some(('b', 2)));
        assert_eq!(map.remove(b), None, "a removed handle is stale");
        let d = map.insert('d', 4);
        assert_eq!(d.index, b.index, "the slot is reused");
        assert_eq!(map.get_mut(b), None, "with a new generation");
        assert_eq!(map.oldest(), map.find(&'c'));
        assert_eq!(map.find(&'a'), Some(a));
        assert_eq!(map.len(), 3);
    }
}
