//! Longest-prefix match: a multibit trie with leaf pushing, built once, read-only after.
//!
//! Keys are left-aligned in a `u128` (an IPv4 address is shifted left by 96 bits), so one
//! implementation serves both families. The root is a flat array indexed by the first
//! `root_bits` bits of the key (16 for the big per-family tables, so IPv4 is DIR-16-8-8);
//! every further level is a node of 256 entries indexed by the next 8 bits.
//!
//! An entry is one `u32`:
//! - `0`: no prefix covers this part of the address space;
//! - bit 31 set: a child node, whose number is in bits 0..31;
//! - otherwise a leaf: bit 24 set (valid), the prefix length in bits 16..24 and the value
//!   (a segment id) in bits 0..16.
//!
//! Because the prefix length is stored in the leaf, two tables can be looked up and the
//! longer match kept: that is how VLAN views are layered over the base view (see
//! [`Entry::longer`]).
//!
//! Building inserts prefixes in order of increasing length. A longer prefix then never
//! finds a child node where it writes leaves, and converting a leaf into a child node
//! copies the leaf into all 256 new entries: leaf pushing comes for free.

use std::fmt;

const CHILD: u32 = 1 << 31;
const VALID: u32 = 1 << 24;
const STRIDE: u32 = 8;
const NODE_SIZE: usize = 1 << STRIDE;
/// Most child nodes one table may hold (a node is 1 KiB, so this is 16 GiB: far beyond
/// any sane policy; it only keeps the node number inside 31 bits).
const MAX_NODES: usize = 1 << 24;

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

/// The table ran out of node numbers (more than 2^24 nodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull;

/// A read-only longest-prefix-match table over left-aligned `u128` keys.
#[derive(Clone)]
pub struct Trie {
    /// Key bits of the address family: 32 or 128.
    width: u8,
    /// `128 - root_bits`: the shift that takes the root index out of a key.
    root_shift: u32,
    /// Deepest level of child nodes in use (0: root only).
    depth: u32,
    root: Box<[u32]>,
    /// Node 0 is all zeros and never referenced: the branch-free lookup reads it for
    /// leaves.
    nodes: Vec<u32>,
}

impl fmt::Debug for Trie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trie")
            .field("width", &self.width)
            .field("root_bits", &(128 - self.root_shift))
            .field("nodes", &self.node_count())
            .field("depth", &self.depth)
            .finish()
    }
}

impl Trie {
    /// An empty table for keys of `width` bits (32 or 128) whose root is indexed by the
    /// first `root_bits` bits (1..=24, at most `width`).
    pub fn new(width: u8, root_bits: u8) -> Trie {
        let width = width.clamp(1, 128);
        let root_bits = root_bits.clamp(1, 24).min(width);
        Trie {
            width,
            root_shift: 128 - u32::from(root_bits),
            depth: 0,
            root: vec![0; 1 << root_bits].into_boxed_slice(),
            nodes: vec![0; NODE_SIZE],
        }
    }

    /// Builds a table from `(left-aligned key, prefix length, value)` triples, in any
    /// order. Host bits of a key are ignored. For two identical prefixes, the later in
    /// the list wins (callers refuse duplicates before building).
    pub fn build(
        width: u8,
        root_bits: u8,
        prefixes: &[(u128, u8, u16)],
    ) -> Result<Trie, TableFull> {
        let mut trie = Trie::new(width, root_bits);
        let mut sorted: Vec<(u128, u8, u16)> = prefixes.to_vec();
        // Stable: equal prefixes keep their order, so "later wins" holds.
        sorted.sort_by_key(|p| p.1);
        for &(key, len, value) in &sorted {
            trie.insert(key, len, value)?;
        }
        Ok(trie)
    }

    fn root_bits(&self) -> u32 {
        128 - self.root_shift
    }

