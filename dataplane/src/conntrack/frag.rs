//! The fragment table: (source, destination, protocol, fragment id) -> the verdict of
//! the datagram's first fragment, for a short time.
//!
//! Set-associative: a power-of-two number of sets of [`WAYS`] entries; a key lives in
//! the set its hash picks. An insertion takes the key's own entry, else an empty or
//! expired one, else overwrites the entry of the set that expires first (counted): the
//! table is soft state, bounded, and never refuses. Non-first fragments that find no
//! entry are dropped (`fragment_no_flow`): holding them until their first fragment
//! arrives is not implemented; senders retransmit.

use crate::policy::Verdict;

use super::key::{Hasher64, Key};

/// Entries per set.
pub(crate) const WAYS: usize = 4;

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Addresses, protocol and family as in a flow key (not normalised: fragments
    /// of one datagram all travel one way); the fragment id in `ports`.
    key: Key,
    expires: u32,
    verdict: Verdict,
    used: bool,
}

const EMPTY: Entry = Entry {
    key: Key::ZERO,
    expires: 0,
    verdict: Verdict::Allow,
    used: false,
};

/// What an insertion did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// Into a free, expired or own entry.
    Free,
    /// Over a live entry of another datagram.
    Overwrote,
}

#[derive(Debug)]
pub(crate) struct FragTable {
    entries: Box<[Entry]>,
    set_mask: usize,
    hasher: Hasher64,
}

impl FragTable {
    /// A table of at least `capacity` entries (rounded up to a power-of-two number of
    /// sets of [`WAYS`]).
    pub(crate) fn new(capacity: usize, hasher: Hasher64) -> FragTable {
        let sets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        FragTable {
            entries: vec![EMPTY; sets * WAYS].into_boxed_slice(),
            set_mask: sets - 1,
            hasher,
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.entries.len() * std::mem::size_of::<Entry>()
    }

    #[inline]
    fn set(&self, key: &Key) -> usize {
        (self.hasher.key(key) as usize & self.set_mask) * WAYS
    }

    /// The verdict recorded for `key`, if live at `now`.
    #[inline]
    pub(crate) fn get(&self, key: &Key, now: u32) -> Option<Verdict> {
        let base = self.set(key);
        self.entries
            .get(base..base + WAYS)?
            .iter()
            .find(|e| e.used && e.key == *key && now < e.expires)
            .map(|e| e.verdict)
    }

    /// Records `verdict` for `key` until `expires`.
    pub(crate) fn insert(&mut self, key: Key, verdict: Verdict, now: u32, expires: u32) -> Inserted {
        let base = self.set(&key);
        let Some(set) = self.entries.get_mut(base..base + WAYS) else {
            return Inserted::Free;
        };
        let new = Entry {
            key,
            expires,
            verdict,
            used: true,
        };
        let own = set.iter().position(|e| e.used && e.key == key);
        let free = own.or_else(|| set.iter().position(|e| !e.used || now >= e.expires));
        if let Some(e) = free.and_then(|i| set.get_mut(i)) {
            *e = new;
            return Inserted::Free;
        }
        if let Some(e) = set.iter_mut().min_by_key(|e| e.expires) {
            *e = new;
        }
        Inserted::Overwrote
    }
}
