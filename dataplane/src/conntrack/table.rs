//! The flow table: Robin Hood open addressing over a preallocated slot array.
//!
//! Layout: `flows[i]` is a 64-byte [`Flow`] (one cache line), `meta[i]` a `u16` beside
//! it in a separate dense array: 0 for an empty slot, else `tag << 8 | (distance + 1)`,
//! where the tag is 8 bits of the key's hash and the distance is how far the slot is
//! from the key's home slot. A probe reads `meta` (32 slots per cache line) and touches
//! a flow only when its tag matches. The Robin Hood invariant (an insertion takes the slot of
//! any flow closer to its home than the new one would be, so along a run distances
//! grow by at most one per slot) lets a miss stop as soon as it meets a slot closer to its home than the
//! probe is. Insertion shifts the run after the insertion point by one slot; removal
//! shifts the following run back (no tombstones, so churn never degrades the table).
//!
//! The slot count is the capacity plus one eighth (load at most 8/9); the home slot is
//! `hash * slots >> 64`, so the slot count need not be a power of two. Distances are
//! capped at [`MAX_DIST`]: an insertion that would exceed it reports the table full
//! (at load 8/9 with a seeded hash this does not happen in practice).
//!
//! Nothing here allocates after [`Table::new`], locks or panics: indices are reduced
//! modulo the slot count before use and slices are accessed with `get`.

use super::key::Key;
use super::state::State;

/// Largest probe distance a flow may have (its `meta` byte holds distance + 1).
pub(crate) const MAX_DIST: usize = 254;

/// One flow. 64 bytes: the key (44), then the state and the cached decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

const _: () = assert!(std::mem::size_of::<Flow>() <= 64);

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

/// An empty flow with key `key` (tests).
#[cfg(test)]
pub(crate) fn tests_flow(key: Key) -> Flow {
    Flow { key, ..EMPTY_FLOW }
}

/// Why a flow could not be inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full;

/// The slot array.
#[derive(Debug)]
pub(crate) struct Table {
    meta: Box<[u16]>,
    flows: Box<[Flow]>,
    len: usize,
    capacity: usize,
}

#[inline(always)]
fn dist_of(m: u16) -> usize {
    usize::from(m & 0xff).wrapping_sub(1)
}

