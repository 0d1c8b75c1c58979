//! Longest-prefix match over a static prefix set: sorted disjoint intervals searched
//! with a static B+-tree (an "S+-tree"), built once, read-only after.
//!
//! The prefixes of a table never change after compile, so they are flattened into the
//! sorted, disjoint intervals `[start, next start)` of the address space, each mapped to
//! the [`Entry`] of its most specific covering prefix (or [`Entry::NONE`]); neighbours with
//! the same entry are merged. That is exact longest-prefix-match semantics: the lookup
//! only has to find the interval that holds an address.
//!
//! The interval boundaries are searched with a static search tree of 64-byte-aligned
//! nodes of [`KEYS`] = 15 sorted keys and one slot of padding (one cache line of IPv4
//! keys; four lines of IPv6 `u128` keys). Each level narrows the search to one node of the
//! level below (15 separators, 16 children), and the position inside a node is found by
//! six branch-free compares in two dependent steps (see `rank`). No pointer is stored:
//! each level is stored whole, in order, and the child of node `b` at position `r` is
//! node `15 b + r` of the next level; at the last level, that number is the interval.
//!
//! Keys are `last address of the previous interval` (a boundary minus one), so "keys
//! below the address" counts the boundaries at or below it, and padding a node with the
//! maximal key never counts: no key needs a sentinel, and the maximal address works.
//!
//! Tables of three levels or more also get a short cut past the upper levels where it
//! fits: an array indexed by the top 8 to 16 bits of the address gives a window of at most
//! 15 separators of the leaf nodes, so every lookup is two node searches (see `Direct`).
//!
//! Sizes for the synthetic benchmark policy (`synth::large_policy`: 9,000 IPv4 and
//! 1,000 IPv6 prefixes): IPv4 14,611 intervals, four levels and a 15-bit short cut,
//! 190 KiB with the entries; IPv6 1,908 intervals, 52 KiB. The whole table sits in L2.
//! The multibit trie this replaced took 18 MiB for the same prefixes, and an IPv6
//! lookup walked up to 14 of its nodes.
//!
//! An address family's table uses keys of its width ([`Key`]: `u32` for IPv4, `u128` for
//! IPv6). Because the prefix length is stored in the entry, two tables can be looked up
//! and the longer match kept: that is how VLAN views are layered over the base view (see
//! [`Entry::longer`]).

use std::fmt;

const VALID: u32 = 1 << 24;

/// The result of a lookup: a segment id with the length of the prefix that matched, or
/// nothing. Small and `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry(u32);

impl Entry {
    /// No prefix matched.
    pub const NONE: Entry = Entry(0);

    fn leaf(value: u16, len: u8) -> Entry {
        Entry(VALID | (u32::from(len) << 16) | u32::from(value))
    }

    /// The value (segment id) of the matching prefix, if any.
    #[inline(always)]
    pub fn value(self) -> Option<u16> {
        if self.0 & VALID != 0 {
            // Truncation intended: the value lives in the low 16 bits.
            Some(self.0 as u16)
        } else {
            None
        }
    }

    /// Length of the matching prefix, if any.
    #[inline(always)]
    pub fn prefix_len(self) -> Option<u8> {
        if self.0 & VALID != 0 {
            Some((self.0 >> 16) as u8)
        } else {
            None
        }
    }

    /// The longer of two matches; a match beats no match. Two matches of the same length
    /// for the same address mean the same prefix, which compile refuses across tables of
    /// one view, so the tie-break (`self`) does not matter.
    #[inline(always)]
    pub fn longer(self, other: Entry) -> Entry {
        // VALID sits just above the length, so comparing bits 16.. orders "no match"
        // below every match and matches by length.
        if (other.0 >> 16) > (self.0 >> 16) {
            other
        } else {
            self
        }
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.value(), self.prefix_len()) {
            (Some(v), Some(l)) => write!(f, "Entry({v}/{l})"),
            _ => f.write_str("Entry(none)"),
        }
    }
}

