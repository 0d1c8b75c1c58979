use std::ptr::NonNull;

use arrayvec::ArrayVec;

use super::error::DpdkError;

/// Packets per rx/tx burst.
pub const BURST_SIZE: usize = 32;

/// A burst of owned mbufs on the stack: what an rx burst fills and a tx burst drains.
pub type MbufBurst = ArrayVec<Mbuf, BURST_SIZE>;

/// One owned packet buffer.
///
/// Exactly one owner: no `Clone`; dropping it returns it (all its segments) to its pool.
/// Handing it to a NIC (tx) transfers ownership. `#[repr(transparent)]` over the raw
/// pointer, so a `[Mbuf]` can be passed to DPDK as a `struct rte_mbuf **`.
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf(NonNull<dpdk_sys::rte_mbuf>);

// SAFETY: an mbuf is a plain buffer with one owner; moving the owner to another thread
// is how DPDK pipelines work.
unsafe impl Send for Mbuf {}

impl Mbuf {
    pub(crate) fn from_non_null(raw: NonNull<dpdk_sys::rte_mbuf>) -> Mbuf {
        Mbuf(raw)
    }

    #[inline(always)]
    fn raw(&self) -> &dpdk_sys::rte_mbuf {
        // SAFETY: we own a valid mbuf for as long as &self lives.
        unsafe { self.0.as_ref() }
    }

    /// The bytes of the first segment.
    ///
    /// A frame larger than one segment (a jumbo frame on a port with scattered rx) has
    /// more bytes in later segments: see [`Mbuf::is_contiguous`]. Headers always lie in
    /// the first segment for the frame sizes bulkhead parses (data room 2048 bytes).
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        // Read the fields directly (what rte_pktmbuf_mtod does): a call into the C shim
        // per packet is measurable at line rate.
        let m = self.raw();
        // SAFETY: buf_addr + data_off points at data_len initialised bytes of the first
        // segment, valid while we own the mbuf; the borrow ties them to &self.
        unsafe {
            let start = (m.buf_addr as *const u8).add(usize::from(m.data_off));
            std::slice::from_raw_parts(start, usize::from(m.data_len))
        }
    }

    /// The bytes of the first segment, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (buf, off, len) = {
            let m = self.raw();
            (m.buf_addr as *mut u8, usize::from(m.data_off), usize::from(m.data_len))
        };
        // SAFETY: as in `data`, and &mut self guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(buf.add(off), len) }
    }

    /// Asks the CPU to bring the first bytes of the packet into cache, ahead of use.
    #[inline(always)]
    pub fn prefetch_data(&self) {
        let m = self.raw();
        super::prefetch((m.buf_addr as *const u8).wrapping_add(usize::from(m.data_off)));
    }

    /// Length of the whole packet, all segments.
    #[inline(always)]
    pub fn pkt_len(&self) -> u32 {
        self.raw().pkt_len
    }

    /// Number of segments.
    #[inline(always)]
    pub fn segments(&self) -> u16 {
        self.raw().nb_segs
    }

    /// Whether the whole packet is in the first segment.
    #[inline(always)]
    pub fn is_contiguous(&self) -> bool {
        self.segments() == 1
    }

    /// Appends `bytes` at the tail of the (single-segment) packet.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), DpdkError> {
        let len = u16::try_from(bytes.len())
            .map_err(|_| DpdkError::other("rte_pktmbuf_append", "more than 65535 bytes"))?;
        // SAFETY: valid owned mbuf; append returns NULL if the tailroom is too small.
        let dst = unsafe { dpdk_sys::bh_pktmbuf_append(self.0.as_ptr(), len) };
        if dst.is_null() {
            return Err(DpdkError::other(
                "rte_pktmbuf_append",
                format!("{} bytes do not fit in the mbuf's tailroom", bytes.len()),
            ));
        }
        // SAFETY: append reserved `len` writable bytes at `dst`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
        Ok(())
    }
}

impl AsRef<[u8]> for Mbuf {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

impl Drop for Mbuf {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; free returns every segment to its pool.
        unsafe { dpdk_sys::bh_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// Frees every mbuf of `burst` in one call (cheaper than one free per packet).
#[inline]
pub fn free_bulk(burst: &mut MbufBurst) {
    let n = burst.len();
    if n == 0 {
        return;
    }
    // SAFETY: Mbuf is repr(transparent) over a pointer, so the ArrayVec's storage is an
    // array of `n` owned `rte_mbuf *`; set_len(0) first so nothing is freed twice.
    unsafe {
        let ptr = burst.as_mut_ptr() as *mut *mut dpdk_sys::rte_mbuf;
        burst.set_len(0);
        dpdk_sys::rte_pktmbuf_free_bulk(ptr, n as u32);
    }
}