    /// Inserts one prefix. Must be called in order of non-decreasing length.
    fn insert(&mut self, key: u128, len: u8, value: u16) -> Result<(), TableFull> {
        let len = len.min(self.width);
        let key = key & mask(len);
        let leaf = Entry::leaf(value, len).0;
        let len = u32::from(len);
        let root_bits = self.root_bits();
        if len <= root_bits {
            let start = (key >> self.root_shift) as usize;
            let count = 1usize << (root_bits - len);
            for e in self.root.iter_mut().skip(start).take(count) {
                *e = leaf;
            }
            return Ok(());
        }
        // Walk down, turning leaves into child nodes on the way.
        let root_idx = (key >> self.root_shift) as usize;
        let mut node = self.child_of_root(root_idx)?;
        let mut consumed = root_bits;
        self.depth = self.depth.max(1);
        loop {
            let byte = ((key >> (128 - consumed - STRIDE)) & 0xff) as usize;
            if len <= consumed + STRIDE {
                let count = 1usize << (consumed + STRIDE - len);
                let base = node * NODE_SIZE + byte;
                for e in self.nodes.iter_mut().skip(base).take(count) {
                    *e = leaf;
                }
                return Ok(());
            }
            node = self.child_of_node(node * NODE_SIZE + byte)?;
            consumed += STRIDE;
            self.depth = self.depth.max((consumed - root_bits) / STRIDE + 1);
        }
    }

    fn new_node(&mut self, fill: u32) -> Result<usize, TableFull> {
        let n = self.nodes.len() / NODE_SIZE;
        if n >= MAX_NODES {
            return Err(TableFull);
        }
        self.nodes.resize(self.nodes.len() + NODE_SIZE, fill);
        Ok(n)
    }

    fn child_of_root(&mut self, idx: usize) -> Result<usize, TableFull> {
        let e = self.root.get(idx).copied().unwrap_or(0);
        if e & CHILD != 0 {
            return Ok((e & !CHILD) as usize);
        }
        let n = self.new_node(e)?;
        if let Some(slot) = self.root.get_mut(idx) {
            *slot = CHILD | n as u32;
        }
        Ok(n)
    }

    fn child_of_node(&mut self, idx: usize) -> Result<usize, TableFull> {
        let e = self.nodes.get(idx).copied().unwrap_or(0);
        if e & CHILD != 0 {
            return Ok((e & !CHILD) as usize);
        }
        let n = self.new_node(e)?;
        if let Some(slot) = self.nodes.get_mut(idx) {
            *slot = CHILD | n as u32;
        }
        Ok(n)
    }

    /// The longest prefix that holds `key` (left-aligned). Never panics; a corrupt table
    /// (impossible by construction) reads as "no match".
    ///
    /// Shallow tables (IPv4: at most 3 levels below the root) are walked without a
    /// data-dependent branch, always reading `depth` levels (a leaf reads the zero node
    /// and keeps its value): no misprediction on the walk's length, so the lookups of
    /// several addresses and packets overlap in the CPU. Deeper tables loop.
    #[inline(always)]
    pub fn lookup(&self, key: u128) -> Entry {
        if self.width <= 32 {
            // Only the top 32 bits of the key can matter.
            return self.lookup_narrow((key >> 96) as u32);
        }
        if self.depth <= 3 {
            self.lookup_fixed(key)
        } else {
            self.lookup_loop(key)
        }
    }

    #[inline(always)]
    fn lookup_fixed(&self, key: u128) -> Entry {
        let mut e = self
            .root
            .get((key >> self.root_shift) as usize)
            .copied()
            .unwrap_or(0);
        let mut shift = self.root_shift;
        for _ in 0..self.depth {
            shift = shift.saturating_sub(STRIDE);
            // All ones for a child, zero for a leaf.
            let m = ((e as i32) >> 31) as u32;
            let node = (e & !CHILD & m) as usize;
            let idx = (node << STRIDE) | ((key >> shift) as usize & 0xff);
            let next = self.nodes.get(idx).copied().unwrap_or(0);
            e = (next & m) | (e & !m);
        }
        // A child left after `depth` levels cannot happen; read it as "no match".
        Entry(if e & CHILD != 0 { 0 } else { e })
    }