/// Keys per node. With one slot of padding, 15 IPv4 keys fill one 64-byte cache line,
/// and a node has 16 children (see `rank`).
pub const KEYS: usize = 15;
/// Slots per node.
const SLOTS: usize = KEYS + 1;
/// Deepest tree: 16^8 boundaries is far beyond any table that fits in memory.
const MAX_DEPTH: usize = 8;

/// A key type: an address of one family as an unsigned integer.
pub trait Key: Copy + Ord + fmt::Debug + Send + Sync + 'static {
    /// Width in bits.
    const BITS: u32;
    /// The largest key (the padding of a node: never below an address).
    const MAX: Self;
    /// The key from the low `BITS` bits of `v` (truncation intended).
    fn from_u128(v: u128) -> Self;
    /// The key as an integer.
    fn to_u128(self) -> u128;
    /// The key shifted right by `shift` (less than `BITS`), as an index.
    fn index(self, shift: u32) -> usize;
}

impl Key for u32 {
    const BITS: u32 = 32;
    const MAX: u32 = u32::MAX;
    #[inline(always)]
    fn from_u128(v: u128) -> u32 {
        v as u32
    }
    #[inline(always)]
    fn to_u128(self) -> u128 {
        u128::from(self)
    }
    #[inline(always)]
    fn index(self, shift: u32) -> usize {
        // Native width (a u128 shift by a variable costs several instructions); shifts in
        // use are below 32, so the wrapping shift is the plain one.
        self.wrapping_shr(shift) as usize
    }
}

impl Key for u128 {
    const BITS: u32 = 128;
    const MAX: u128 = u128::MAX;
    #[inline(always)]
    fn from_u128(v: u128) -> u128 {
        v
    }
    #[inline(always)]
    fn to_u128(self) -> u128 {
        self
    }
    #[inline(always)]
    fn index(self, shift: u32) -> usize {
        // Shifts in use are below 128 and leave at most DIRECT_MAX_BITS bits: fits.
        self.wrapping_shr(shift) as usize
    }
}

/// One node of the search tree: [`KEYS`] sorted keys, padded with [`Key::MAX`]; the last
/// slot is padding too.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Node<K>([K; SLOTS]);

/// How many keys of `node` are below `x` (0..=15), branch-free, in two dependent steps
/// of three independent compares: keys 3, 7 and 11 pick the group of four keys where
/// the count ends, and the first three keys of that group finish it (the fourth of a
/// group below the last is known to be at or above `x`). Six compares and adds (for
/// `u32` a compare with a memory operand and an add-with-carry each), and half the
/// latency of a four-step binary search. The index is masked, so no bounds check.
/// Counting all 15 keys with vector compares needs `popcnt`, which the x86-64 baseline
/// lacks, and `u128` keys have no vector compare at all.
#[inline(always)]
fn rank<K: Key>(node: &[K; SLOTS], x: K) -> usize {
    let below = |i: usize| usize::from(node[i & (SLOTS - 1)] < x);
    let group = 4 * (below(3) + below(7) + below(11));
    group + below(group) + below(group + 1) + below(group + 2)
}

/// A read-only longest-prefix-match table over addresses of one family (see the module
/// documentation).
#[derive(Clone)]
pub struct Table<K: Key> {
    /// Levels of the tree in use (0: a single interval, no keys).
    depth: usize,
    /// First node of each level in `nodes`, the root level first.
    starts: [u32; MAX_DEPTH],
    /// All levels, the root first; the last level holds every key.
    nodes: Box<[Node<K>]>,
    /// The entry of interval `i` (the one after the `i`th boundary): one more than the
    /// keys.
    values: Box<[Entry]>,
    /// A short cut past the upper levels, where one fits (see [`Direct`]).
    direct: Option<Direct<K>>,
}

/// Most bits a [`Direct`] index takes from the top of an address (2^16 entries of two
/// bytes: 128 KiB).
const DIRECT_MAX_BITS: u32 = 16;

