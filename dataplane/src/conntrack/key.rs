//! Flow keys: the normalised 5-tuple plus VLANs, and the seeded hash.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

/// Bit of `Flow::flags`: the originator is the `lo` endpoint of the key.
pub(crate) const ORIG_IS_LO: u8 = 0x80;

/// Bits of [`Key::tags`] above the two 12-bit VLAN ids.
const OUTER_PRESENT: u32 = 1 << 24;
const INNER_PRESENT: u32 = 1 << 25;
const V6: u32 = 1 << 26;

/// A flow key, the same for both directions: the two endpoints (address and port) in
/// ascending order, the IP protocol, both VLAN ids and the address family. IPv4
/// addresses are stored as IPv4-mapped IPv6 addresses, with the family bit telling them
/// apart from real ones. ICMP echo uses the echo identifier as both ports; protocols
/// without ports use 0. 44 bytes, 4-byte aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub(crate) struct Key {
    pub(crate) lo: [u32; 4],
    pub(crate) hi: [u32; 4],
    /// `lo` port << 16 | `hi` port.
    pub(crate) ports: u32,
    /// Outer VID (bits 0-11), inner VID (12-23), presence bits and the family bit.
    pub(crate) tags: u32,
    pub(crate) proto: u8,
}

impl Key {
    pub(crate) const ZERO: Key = Key {
        lo: [0; 4],
        hi: [0; 4],
        ports: 0,
        tags: 0,
        proto: 0,
    };
}

/// An address as four words (IPv4 mapped into IPv6).
#[inline(always)]
pub(crate) fn words(a: IpAddr) -> [u32; 4] {
    match a {
        IpAddr::V4(v4) => [0, 0, 0xffff, u32::from(v4)],
        IpAddr::V6(v6) => {
            let s = v6.octets();
            let w = |i: usize| u32::from_be_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
            [w(0), w(4), w(8), w(12)]
        }
    }
}

/// The VLAN and family word of a key.
#[inline(always)]
pub(crate) fn tags(outer: Option<u16>, inner: Option<u16>, v6: bool) -> u32 {
    let mut t = 0;
    if let Some(v) = outer {
        t |= OUTER_PRESENT | u32::from(v & 0x0fff);
    }
    if let Some(v) = inner {
        t |= INNER_PRESENT | (u32::from(v & 0x0fff) << 12);
    }
    if v6 {
        t |= V6;
    }
    t
}

/// The key of a packet from (`src`, `sport`) to (`dst`, `dport`), and whether the
/// sender is the key's `lo` endpoint. A packet whose two endpoints are equal is always
/// from `lo`.
#[inline(always)]
pub(crate) fn make(
    src: [u32; 4],
    sport: u16,
    dst: [u32; 4],
    dport: u16,
    proto: u8,
    tags: u32,
) -> (Key, bool) {
    let src_is_lo = (src, sport) <= (dst, dport);
    let (lo, lp, hi, hp) = if src_is_lo {
        (src, sport, dst, dport)
    } else {
        (dst, dport, src, sport)
    };
    (
        Key {
            lo,
            hi,
            ports: (u32::from(lp) << 16) | u32::from(hp),
            tags,
            proto,
        },
        src_is_lo,
    )
}

/// The seeded hash of the flow and fragment tables: a folded 64x64->128 multiply over
/// the key's words (the construction of wyhash and foldhash). The seed is drawn once per
/// table from the standard library's per-process random source, so an outsider cannot
/// aim many flows at one probe run (hash flooding) without knowing it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hasher64 {
    seeds: [u64; 4],
}

const K: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline(always)]
fn pair(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

impl Hasher64 {
    /// A hasher with the given seed (`None`: drawn at random).
    pub(crate) fn new(seed: Option<u64>) -> Hasher64 {
        let s = seed.unwrap_or_else(|| {
            let mut h = RandomState::new().build_hasher();
            h.write_u64(0x6275_6c6b_6865_6164);
            h.finish()
        });
        let mut seeds = [0; 4];
        let mut x = s;
        for v in seeds.iter_mut() {
            // splitmix64
            x = x.wrapping_add(K);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *v = z ^ (z >> 31);
        }
        Hasher64 { seeds }
    }

    /// Hashes 6 words.
    #[inline(always)]
    pub(crate) fn words(&self, w: [u64; 6]) -> u64 {
        let [s0, s1, s2, s3] = self.seeds;
        let a = fold(w[0] ^ s0, w[1] ^ s1);
        let b = fold(w[2] ^ s2, w[3] ^ s3);
        let c = fold(w[4] ^ s1, w[5] ^ s0);
        fold(a ^ c ^ s2, b ^ s3)
    }

    /// The hash of a flow key.
    #[inline(always)]
    pub(crate) fn key(&self, k: &Key) -> u64 {
        self.words([
            pair(k.lo[0], k.lo[1]),
            pair(k.lo[2], k.lo[3]),
            pair(k.hi[0], k.hi[1]),
            pair(k.hi[2], k.hi[3]),
            pair(k.ports, k.tags),
            u64::from(k.proto),
        ])
    }
}
