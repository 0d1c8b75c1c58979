//! The flow table: Robin Hood open addressing over a preallocated slot array, pointing
//! into a preallocated pool of flows.
//!
//! Layout: `slots[i]` is a `u64`: 0 for an empty slot, else the flow's index in the pool
//! (bits 32-63), a 24-bit tag of the key's hash (bits 8-31) and the distance + 1 (bits
//! 0-7), the distance being how far the slot is from the key's home slot. `flows` is the
//! pool: one 64-byte [`Flow`] (one cache line) per flow of capacity; a flow never moves
//! while it is in the table, and the free entries form a list threaded through them.
//! A probe reads `slots` (8 per cache line) and touches a flow only when its tag matches
//! (a false match once in 16 million). The Robin Hood invariant (an insertion takes the
//! slot of any flow closer to its home than the new one would be, so along a run
//! distances grow by at most one per slot) lets a miss stop as soon as it meets a slot
//! closer to its home than the probe is. Insertion shifts the run of slots after the
//! insertion point by one; removal shifts the following run back (no tombstones, so
//! churn never degrades the table). Only the 8-byte slots move, never the flows: at the
//! table's top load a run is tens of slots long, and moving 64-byte flows along it
//! (the layout before) made an insertion cost several hundred nanoseconds.
//!
//! The slot count is the capacity plus one eighth (load at most 8/9); the home slot is
//! `hash * slots >> 64`, so the slot count need not be a power of two. Distances are
//! capped at [`MAX_DIST`]: an insertion that would exceed it reports the table full
//! (at load 8/9 with a seeded hash this does not happen in practice). Memory: 64 bytes
//! of pool and 9 of slots per flow of capacity, 73 in all.
//!
//! Nothing here allocates after [`Table::new`], locks or panics: indices are reduced
//! modulo the slot count before use and slices are accessed with `get`.

use super::key::Key;
use super::state::State;

/// Largest probe distance a flow may have (its slot's low byte holds distance + 1).
pub(crate) const MAX_DIST: usize = 254;

/// One flow. 64 bytes, aligned to 64 so that a flow is exactly one cache line (a lookup
/// touches one line, and a prefetch of it fetches all of it): the key (44), then the
/// state and the cached decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(align(64))]
pub(crate) struct Flow {
    pub(crate) key: Key,
    /// When the flow expires (seconds on the caller's clock).
    pub(crate) expires: u32,
    /// Low 32 bits of the version of the policy that admitted (or last re-checked) it.
    pub(crate) version: u32,
    /// The cached decision, packed (see `super::pack_decision`).
    pub(crate) rule: u32,
    pub(crate) src_seg: u16,
    pub(crate) dst_seg: u16,
    pub(crate) why: u8,
    pub(crate) state: State,
    /// [`super::key::ORIG_IS_LO`] and the FIN bits.
    pub(crate) flags: u8,
}

const _: () = assert!(std::mem::size_of::<Flow>() == 64);

const EMPTY_FLOW: Flow = Flow {
    key: Key::ZERO,
    expires: 0,
    version: 0,
    rule: 0,
    src_seg: 0,
    dst_seg: 0,
    why: 0,
    state: State::Unreplied,
    flags: 0,
};

/// Marks a free pool entry in its `key.tags` (a key's tags never have this bit); a free
/// entry's `expires` holds the index of the next free entry.
const FREE: u32 = 1 << 31;

/// The end of the free list.
const NIL: u32 = u32::MAX;

/// An empty flow with key `key` (tests).
#[cfg(test)]
pub(crate) fn tests_flow(key: Key) -> Flow {
    Flow { key, ..EMPTY_FLOW }
}

/// Why a flow could not be inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full;

/// The slot array and the flow pool.
#[derive(Debug)]
pub(crate) struct Table {
    slots: Box<[u64]>,
    flows: Box<[Flow]>,
    /// First free pool entry, or [`NIL`].
    free: u32,
    len: usize,
    capacity: usize,
}

/// The distance of the flow in an occupied slot.
#[inline(always)]
fn dist_of(m: u64) -> usize {
    ((m & 0xff) as usize).wrapping_sub(1)
}

#[inline(always)]
fn tag_of(hash: u64) -> u64 {
    (hash & 0xff_ffff) << 8
}

#[inline(always)]
fn same_tag(m: u64, hash: u64) -> bool {
    m & 0xffff_ff00 == tag_of(hash)
}

#[inline(always)]
fn index_of(m: u64) -> usize {
    (m >> 32) as usize
}