/// A short cut past the upper levels of a tree of three levels or more: an array indexed
/// by the top `bits` bits of an address gives where its rank among the separators of the
/// second-to-last level (every [`KEYS`]th key: the leaf node numbers) lies, within a
/// window of at most 15. One search in that window gives the leaf node, a second one in
/// the leaf the interval: two searches instead of one per level. Built only when some
/// `bits` up to [`DIRECT_MAX_BITS`] keeps every window within 15 separators.
#[derive(Clone)]
struct Direct<K> {
    /// `K::BITS - bits`: the shift that takes the index out of a key.
    shift: u32,
    /// Per top-bits value `h`: the number of separators below `h << shift`.
    index: Box<[u16]>,
    /// The separators (the first key of each leaf node but the first), sorted, then
    /// [`SLOTS`] times [`Key::MAX`] so that every window is a whole array.
    seps: Box<[K]>,
}

impl<K: Key> Direct<K> {
    /// The index for the leaf level `leaf` (sorted keys), if some width fits.
    fn build(leaf: &[K]) -> Option<Direct<K>> {
        let seps: Vec<K> = leaf.iter().copied().step_by(KEYS).skip(1).collect();
        if seps.len() >= usize::from(u16::MAX) {
            return None;
        }
        (8..=DIRECT_MAX_BITS.min(K::BITS)).find_map(|bits| {
            let shift = K::BITS - bits;
            // index[h] = separators below h << shift, by one sweep.
            let mut index = Vec::with_capacity((1 << bits) + 1);
            let mut below = 0usize;
            for h in 0..(1u128 << bits) {
                let bound = h << shift;
                while seps.get(below).is_some_and(|s| s.to_u128() < bound) {
                    below += 1;
                }
                // Below u16::MAX: checked above.
                index.push(below as u16);
            }
            index.push(seps.len() as u16);
            let fits = index.windows(2).all(|w| usize::from(w[1] - w[0]) <= KEYS);
            index.pop();
            fits.then(|| {
                let mut padded = seps.clone();
                padded.extend([K::MAX; SLOTS]);
                Direct {
                    shift,
                    index: index.into_boxed_slice(),
                    seps: padded.into_boxed_slice(),
                }
            })
        })
    }

    /// The leaf node of `x`: its rank among the separators.
    #[inline(always)]
    fn leaf(&self, x: K) -> usize {
        let h = x.index(self.shift);
        let lo = usize::from(self.index.get(h).copied().unwrap_or(0));
        let window: Option<&[K; SLOTS]> =
            self.seps.get(lo..lo + SLOTS).and_then(|w| w.try_into().ok());
        lo + window.map_or(0, |w| rank(w, x))
    }

    fn heap_bytes(&self) -> usize {
        self.index.len() * 2 + self.seps.len() * std::mem::size_of::<K>()
    }
}

/// A [`Table`] of IPv4 addresses.
pub type Table4 = Table<u32>;
/// A [`Table`] of IPv6 addresses.
pub type Table6 = Table<u128>;

impl<K: Key> fmt::Debug for Table<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("bits", &K::BITS)
            .field("intervals", &self.values.len())
            .field("depth", &self.depth)
            .field("nodes", &self.nodes.len())
            .field("direct_bits", &self.direct_bits())
            .field("bytes", &self.heap_bytes())
            .finish()
    }
}

impl<K: Key> Table<K> {
    /// Builds a table from `(left-aligned key, prefix length, value)` triples, in any
    /// order: the address in the top `K::BITS` bits of the key, as [`key_v4`] and
    /// [`key_v6`] make them. Host bits are ignored; lengths beyond the width count as the
    /// width. For two identical prefixes the later in the list wins (callers refuse
    /// duplicates before building).
    pub fn build(prefixes: &[(u128, u8, u16)]) -> Table<K> {
        Table::from_intervals(&intervals(K::BITS, prefixes))
    }

