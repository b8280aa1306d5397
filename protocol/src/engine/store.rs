//! Small containers the engine is built from: a generational slab for endpoint handles and a sequence map for
//! deliveries keyed by serial numbers.

use std::collections::VecDeque;

/// A key into a [`Slab`]: an index plus the generation of the entry it was issued for, so a key to a freed
/// entry never finds the entry that later reuses the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    index: u32,
    generation: u32,
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// A vector of entries with reusable slots and generational keys.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    pub(crate) fn insert(&mut self, value: T) -> Key {
        match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                slot.generation = slot.generation.wrapping_add(1);
                slot.value = Some(value);
                Key {
                    index,
                    generation: slot.generation,
                }
            }
            None => {
                let index = self.slots.len() as u32;
                self.slots.push(Slot {
                    generation: 0,
                    value: Some(value),
                });
                Key {
                    index,
                    generation: 0,
                }
            }
        }
    }

    pub(crate) fn get(&self, key: Key) -> Option<&T> {
        self.slots
            .get(key.index as usize)
            .filter(|s| s.generation == key.generation)
            .and_then(|s| s.value.as_ref())
    }

    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        self.slots
            .get_mut(key.index as usize)
            .filter(|s| s.generation == key.generation)
            .and_then(|s| s.value.as_mut())
    }

    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        let slot = self
            .slots
            .get_mut(key.index as usize)
            .filter(|s| s.generation == key.generation)?;
        let value = slot.value.take()?;
        self.free.push(key.index);
        Some(value)
    }

    pub(crate) fn keys(&self) -> Vec<Key> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.value.is_some())
            .map(|(i, s)| Key {
                index: i as u32,
                generation: s.generation,
            })
            .collect()
    }
}

/// Entries keyed by consecutive 32-bit serial numbers (delivery-ids), with O(1) insert at the end, lookup and
/// removal; removed entries at the front are reclaimed. Serial arithmetic wraps [AMQP 1.0 §2.8.10].
#[derive(Debug)]
pub(crate) struct SeqMap<T> {
    base: u32,
    entries: VecDeque<Option<T>>,
    live: usize,
}

impl<T> Default for SeqMap<T> {
    fn default() -> Self {
        SeqMap {
            base: 0,
            entries: VecDeque::new(),
            live: 0,
        }
    }
}

impl<T> SeqMap<T> {
    /// The number of live entries.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Inserts at `id`, which must not be behind the last id inserted. Gaps of up to `max_gap` ids are
    /// padded; returns false (and inserts nothing) for an id behind the end or too far ahead.
    pub(crate) fn insert(&mut self, id: u32, value: T, max_gap: usize) -> bool {
        if self.entries.is_empty() {
            self.base = id;
        }
        let offset = id.wrapping_sub(self.base) as usize;
        if offset < self.entries.len() || offset - self.entries.len() > max_gap {
            return false;
        }
        while self.entries.len() < offset {
            self.entries.push_back(None);
        }
        self.entries.push_back(Some(value));
        self.live += 1;
        true
    }

    fn offset(&self, id: u32) -> Option<usize> {
        let offset = id.wrapping_sub(self.base) as usize;
        (offset < self.entries.len()).then_some(offset)
    }

    pub(crate) fn get(&self, id: u32) -> Option<&T> {
        self.offset(id).and_then(|o| self.entries[o].as_ref())
    }

    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        let o = self.offset(id)?;
        self.entries[o].as_mut()
    }

    pub(crate) fn remove(&mut self, id: u32) -> Option<T> {
        let o = self.offset(id)?;
        let v = self.entries[o].take()?;
        self.live -= 1;
        while matches!(self.entries.front(), Some(None)) {
            self.entries.pop_front();
            self.base = self.base.wrapping_add(1);
        }
        Some(v)
    }

    /// The live ids within `first..=last` (serial order), visiting only the entries inside the range.
    pub(crate) fn ids_in(&self, first: u32, last: u32) -> Vec<u32> {
        if self.entries.is_empty() {
            return Vec::new();
        }
        let from_base = |id: u32| id.wrapping_sub(self.base) as i32;
        let start = from_base(first).max(0) as usize;
        let end = from_base(last);
        if end < 0 {
            return Vec::new();
        }
        let end = (end as usize).min(self.entries.len() - 1);
        (start..=end)
            .filter(|&i| self.entries[i].is_some())
            .map(|i| self.base.wrapping_add(i as u32))
            .collect()
    }

    /// Every live id, in order.
    pub(crate) fn ids(&self) -> Vec<u32> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_some())
            .map(|(i, _)| self.base.wrapping_add(i as u32))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_keys_go_stale_when_slots_are_reused() {
        let mut s = Slab::default();
        let a = s.insert("a");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_eq!(s.get(a), None);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.keys(), vec![b]);
    }

    #[test]
    fn seqmap_wraps_and_reclaims() {
        let mut m = SeqMap::default();
        assert!(m.insert(u32::MAX - 1, 'a', 0));
        assert!(m.insert(u32::MAX, 'b', 0));
        assert!(m.insert(0, 'c', 0));
        assert!(!m.insert(0, 'x', 0), "not behind the end");
        assert_eq!(m.ids_in(u32::MAX, 0), vec![u32::MAX, 0]);
        assert_eq!(m.remove(u32::MAX - 1), Some('a'));
        assert_eq!(m.get(0), Some(&'c'));
        assert!(m.insert(5, 'd', 4));
        assert!(!m.insert(100, 'e', 4), "gap too large");
        assert_eq!(m.len(), 3);
        assert_eq!(m.ids(), vec![u32::MAX, 0, 5]);
    }
}