impl Table {
    /// A table for `capacity` flows (at least 1), allocated and zeroed now.
    pub(crate) fn new(capacity: usize) -> Table {
        let capacity = capacity.max(1);
        let slots = capacity + capacity / 8 + 1;
        Table {
            meta: vec![0u16; slots].into_boxed_slice(),
            flows: vec![EMPTY_FLOW; slots].into_boxed_slice(),
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
        self.meta.len()
    }

    /// Bytes allocated for the slots.
    pub(crate) fn bytes(&self) -> usize {
        self.slots() * (std::mem::size_of::<Flow>() + std::mem::size_of::<u16>())
    }

    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.meta.len() as u128) >> 64) as usize
    }

    #[inline(always)]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.meta.len() {
            0
        } else {
            i + 1
        }
    }

    #[inline(always)]
    fn meta_at(&self, i: usize) -> u16 {
        self.meta.get(i).copied().unwrap_or(0)
    }

    /// The slot holding `key` (whose hash is `hash`), if any.
    #[inline]
    pub(crate) fn find(&self, key: &Key, hash: u64) -> Option<usize> {
        let tag = hash as u8;
        let mut i = self.home(hash);
        for dist in 0..=MAX_DIST {
            let m = self.meta_at(i);
            if m == 0 || dist_of(m) < dist {
                return None;
            }
            if (m >> 8) as u8 == tag && self.flows.get(i).is_some_and(|f| f.key == *key) {
                return Some(i);
            }
            i = self.next(i);
        }
        None
    }

    /// The flow in slot `i`, if occupied.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&Flow> {
        if self.meta_at(i) == 0 {
            return None;
        }
        self.flows.get(i)
    }

    /// The flow in slot `i`, mutably, if occupied. Its key must not be changed.
    #[inline]
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut Flow> {
        if self.meta_at(i) == 0 {
            return None;
        }
        self.flows.get_mut(i)
    }

    /// Inserts `flow`, whose key (hash `hash`) must not be in the table, and returns its
    /// slot. [`Full`] when the table holds `capacity` flows or the probe distance cap
    /// would be exceeded; nothing is changed then.
    pub(crate) fn insert(&mut self, flow: Flow, hash: u64) -> Result<usize, Full> {
        if self.len >= self.capacity {
            return Err(Full);
        }
        let tag = u16::from(hash as u8);
        // Insertion point: the first slot that is empty or closer to its home than we.
        let mut p = self.home(hash);
        let mut dist = 0usize;
        loop {
            let m = self.meta_at(p);
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
        while self.meta_at(e) != 0 {
            if dist_of(self.meta_at(e)) + 1 > MAX_DIST || steps >= self.meta.len() {
                return Err(Full);
            }
            e = self.next(e);
            steps += 1;
        }
        while e != p {
            let prev = if e == 0 { self.meta.len() - 1 } else { e - 1 };
            let m = self.meta_at(prev) + 1;
            let f = self.flows.get(prev).copied().unwrap_or(EMPTY_FLOW);
            if let (Some(dm), Some(df)) = (self.meta.get_mut(e), self.flows.get_mut(e)) {
                *dm = m;
                *df = f;
            }
            e = prev;
        }
        if let (Some(dm), Some(df)) = (self.meta.get_mut(p), self.flows.get_mut(p)) {
            *dm = (tag << 8) | (dist as u16 + 1);
            *df = flow;
        }
        self.len += 1;
        Ok(p)
    }

    /// Removes the flow in slot `i` (if occupied) by shifting the following run back.
    /// The flow that was in slot `i + 1` may now be in slot `i`.
    pub(crate) fn remove(&mut self, i: usize) {
        if self.meta_at(i) == 0 {
            return;
        }
        let mut j = i;
        loop {
            let k = self.next(j);
            let m = self.meta_at(k);
            if m == 0 || dist_of(m) == 0 {
                if let Some(dm) = self.meta.get_mut(j) {
                    *dm = 0;
                }
                break;
            }
            let f = self.flows.get(k).copied().unwrap_or(EMPTY_FLOW);
            if let (Some(dm), Some(df)) = (self.meta.get_mut(j), self.flows.get_mut(j)) {
                *dm = m - 1;
                *df = f;
            }
            j = k;
        }
        self.len -= 1;
    }

    /// Up to `n` slots starting at the home slot of `hash`, wrapping: the neighbourhood
    /// searched for a flow to evict.
    pub(crate) fn window(&self, hash: u64, n: usize) -> impl Iterator<Item = usize> + '_ {
        let slots = self.meta.len();
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

    /// Slot `i`'s index wrapped into range (for sweep cursors).
    #[inline]
    pub(crate) fn wrap(&self, i: usize) -> usize {
        if i >= self.meta.len() {
            0
        } else {
            i
        }
    }

    /// Checks the Robin Hood invariants (tests only): every stored flow is reachable
    /// from its home slot at its recorded distance, and `len` counts the flows.
    #[cfg(test)]
    pub(crate) fn check(&self, hash: impl Fn(&Key) -> u64) {
        let mut n = 0;
        for i in 0..self.slots() {
            let m = self.meta[i];
            if m == 0 {
                continue;
            }
            n += 1;
            let h = hash(&self.flows[i].key);
            assert_eq!((m >> 8) as u8, h as u8, "tag of slot {i}");
            let d = dist_of(m);
            assert_eq!((self.home(h) + d) % self.slots(), i, "distance of slot {i}");
            assert_eq!(self.find(&self.flows[i].key, h), Some(i));
        }
        assert_eq!(n, self.len);
    }
}