    /// The table of sorted intervals `(start, entry)`; the first starts at 0.
    fn from_intervals(iv: &[(u128, Entry)]) -> Table<K> {
        // The key of each boundary after the first: the last address before it.
        let keys: Vec<K> = iv
            .iter()
            .skip(1)
            .map(|&(start, _)| K::from_u128(start.wrapping_sub(1)))
            .collect();
        let values: Box<[Entry]> = if iv.is_empty() {
            Box::new([Entry::NONE])
        } else {
            iv.iter().map(|&(_, e)| e).collect()
        };
        // Levels bottom up: the keys, then the first key of each node of the level below
        // but the first node's, until one node holds a level.
        let mut levels: Vec<Vec<K>> = Vec::new();
        let mut cur = keys;
        while !cur.is_empty() && levels.len() < MAX_DEPTH {
            let up: Vec<K> = cur.iter().copied().step_by(KEYS).skip(1).collect();
            let single = cur.len() <= KEYS;
            levels.push(cur);
            if single {
                break;
            }
            cur = up;
        }
        let direct = match levels.first() {
            Some(leaf) if levels.len() >= 3 => Direct::build(leaf),
            _ => None,
        };
        levels.reverse();
        let mut starts = [0u32; MAX_DEPTH];
        let mut nodes: Vec<Node<K>> = Vec::new();
        for (level, keys) in levels.iter().enumerate() {
            if let Some(s) = starts.get_mut(level) {
                // Node counts are far below 2^32 for any table that fits in memory.
                *s = nodes.len() as u32;
            }
            for chunk in keys.chunks(KEYS) {
                let mut n = [K::MAX; SLOTS];
                n.iter_mut().zip(chunk).for_each(|(d, &k)| *d = k);
                nodes.push(Node(n));
            }
        }
        Table {
            depth: levels.len(),
            starts,
            nodes: nodes.into_boxed_slice(),
            values,
            direct,
        }
    }

    /// The longest prefix that holds `addr`. Never panics; a corrupt table (impossible
    /// by construction) reads as "no match".
    ///
    /// With a direct index (`Direct`): the window of the address's top bits, then its leaf
    /// node. Without: one node per level, the root first, then at each level the node
    /// numbered by the rank found so far. Every lookup in one table takes the same path,
    /// so its branches are predicted; the walk is unrolled for the usual depths.
    #[inline(always)]
    pub fn lookup(&self, x: K) -> Entry {
        let r = if let Some(d) = &self.direct {
            let leaf = d.leaf(x);
            let start = self.starts.get(self.depth.wrapping_sub(1)).copied().unwrap_or(0);
            let node = self.nodes.get(start as usize + leaf);
            leaf * KEYS + node.map_or(0, |n| rank(&n.0, x))
        } else {
            self.walk_all(x)
        };
        self.values.get(r).copied().unwrap_or(Entry::NONE)
    }

    /// The interval of `x` by the tree alone (see [`Table::lookup`]).
    #[inline(always)]
    fn walk_all(&self, x: K) -> usize {
        match self.depth {
            0 => 0,
            1 => self.walk::<1>(x),
            2 => self.walk::<2>(x),
            3 => self.walk::<3>(x),
            4 => self.walk::<4>(x),
            5 => self.walk::<5>(x),
            _ => self.walk::<MAX_DEPTH>(x),
        }
    }

    /// The interval of `x`: the rank of `x` among all keys, `D` levels down.
    #[inline(always)]
    fn walk<const D: usize>(&self, x: K) -> usize {
        let mut r = 0usize;
        for (level, &start) in self.starts.iter().enumerate().take(D) {
            if level >= self.depth {
                break;
            }
            let node = self.nodes.get(start as usize + r);
            r = r * KEYS + node.map_or(0, |n| rank(&n.0, x));
        }
        r
    }

    /// Number of intervals (after merging neighbours with the same entry).
    pub fn intervals(&self) -> usize {
        self.values.len()
    }

    /// Levels of the search tree.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Heap bytes held by the table.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.len() * std::mem::size_of::<Node<K>>()
            + self.values.len() * std::mem::size_of::<Entry>()
            + self.direct.as_ref().map_or(0, Direct::heap_bytes)
    }

    /// Bits of the direct index past the upper levels (0: none).
    pub fn direct_bits(&self) -> u32 {
        self.direct.as_ref().map_or(0, |d| K::BITS - d.shift)
    }
}