impl Table {
    /// A table for `capacity` flows (at least 1, at most 2^32 - 1), allocated and
    /// initialised now.
    pub(crate) fn new(capacity: usize) -> Table {
        let capacity = capacity.clamp(1, NIL as usize);
        let slots = capacity + capacity / 8 + 1;
        // Both arrays are read at random: on huge pages where the kernel allows, advised
        // before they are first written.
        let mut flows = Vec::with_capacity(capacity);
        crate::dpdk::advise_huge_pages(flows.spare_capacity_mut());
        flows.extend((0..capacity).map(|j| {
            let mut f = EMPTY_FLOW;
            f.key.tags = FREE;
            f.expires = if j + 1 == capacity { NIL } else { j as u32 + 1 };
            f
        }));
        let mut slot_array = Vec::with_capacity(slots);
        crate::dpdk::advise_huge_pages(slot_array.spare_capacity_mut());
        slot_array.resize(slots, 0u64);
        Table {
            slots: slot_array.into_boxed_slice(),
            flows: flows.into_boxed_slice(),
            free: 0,
            len: 0,
            capacity,
        }
    }

    /// Flows in the table.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Most flows the table holds.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of slots.
    #[inline]
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Bytes allocated for the slots and the pool.
    pub(crate) fn bytes(&self) -> usize {
        self.slots() * std::mem::size_of::<u64>() + self.flows.len() * std::mem::size_of::<Flow>()
    }

    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.slots.len() as u128) >> 64) as usize
    }

    #[inline(always)]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    #[inline(always)]
    fn slot_at(&self, i: usize) -> u64 {
        self.slots.get(i).copied().unwrap_or(0)
    }

    /// The slot holding `key` (whose hash is `hash`), if any.
    #[inline]
    pub(crate) fn find(&self, key: &Key, hash: u64) -> Option<usize> {
        let mut i = self.home(hash);
        for dist in 0..=MAX_DIST {
            let m = self.slot_at(i);
            if m == 0 || dist_of(m) < dist {
                return None;
            }
            if same_tag(m, hash) && self.flows.get(index_of(m)).is_some_and(|f| f.key == *key) {
                return Some(i);
            }
            i = self.next(i);
        }
        None
    }

    /// First stage of a batched lookup: asks for the cache line of `slots` holding the
    /// home slot of `hash` (a hint; nothing is read).
    #[inline(always)]
    pub(crate) fn prefetch_home(&self, hash: u64) {
        crate::dpdk::prefetch_index(&self.slots, self.home(hash));
    }

    /// Second stage, once the home slot's line has had time to arrive: asks for
    /// the flow in the first slot of the probe whose tag matches `hash` (where
    /// [`Table::find`] will compare keys first), or nothing if the probe ends without
    /// one. Reads `slots` only; a hint, so a stale answer costs nothing but time.
    #[inline(always)]
    pub(crate) fn prefetch_flow(&self, hash: u64) {
        let mut i = self.home(hash);
        for dist in 0..=MAX_DIST {
            let m = self.slot_at(i);
            if m == 0 || dist_of(m) < dist {
                return;
            }
            if same_tag(m, hash) {
                crate::dpdk::prefetch_index(&self.flows, index_of(m));
                return;
            }
            i = self.next(i);
        }
    }

    /// The flow in slot `i`, if occupied.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&Flow> {
        match self.slot_at(i) {
            0 => None,
            m => self.flows.get(index_of(m)),
        }
    }

    /// The flow in slot `i`, mutably, if occupied. Its key must not be changed.
    #[inline]
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut Flow> {
        match self.slot_at(i) {
            0 => None,
            m => self.flows.get_mut(index_of(m)),
        }
    }

    /// Inserts `flow`, whose key (hash `hash`) must not be in the table, and returns its
    /// slot. [`Full`] when the table holds `capacity` flows or the probe distance cap
    /// would be exceeded; nothing is changed then.
    pub(crate) fn insert(&mut self, flow: Flow, hash: u64) -> Result<usize, Full> {
        if self.len >= self.capacity || self.free == NIL {
            return Err(Full);
        }
        // Insertion point: the first slot that is empty or closer to its home than we.
        let mut p = self.home(hash);
        let mut dist = 0usize;
        loop {
            let m = self.slot_at(p);
            if m == 0 || dist_of(m) < dist {
                break;
            }
            if dist == MAX_DIST {
                return Err(Full);
            }
            p = self.next(p);
            dist += 1;
        }
        // The run from p to the first empty slot moves one slot on: check first.
        let mut e = p;
        let mut steps = 0;
        while self.slot_at(e) != 0 {
            if dist_of(self.slot_at(e)) + 1 > MAX_DIST || steps >= self.slots.len() {
                return Err(Full);
            }
            e = self.next(e);
            steps += 1;
        }
        // A pool entry for the flow.
        let j = self.free;
        let Some(entry) = self.flows.get_mut(j as usize) else {
            return Err(Full);
        };
        self.free = entry.expires;
        *entry = flow;
        entry.key.tags &= !FREE;
        while e != p {
            let prev = if e == 0 { self.slots.len() - 1 } else { e - 1 };
            let m = self.slot_at(prev) + 1;
            if let Some(d) = self.slots.get_mut(e) {
                *d = m;
            }
            e = prev;
        }
        if let Some(d) = self.slots.get_mut(p) {
            *d = (u64::from(j) << 32) | tag_of(hash) | (dist as u64 + 1);
        }
        self.len += 1;
        Ok(p)
    }

    /// Removes the flow in slot `i` (if occupied) by shifting the following run back.
    /// The flow that was in slot `i + 1` may now be in slot `i`.
    pub(crate) fn remove(&mut self, i: usize) {
        let m = self.slot_at(i);
        if m == 0 {
            return;
        }
        let j = index_of(m);
        if let Some(f) = self.flows.get_mut(j) {
            f.key.tags = FREE;
            f.expires = self.free;
            self.free = j as u32;
        }
        let mut i = i;
        loop {
            let k = self.next(i);
            let m = self.slot_at(k);
            if m == 0 || dist_of(m) == 0 {
                if let Some(d) = self.slots.get_mut(i) {
                    *d = 0;
                }
                break;
            }
            if let Some(d) = self.slots.get_mut(i) {
                *d = m - 1;
            }
            i = k;
        }
        self.len -= 1;
    }

    /// The flow in pool entry `j`, if that entry holds one (for sweeping the pool in
    /// memory order: [`Table::entries`] entries).
    #[inline]
    pub(crate) fn entry(&self, j: usize) -> Option<&Flow> {
        self.flows.get(j).filter(|f| f.key.tags & FREE == 0)
    }

    /// Number of pool entries.
    #[inline]
    pub(crate) fn entries(&self) -> usize {
        self.flows.len()
    }

    /// Removes the flow in pool entry `j`, whose key hashes to `hash`; false when no slot
    /// points at it (the entry is free, or the table lost track of it).
    pub(crate) fn remove_entry(&mut self, j: usize, hash: u64) -> bool {
        if self.entry(j).is_none() {
            return false;
        }
        let mut i = self.home(hash);
        for dist in 0..=MAX_DIST {
            let m = self.slot_at(i);
            if m == 0 || dist_of(m) < dist {
                return false;
            }
            if index_of(m) == j {
                self.remove(i);
                return true;
            }
            i = self.next(i);
        }
        false
    }

    /// Up to `n` slots starting at the home slot of `hash`, wrapping: the neighbourhood
    /// searched for a flow to evict.
    pub(crate) fn window(&self, hash: u64, n: usize) -> impl Iterator<Item = usize> + '_ {
        let slots = self.slots.len();
        let home = self.home(hash);
        (0..n.min(slots)).map(move |d| {
            let i = home + d;
            if i >= slots {
                i - slots
            } else {
                i
            }
        })
    }

    /// Slot `i`'s index wrapped into range (for sweep cursors over slots).
    #[cfg(test)]
    #[inline]
    pub(crate) fn wrap(&self, i: usize) -> usize {
        if i >= self.slots.len() {
            0
        } else {
            i
        }
    }

    /// Checks the Robin Hood invariants (tests only): every stored flow is reachable
    /// from its home slot at its recorded distance, each slot points at its own live
    /// pool entry, the free list holds the rest, and `len` counts the flows.
    #[cfg(test)]
    pub(crate) fn check(&self, hash: impl Fn(&Key) -> u64) {
        let mut n = 0;
        let mut used = vec![false; self.flows.len()];
        for i in 0..self.slots() {
            let m = self.slots[i];
            if m == 0 {
                continue;
            }
            n += 1;
            let j = index_of(m);
            assert!(!used[j], "pool entry {j} in two slots");
            used[j] = true;
            let f = &self.flows[j];
            assert_eq!(f.key.tags & FREE, 0, "slot {i} points at a free entry");
            let h = hash(&f.key);
            assert!(same_tag(m, h), "tag of slot {i}");
            let d = dist_of(m);
            assert_eq!((self.home(h) + d) % self.slots(), i, "distance of slot {i}");
            assert_eq!(self.find(&f.key, h), Some(i));
        }
        assert_eq!(n, self.len);
        let mut free = 0;
        let mut j = self.free;
        while j != NIL {
            assert!(!used[j as usize], "free entry {j} in use");
            assert_ne!(self.flows[j as usize].key.tags & FREE, 0);
            used[j as usize] = true;
            free += 1;
            j = self.flows[j as usize].expires;
        }
        assert_eq!(n + free, self.flows.len(), "pool entries lost");
    }
}