    /// [`Trie::lookup_fixed`] for tables of at most 32 bits, in 64-bit arithmetic with
    /// constant shifts (the `u128` shifts by a variable cost several instructions each):
    /// the address is shifted left by the root bits, so the root index sits above bit
    /// 32 and stride `i` (0-based) is the byte at bits `24 - 8 i`. A table of at most
    /// 32 bits is at most four strides deep below its root; the walk is unrolled and the
    /// branches on the depth go the same way for every lookup in one table.
    #[inline(always)]
    fn lookup_narrow(&self, addr: u32) -> Entry {
        let key = u64::from(addr) << (128 - self.root_shift);
        let mut e = self
            .root
            .get((key >> 32) as usize)
            .copied()
            .unwrap_or(0);
        for level in 0..4u32 {
            if level >= self.depth {
                break;
            }
            // All ones for a child, zero for a leaf.
            let m = ((e as i32) >> 31) as u32;
            let node = (e & !CHILD & m) as usize;
            let idx = (node << STRIDE) | ((key >> (24 - 8 * level)) as usize & 0xff);
            let next = self.nodes.get(idx).copied().unwrap_or(0);
            e = (next & m) | (e & !m);
        }
        Entry(if e & CHILD != 0 { 0 } else { e })
    }

    #[inline]
    fn lookup_loop(&self, key: u128) -> Entry {
        let mut e = self
            .root
            .get((key >> self.root_shift) as usize)
            .copied()
            .unwrap_or(0);
        let mut shift = self.root_shift;
        while e & CHILD != 0 {
            shift = match shift.checked_sub(STRIDE) {
                Some(s) => s,
                None => return Entry::NONE,
            };
            let idx = (((e & !CHILD) as usize) << STRIDE) | ((key >> shift) as usize & 0xff);
            e = self.nodes.get(idx).copied().unwrap_or(0);
        }
        Entry(e)
    }

    /// Looks up an IPv4 address (only meaningful on a 32-bit table).
    #[inline]
    pub fn lookup_v4(&self, addr: u32) -> Entry {
        self.lookup_narrow(addr)
    }

    /// Looks up an IPv6 address (only meaningful on a 128-bit table).
    #[inline]
    pub fn lookup_v6(&self, addr: u128) -> Entry {
        self.lookup(addr)
    }

    /// Number of child nodes (256 entries each).
    pub fn node_count(&self) -> usize {
        self.nodes.len() / NODE_SIZE - 1
    }

    /// Heap bytes held by the table.
    pub fn heap_bytes(&self) -> usize {
        (self.root.len() + self.nodes.capacity()) * std::mem::size_of::<u32>()
    }
}