/// The sorted disjoint intervals `(start, entry)` of the `width`-bit address space
/// (starts right-aligned), each with the entry of its most specific prefix, neighbours
/// with the same entry merged; the first starts at 0.
fn intervals(width: u32, prefixes: &[(u128, u8, u16)]) -> Vec<(u128, Entry)> {
    let width = width.clamp(1, 128);
    let top = u128::MAX >> (128 - width);
    // (start, last address, entry), right-aligned.
    let mut ps: Vec<(u128, u128, Entry)> = prefixes
        .iter()
        .map(|&(key, len, value)| {
            let len = u32::from(len).min(width);
            let host = top.checked_shr(len).unwrap_or(0);
            let start = (key >> (128 - width)) & !host;
            // At most 128: fits.
            (start, start | host, Entry::leaf(value, len as u8))
        })
        .collect();
    // By start, the longest range first: a prefix holds the longer prefixes that start
    // where it does. Stable, so of two identical prefixes the later one is pushed last
    // and wins.
    ps.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut bounds: Vec<u128> = Vec::with_capacity(ps.len() * 2 + 1);
    bounds.push(0);
    for &(start, last, _) in &ps {
        bounds.push(start);
        if last < top {
            bounds.push(last + 1);
        }
    }
    bounds.sort_unstable();
    bounds.dedup();

    // Sweep the boundaries with the stack of the prefixes that hold the current point;
    // prefixes nest, so the innermost (longest) is on top and ends first.
    let mut out: Vec<(u128, Entry)> = Vec::with_capacity(bounds.len());
    let mut stack: Vec<(u128, Entry)> = Vec::new();
    let mut next = ps.iter().peekable();
    for &b in &bounds {
        while stack.last().is_some_and(|&(last, _)| last < b) {
            stack.pop();
        }
        while let Some(&(_, last, e)) = next.next_if(|p| p.0 <= b) {
            stack.push((last, e));
        }
        let e = stack.last().map_or(Entry::NONE, |&(_, e)| e);
        if out.last().map(|&(_, prev)| prev) != Some(e) {
            out.push((b, e));
        }
    }
    out
}

/// The mask of the first `len` bits of a left-aligned key.
#[cfg(test)]
fn mask(len: u8) -> u128 {
    match len {
        0 => 0,
        l if l >= 128 => u128::MAX,
        l => u128::MAX << (128 - u32::from(l)),
    }
}

/// A left-aligned key from an IPv4 address.
#[inline(always)]
pub fn key_v4(addr: std::net::Ipv4Addr) -> u128 {
    u128::from(u32::from(addr)) << 96
}

