//! Small containers the engine is built from: a generational slab for endpoint handles and a sequence map for
//! deliveries keyed by serial numbers.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// A map from a channel or handle number to an endpoint, hashed with [`IdHasher`] instead of SipHash: it is
/// looked up for every frame.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A multiplicative hash for the small integer keys of [`IdMap`]: one multiply per key instead of SipHash's
/// rounds. It is not collision resistant, which is safe here because the engine bounds every such map by the
/// channel-max and handle-max it advertises (255 by default): a peer choosing numbers that collide can make one
/// lookup cost at most that many comparisons.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl IdHasher {
    /// An odd constant with well-mixed bits (2^64 divided by the golden ratio): multiplying by it spreads
    /// consecutive numbers over the high bits hashbrown uses.
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn add(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(Self::K);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

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
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn insert(&mut self, value: T) -> Key {
        self.len += 1;
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
        self.len -= 1;
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

/// Entries keyed by 32-bit serial numbers (delivery-ids) that only grow, with memory proportional to the
/// entries held, however far apart their ids are [AMQP 1.0 §2.8.10]. The engine keeps a session's unsettled
/// deliveries in one; an application can keep what it tracks per delivery of a link in one too, where
/// deliveries are mostly settled in the order they were sent (cheaper than a hash map: no hashing, and the
/// entries sit in sending order).
///
/// Entries sit in id order in a deque. While ids are consecutive an entry is found by its distance from the
/// front in O(1); otherwise by binary search. Removed entries leave a hole until the front is reclaimed or the
/// holes outnumber the live entries, when they are compacted away (amortised O(1) per removal). Live ids span
/// less than 2^31, so serial order is well defined between any two of them.
#[derive(Debug)]
pub struct SeqMap<T> {
    entries: VecDeque<(u32, Option<T>)>,
    live: usize,
}

impl<T> Default for SeqMap<T> {
    fn default() -> Self {
        SeqMap {
            entries: VecDeque::new(),
            live: 0,
        }
    }
}

/// How many holes a [`SeqMap`] keeps beyond its live entries before it compacts.
const SEQMAP_SLACK: usize = 32;

impl<T> SeqMap<T> {
    /// The number of live entries.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The distance of `id` from the oldest entry, in serial order.
    fn distance(&self, id: u32) -> Option<u32> {
        self.entries
            .front()
            .map(|&(front, _)| id.wrapping_sub(front))
    }

    /// Whether `id` may be inserted: it is ahead of every id held, and less than 2^31 ahead of the oldest.
    fn can_insert(&self, id: u32) -> bool {
        match (self.entries.back(), self.distance(id)) {
            (Some(&(back, _)), Some(d)) => d < 1 << 31 && d > back.wrapping_sub(self.entries[0].0),
            _ => true,
        }
    }

    /// Inserts at `id`, if `id` is ahead of every id held and less than 2^31 ahead of the oldest; otherwise
    /// hands `value` back.
    pub fn insert(&mut self, id: u32, value: T) -> Result<(), T> {
        if !self.can_insert(id) {
            return Err(value);
        }
        self.entries.push_back((id, Some(value)));
        self.live += 1;
        Ok(())
    }

    /// The index of the first entry at or after distance `d` from the front.
    fn lower_bound(&self, d: u32) -> usize {
        let front = self.entries.front().map_or(0, |e| e.0);
        self.entries
            .partition_point(|&(id, _)| id.wrapping_sub(front) < d)
    }

    fn index(&self, id: u32) -> Option<usize> {
        let d = self.distance(id)?;
        if d >= 1 << 31 {
            return None;
        }
        // Consecutive ids: the entry sits at its distance.
        if let Some((at, _)) = self.entries.get(d as usize) {
            if *at == id {
                return Some(d as usize);
            }
        }
        let i = self.lower_bound(d);
        (self.entries.get(i).map(|e| e.0) == Some(id)).then_some(i)
    }

    /// The entry at `id`.
    pub fn get(&self, id: u32) -> Option<&T> {
        self.index(id).and_then(|i| self.entries[i].1.as_ref())
    }

    /// The entry at `id`, to change.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        let i = self.index(id)?;
        self.entries[i].1.as_mut()
    }

    /// Removes and returns the entry at `id`.
    pub fn remove(&mut self, id: u32) -> Option<T> {
        let v = if self.entries.front().is_some_and(|e| e.0 == id) {
            // The oldest: most deliveries are settled in the order they were sent.
            self.entries.pop_front()?.1?
        } else {
            let i = self.index(id)?;
            self.entries[i].1.take()?
        };
        self.live -= 1;
        while matches!(self.entries.front(), Some((_, None))) {
            self.entries.pop_front();
        }
        if self.entries.len() > 2 * self.live + SEQMAP_SLACK {
            self.entries.retain(|e| e.1.is_some());
        }
        Some(v)
    }

    /// The live ids within `first..=last` (serial order). Costs O(log n) plus the entries inside the range,
    /// never the number of ids the range spans.
    pub(crate) fn ids_in(&self, first: u32, last: u32) -> Vec<u32> {
        let Some(front) = self.entries.front().map(|e| e.0) else {
            return Vec::new();
        };
        // Distances as signed serial offsets: a range may start before the oldest entry.
        let from = first.wrapping_sub(front) as i32;
        let to = last.wrapping_sub(front) as i32;
        if to < from || to < 0 {
            return Vec::new();
        }
        let start = self.lower_bound(from.max(0) as u32);
        self.entries
            .range(start..)
            .take_while(|(id, _)| id.wrapping_sub(front) as i32 <= to)
            .filter(|(_, v)| v.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every entry, in id order.
    pub fn into_values(self) -> impl Iterator<Item = T> {
        self.entries.into_iter().filter_map(|(_, v)| v)
    }

    /// Removes every entry for which `keep` is false.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut removed = 0;
        for (_, v) in self.entries.iter_mut() {
            if v.as_ref().is_some_and(|v| !keep(v)) {
                *v = None;
                removed += 1;
            }
        }
        self.live -= removed;
        self.entries.retain(|e| e.1.is_some());
    }
}

/// Allocates the lowest free number in `0..=max` (channels, handles) in O(log n), with memory proportional to
/// the numbers in use.
#[derive(Debug, Default)]
pub(crate) struct NumberPool {
    /// Every number below this has been handed out at least once.
    next: u64,
    /// Numbers below `next` given back.
    free: BinaryHeap<Reverse<u32>>,
}

impl NumberPool {
    /// The lowest free number not above `max`, or `None` if all are in use.
    pub(crate) fn allocate(&mut self, max: u32) -> Option<u32> {
        if let Some(&Reverse(n)) = self.free.peek() {
            if n <= max {
                self.free.pop();
                return Some(n);
            }
        }
        if self.next > u64::from(max) {
            return None;
        }
        let n = self.next as u32;
        self.next += 1;
        Some(n)
    }

    /// Gives `n` back.
    pub(crate) fn release(&mut self, n: u32) {
        if u64::from(n) < self.next {
            self.free.push(Reverse(n));
        }
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
        assert!(m.insert(u32::MAX - 1, 'a').is_ok());
        assert!(m.insert(u32::MAX, 'b').is_ok());
        assert!(m.insert(0, 'c').is_ok());
        assert!(m.insert(0, 'x').is_err(), "not behind the end");
        assert_eq!(m.ids_in(u32::MAX, 0), vec![u32::MAX, 0]);
        assert_eq!(m.remove(u32::MAX - 1), Some('a'));
        assert_eq!(m.get(0), Some(&'c'));
        assert!(m.insert(5, 'd').is_ok());
        assert!(m.insert(100_000, 'e').is_ok(), "gaps cost nothing");
        assert_eq!(m.len(), 4);
        assert_eq!(m.ids_in(0, 1 << 20), vec![0, 5, 100_000]);
        assert_eq!(m.get(100_000), Some(&'e'));
        assert_eq!(m.get(6), None);
    }

    #[test]
    fn seqmap_memory_follows_the_entries_held() {
        let mut m = SeqMap::default();
        for i in 0..10_000u32 {
            assert!(m.insert(i.wrapping_mul(1 << 16), i).is_ok());
        }
        assert!(m.entries.len() <= 10_000, "gapped ids are not padded");
        // One held entry while many pass it: the holes are compacted away.
        let mut m = SeqMap::default();
        assert!(m.insert(0, 0u32).is_ok());
        for i in 1..100_000u32 {
            assert!(m.insert(i, i).is_ok());
            assert_eq!(m.remove(i), Some(i));
        }
        assert!(m.entries.len() <= 2 + SEQMAP_SLACK, "{}", m.entries.len());
        assert_eq!(m.get(0), Some(&0));
        assert_eq!(m.ids_in(0, u32::MAX / 2), vec![0]);
    }

    #[test]
    fn seqmap_refuses_a_span_of_2_pow_31() {
        let mut m = SeqMap::default();
        assert!(m.insert(10, ()).is_ok());
        assert!(m.insert(10 + (1 << 30), ()).is_ok());
        assert!(
            m.insert(10 + (1 << 31), ()).is_err(),
            "serial order would be undefined"
        );
        assert!(
            m.ids_in(11, 10).is_empty(),
            "an inverted range names nothing"
        );
    }

    #[test]
    fn seqmap_retain_drops_entries() {
        let mut m = SeqMap::default();
        for i in 0..10u32 {
            assert!(m.insert(i * 3, i % 2).is_ok());
        }
        m.retain(|&v| v == 0);
        assert_eq!(m.len(), 5);
        assert_eq!(m.ids_in(0, 100), vec![0, 6, 12, 18, 24]);
    }

    #[test]
    fn number_pool_hands_out_the_lowest_free_number() {
        let mut p = NumberPool::default();
        assert_eq!(p.allocate(2), Some(0));
        assert_eq!(p.allocate(2), Some(1));
        assert_eq!(p.allocate(2), Some(2));
        assert_eq!(p.allocate(2), None);
        p.release(1);
        p.release(0);
        assert_eq!(p.allocate(2), Some(0));
        assert_eq!(p.allocate(2), Some(1));
        assert_eq!(p.allocate(u32::MAX), Some(3));
    }
}