/// The mask of the first `len` bits of a left-aligned key.
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

    #[test]
    fn empty_table_matches_nothing() {
        let t = Trie::build(32, 16, &[]).unwrap();
        assert_eq!(t.lookup(v4("1.2.3.4")), Entry::NONE);
        assert_eq!(t.lookup(v4("1.2.3.4")).value(), None);
    }

    #[test]
    fn default_route_and_host_routes_v4() {
        let t = Trie::build(
            32,
            16,
            &[
                (v4("0.0.0.0"), 0, 1),
                (v4("10.0.0.0"), 8, 2),
                (v4("10.1.0.0"), 16, 3),
                (v4("10.1.2.0"), 24, 4),
                (v4("10.1.2.3"), 32, 5),
                (v4("10.1.2.128"), 25, 6),
                (v4("10.1.0.0"), 17, 7),
                (v4("255.255.255.255"), 32, 8),
            ],
        )
        .unwrap();
        let get = |s| t.lookup(v4(s)).value();
        assert_eq!(get("9.9.9.9"), Some(1));
        assert_eq!(get("10.200.0.1"), Some(2));
        assert_eq!(get("10.1.200.1"), Some(3));
        assert_eq!(get("10.1.100.1"), Some(7));
        assert_eq!(get("10.1.2.4"), Some(4));
        assert_eq!(get("10.1.2.3"), Some(5));
        assert_eq!(get("10.1.2.200"), Some(6));
        assert_eq!(get("10.1.3.0"), Some(7));
        assert_eq!(get("255.255.255.255"), Some(8));
        assert_eq!(get("255.255.255.254"), Some(1));
        assert_eq!(t.lookup(v4("10.1.2.3")).prefix_len(), Some(32));
        assert_eq!(t.lookup(v4("9.9.9.9")).prefix_len(), Some(0));
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
        let ta = Trie::build(32, 16, &a).unwrap();
        let tb = Trie::build(32, 16, &b).unwrap();
        for s in ["10.1.2.3", "10.1.2.4", "10.9.9.9", "11.0.0.0"] {
            assert_eq!(ta.lookup(v4(s)), tb.lookup(v4(s)));
        }
    }

    #[test]
    fn host_bits_are_ignored() {
        let t = Trie::build(32, 16, &[(v4("10.1.2.3"), 24, 1)]).unwrap();
        assert_eq!(t.lookup(v4("10.1.2.200")).value(), Some(1));
        assert_eq!(t.lookup(v4("10.1.3.0")).value(), None);
    }

    #[test]
    fn ipv6_edges() {
        let t = Trie::build(
            128,
            16,
            &[
                (v6("::"), 0, 1),
                (v6("fd00::"), 8, 2),
                (v6("fd00:1::"), 32, 3),
                (v6("fd00:1::"), 64, 4),
                (v6("fd00:1::1"), 128, 5),
                (v6("fd00:1::"), 127, 6),
                (v6("2001:db8::"), 33, 7),
            ],
        )
        .unwrap();
        let get = |s| t.lookup(v6(s)).value();
        assert_eq!(get("2001::1"), Some(1));
        assert_eq!(get("fd99::1"), Some(2));
        assert_eq!(get("fd00:1:2::1"), Some(3));
        assert_eq!(get("fd00:1::2"), Some(4));
        assert_eq!(get("fd00:1::1"), Some(5));
        assert_eq!(get("fd00:1::"), Some(6));
        assert_eq!(get("2001:db8:7fff::"), Some(7));
        assert_eq!(get("2001:db8:8000::"), Some(1));
        assert_eq!(get("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), Some(1));
    }

    #[test]
    fn small_root() {
        let t = Trie::build(
            128,
            8,
            &[
                (v6("fd00::"), 7, 1),
                (v6("fe80::"), 10, 2),
                (v6("ff02::1"), 128, 3),
            ],
        )
        .unwrap();
        assert_eq!(t.lookup(v6("fc00::1")).value(), Some(1));
        assert_eq!(t.lookup(v6("fe80::1")).value(), Some(2));
        assert_eq!(t.lookup(v6("febf::1")).value(), Some(2));
        assert_eq!(t.lookup(v6("fec0::1")).value(), None);
        assert_eq!(t.lookup(v6("ff02::1")).value(), Some(3));
        assert_eq!(t.lookup(v6("ff02::2")).value(), None);
    }

    #[test]
    fn narrow_lookup_any_root_stride() {
        // The 64-bit IPv4 walk against the wide walk and a naive scan, for root strides
        // that do and do not divide the address into whole bytes.
        let mut rng = crate::policy::synth::Rng::new(3);
        let prefixes: Vec<(u128, u8, u16)> = (0..300)
            .map(|i| {
                let len = rng.range(0, 32) as u8;
                let a = (rng.next_u64() as u32) & (0xff00_ffff | 0x000a_0000);
                (u128::from(a) << 96, len, i)
            })
            .collect();
        let naive = |a: u32| {
            prefixes
                .iter()
                .filter(|p| (u128::from(a) << 96) & mask(p.1) == p.0 & mask(p.1))
                .max_by_key(|p| (p.1, p.2))
                .map(|p| p.2)
        };
        for root in [1, 5, 8, 12, 16, 24] {
            // Later duplicates win in build: keep the highest value per prefix, as naive.
            let mut sorted = prefixes.clone();
            sorted.sort_by_key(|p| p.2);
            let t = Trie::build(32, root, &sorted).unwrap();
            for _ in 0..2000 {
                let a = (rng.next_u64() as u32) & (0xff00_ffff | 0x000a_0000);
                assert_eq!(t.lookup_v4(a).value(), naive(a), "root {root} addr {a:#x}");
                assert_eq!(t.lookup_v4(a), t.lookup_loop(u128::from(a) << 96));
            }
        }
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