/// A left-aligned key from an IPv6 address.
#[inline(always)]
pub fn key_v6(addr: std::net::Ipv6Addr) -> u128 {
    u128::from(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(s: &str) -> u128 {
        key_v4(s.parse::<Ipv4Addr>().unwrap())
    }
    fn v6(s: &str) -> u128 {
        key_v6(s.parse::<Ipv6Addr>().unwrap())
    }
    fn a4(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }
    fn a6(s: &str) -> u128 {
        u128::from(s.parse::<Ipv6Addr>().unwrap())
    }

    /// The longest prefix holding `a` (right-aligned, `width` bits) by scanning them all;
    /// of two identical prefixes, the later wins.
    fn naive(width: u32, prefixes: &[(u128, u8, u16)], a: u128) -> Entry {
        let key = a << (128 - width);
        let mut best = Entry::NONE;
        for &(k, len, v) in prefixes {
            let len = len.min(width as u8);
            if key & mask(len) == k & mask(len) {
                let e = Entry::leaf(v, len);
                if e.prefix_len() >= best.prefix_len() {
                    best = e;
                }
            }
        }
        best
    }

    #[test]
    fn empty_table_matches_nothing() {
        let t = Table4::build(&[]);
        assert_eq!(t.lookup(a4("1.2.3.4")), Entry::NONE);
        assert_eq!(t.lookup(0), Entry::NONE);
        assert_eq!(t.lookup(u32::MAX), Entry::NONE);
        assert_eq!(t.depth(), 0);
        let t = Table6::build(&[]);
        assert_eq!(t.lookup(u128::MAX).value(), None);
    }

    #[test]
    fn default_route_and_host_routes_v4() {
        let t = Table4::build(&[
            (v4("0.0.0.0"), 0, 1),
            (v4("10.0.0.0"), 8, 2),
            (v4("10.1.0.0"), 16, 3),
            (v4("10.1.2.0"), 24, 4),
            (v4("10.1.2.3"), 32, 5),
            (v4("10.1.2.128"), 25, 6),
            (v4("10.1.0.0"), 17, 7),
            (v4("255.255.255.255"), 32, 8),
            (v4("0.0.0.0"), 32, 9),
        ]);
        let get = |s| t.lookup(a4(s)).value();
        assert_eq!(get("9.9.9.9"), Some(1));
        assert_eq!(get("10.200.0.1"), Some(2));
        assert_eq!(get("10.1.200.1"), Some(3));
        assert_eq!(get("10.1.100.1"), Some(7));
        assert_eq!(get("10.1.2.4"), Some(4));
        assert_eq!(get("10.1.2.3"), Some(5));
        assert_eq!(get("10.1.2.2"), Some(4));
        assert_eq!(get("10.1.2.200"), Some(6));
        assert_eq!(get("10.1.2.127"), Some(4));
        assert_eq!(get("10.1.2.255"), Some(6));
        assert_eq!(get("10.1.3.0"), Some(7));
        assert_eq!(get("10.1.128.0"), Some(3));
        assert_eq!(get("10.1.127.255"), Some(7));
        assert_eq!(get("11.0.0.0"), Some(1));
        assert_eq!(get("9.255.255.255"), Some(1));
        assert_eq!(get("255.255.255.255"), Some(8));
        assert_eq!(get("255.255.255.254"), Some(1));
        assert_eq!(get("0.0.0.0"), Some(9));
        assert_eq!(get("0.0.0.1"), Some(1));
        assert_eq!(t.lookup(a4("10.1.2.3")).prefix_len(), Some(32));
        assert_eq!(t.lookup(a4("9.9.9.9")).prefix_len(), Some(0));
    }

    #[test]
    fn adjacent_and_nested_prefixes_without_default() {
        let t = Table4::build(&[
            (v4("10.0.0.0"), 24, 1),
            (v4("10.0.1.0"), 24, 2),
            (v4("10.0.2.0"), 23, 3),
            (v4("10.0.3.255"), 32, 4),
            (v4("10.0.4.0"), 32, 5),
        ]);
        let get = |s| t.lookup(a4(s)).value();
        assert_eq!(get("9.255.255.255"), None);
        assert_eq!(get("10.0.0.0"), Some(1));
        assert_eq!(get("10.0.0.255"), Some(1));
        assert_eq!(get("10.0.1.0"), Some(2));
        assert_eq!(get("10.0.1.255"), Some(2));
        assert_eq!(get("10.0.2.0"), Some(3));
        assert_eq!(get("10.0.3.254"), Some(3));
        assert_eq!(get("10.0.3.255"), Some(4));
        assert_eq!(get("10.0.4.0"), Some(5));
        assert_eq!(get("10.0.4.1"), None);
        assert_eq!(get("255.255.255.255"), None);
        // Two /24 of the same segment and length next to each other are one interval.
        let t = Table4::build(&[(v4("10.0.0.0"), 24, 1), (v4("10.0.1.0"), 24, 1)]);
        assert_eq!(t.intervals(), 3);
    }

    #[test]
    fn max_address_host_routes() {
        let t = Table4::build(&[(v4("255.255.255.255"), 32, 1)]);
        assert_eq!(t.lookup(u32::MAX).value(), Some(1));
        assert_eq!(t.lookup(u32::MAX - 1).value(), None);
        assert_eq!(t.lookup(0).value(), None);
        let t = Table6::build(&[(u128::MAX, 128, 1), (0, 128, 2)]);
        assert_eq!(t.lookup(u128::MAX).value(), Some(1));
        assert_eq!(t.lookup(u128::MAX - 1).value(), None);
        assert_eq!(t.lookup(0).value(), Some(2));
        assert_eq!(t.lookup(1).value(), None);
        let t = Table6::build(&[(0, 0, 7)]);
        assert_eq!(t.lookup(u128::MAX).value(), Some(7));
        assert_eq!(t.lookup(0).value(), Some(7));
        assert_eq!(t.intervals(), 1);
    }

    #[test]
    fn host_bits_and_long_lengths_are_ignored() {
        let t = Table4::build(&[(v4("10.1.2.3"), 24, 1), (v4("10.9.9.9"), 40, 2)]);
        assert_eq!(t.lookup(a4("10.1.2.200")).value(), Some(1));
        assert_eq!(t.lookup(a4("10.1.3.0")).value(), None);
        assert_eq!(t.lookup(a4("10.9.9.9")), Entry::leaf(2, 32));
    }

    #[test]
    fn identical_prefixes_later_wins() {
        let t = Table4::build(&[(v4("10.0.0.0"), 8, 1), (v4("10.0.0.0"), 8, 2)]);
        assert_eq!(t.lookup(a4("10.2.3.4")).value(), Some(2));
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let a = [
            (v4("10.1.2.3"), 32, 5),
            (v4("10.0.0.0"), 8, 2),
            (v4("10.1.2.0"), 24, 4),
        ];
        let mut b = a;
        b.reverse();
        let ta = Table4::build(&a);
        let tb = Table4::build(&b);
        for s in ["10.1.2.3", "10.1.2.4", "10.9.9.9", "11.0.0.0"] {
            assert_eq!(ta.lookup(a4(s)), tb.lookup(a4(s)));
        }
    }

    #[test]
    fn ipv6_edges() {
        let t = Table6::build(&[
            (v6("::"), 0, 1),
            (v6("fd00::"), 8, 2),
            (v6("fd00:1::"), 32, 3),
            (v6("fd00:1::"), 64, 4),
            (v6("fd00:1::1"), 128, 5),
            (v6("fd00:1::"), 127, 6),
            (v6("2001:db8::"), 33, 7),
        ]);
        let get = |s| t.lookup(a6(s)).value();
        assert_eq!(get("2001::1"), Some(1));
        assert_eq!(get("fd99::1"), Some(2));
        assert_eq!(get("fd00:1:2::1"), Some(3));
        assert_eq!(get("fd00:1::2"), Some(4));
        assert_eq!(get("fd00:1::1"), Some(5));
        assert_eq!(get("fd00:1::"), Some(6));
        assert_eq!(get("fd00:1::ffff:ffff:ffff:ffff"), Some(4));
        assert_eq!(get("fd00:1:0:1::"), Some(3));
        assert_eq!(get("2001:db8:7fff::"), Some(7));
        assert_eq!(get("2001:db8:8000::"), Some(1));
        assert_eq!(get("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), Some(1));
        assert_eq!(get("::"), Some(1));
    }

    /// Many random prefixes (clustered so they nest and touch, many levels deep) against
    /// a naive scan, for both widths, probing every boundary and its neighbours.
    #[test]
    fn random_tables_match_naive_scan() {
        let mut rng = crate::policy::synth::Rng::new(3);
        for (round, count) in [0usize, 1, 2, 15, 16, 17, 255, 256, 300, 5000].into_iter().enumerate() {
            for width in [32u32, 128] {
                let prefixes: Vec<(u128, u8, u16)> = (0..count)
                    .map(|i| {
                        let len = rng.range(0, width) as u8;
                        // Few distinct top bits, so prefixes meet.
                        let a = (rng.next_u128() & !(0xfffu128 << 116)) | (u128::from(rng.range(0, 3) as u8) << 120);
                        let a = if width == 32 { a & (u128::MAX << 96) } else { a };
                        (a, len, (i % 1000) as u16)
                    })
                    .collect();
                let mut probes: Vec<u128> = vec![0, u128::MAX >> (128 - width)];
                for &(k, len, _) in &prefixes {
                    let len = u32::from(len).min(width);
                    let host = (u128::MAX >> (128 - width)).checked_shr(len).unwrap_or(0);
                    let start = (k >> (128 - width)) & !host;
                    for p in [start, start | host] {
                        probes.extend([p.wrapping_sub(1), p, p.wrapping_add(1)]);
                    }
                }
                for _ in 0..200 {
                    probes.push(rng.next_u128() >> (128 - width));
                }
                let top = u128::MAX >> (128 - width);
                if width == 32 {
                    let t = Table4::build(&prefixes);
                    for p in probes {
                        let p = p & top;
                        assert_eq!(t.lookup(p as u32), naive(32, &prefixes, p), "round {round} {p:#x}");
                    }
                } else {
                    let t = Table6::build(&prefixes);
                    for p in probes {
                        assert_eq!(t.lookup(p), naive(128, &prefixes, p), "round {round} {p:#x}");
                    }
                }
            }
        }
    }

    #[test]
    fn deep_tree_levels() {
        // 20,000 host routes every other address: 40,000 boundaries, four levels.
        let prefixes: Vec<(u128, u8, u16)> =
            (0..20_000u32).map(|i| (u128::from(i * 2) << 96, 32, (i % 7) as u16)).collect();
        let t = Table4::build(&prefixes);
        assert_eq!(t.depth(), 4);
        for a in 0..45_000u32 {
            let want = (a % 2 == 0 && a < 40_000).then_some(((a / 2) % 7) as u16);
            assert_eq!(t.lookup(a).value(), want, "{a}");
        }
        assert!(t.heap_bytes() < 400_000);
    }

    #[test]
    fn direct_index_agrees_with_the_tree() {
        // Clusters (100 host routes in one /16, the rest of 10/8) and sparse space: the
        // short cut is built, and every lookup agrees with the walk and a naive scan.
        let mut rng = crate::policy::synth::Rng::new(9);
        let mut prefixes: Vec<(u128, u8, u16)> = Vec::new();
        for i in 0..3000u32 {
            let a = match i % 30 {
                1 => 0x0a01_0000 | (rng.next_u64() as u32 & 0xffff),
                0..=20 => 0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ffff),
                _ => rng.next_u64() as u32,
            };
            let len = if i % 30 == 1 { 32 } else { rng.range(8, 32) as u8 };
            prefixes.push((u128::from(a) << 96, len, (i % 500) as u16));
        }
        let t = Table4::build(&prefixes);
        assert!(t.depth() >= 3);
        assert!(t.direct_bits() >= 8, "{t:?}");
        let mut probes: Vec<u32> = vec![0, u32::MAX, 0x0a01_0000, 0x0a01_00ff, 0x0a01_0100];
        probes.extend((0..20_000).map(|_| rng.next_u64() as u32));
        probes.extend((0..5_000).map(|_| 0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ffff)));
        probes.extend((0..5_000).map(|_| 0x0a01_0000 | (rng.next_u64() as u32 & 0xffff)));
        for p in probes {
            assert_eq!(t.lookup(p), naive(32, &prefixes, u128::from(p)), "{p:#x}");
            assert_eq!(t.values.get(t.walk_all(p)).copied(), Some(t.lookup(p)), "{p:#x}");
        }
        // A cluster too dense for any index width: no short cut, the walk alone.
        let dense: Vec<(u128, u8, u16)> =
            (0..5000u32).map(|i| (u128::from(i * 2) << 96, 32, (i % 3) as u16)).collect();
        let t = Table4::build(&dense);
        assert_eq!(t.direct_bits(), 0);
        assert_eq!(t.lookup(4000).value(), Some(2000 % 3));
        assert_eq!(t.lookup(4001).value(), None);
    }

    #[test]
    fn longer_prefers_longer_match() {
        let a = Entry::leaf(1, 8);
        let b = Entry::leaf(2, 24);
        assert_eq!(a.longer(b), b);
        assert_eq!(b.longer(a), b);
        assert_eq!(Entry::NONE.longer(a), a);
        assert_eq!(a.longer(Entry::NONE), a);
        let zero = Entry::leaf(3, 0);
        assert_eq!(Entry::NONE.longer(zero), zero);
    }
}
