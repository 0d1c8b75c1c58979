use std::ffi::CString;
use std::ptr::NonNull;

use super::error::DpdkError;
use super::mbuf::Mbuf;

/// A pool of packet buffers (`rte_pktmbuf_pool_create`). Thread-safe: DPDK mempools
/// take concurrent gets and puts (with a per-lcore cache).
#[derive(Debug)]
pub struct Mempool {
    raw: NonNull<dpdk_sys::rte_mempool>,
    size: u32,
    data_room: u16,
}

// SAFETY: a DPDK mempool is designed for concurrent use from many threads.
unsafe impl Send for Mempool {}
// SAFETY: as above; &Mempool only allows thread-safe operations.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Default data room: 2048 bytes of packet plus DPDK's headroom.
    pub const DEFAULT_DATA_ROOM: u16 = dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16;

    /// The largest frame one mbuf of [`Mempool::DEFAULT_DATA_ROOM`] holds (2048).
    pub const DEFAULT_FRAME_ROOM: u32 = dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE - dpdk_sys::RTE_PKTMBUF_HEADROOM;

    /// Creates a pool of `size` mbufs with a per-lcore cache of `cache` and the given
    /// data room, on NUMA `socket` (-1: any).
    pub fn new(name: &str, size: u32, cache: u32, data_room: u16, socket: i32) -> Result<Mempool, DpdkError> {
        let op = || format!("rte_pktmbuf_pool_create({name}, {size} mbufs, cache {cache})");
        let cname = CString::new(name).map_err(|_| DpdkError::other(op(), "name contains a NUL byte"))?;
        // SAFETY: EAL must be initialised (DPDK returns an error, ENODEV/E_RTE_NO_CONFIG,
        // otherwise); the name is a valid C string.
        let raw = unsafe { dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), size, cache, 0, data_room, socket) };
        match NonNull::new(raw) {
            Some(raw) => Ok(Mempool { raw, size, data_room }),
            None => Err(DpdkError::from_rte_errno(op())),
        }
    }

    /// Number of mbufs the pool was created with.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The largest frame one mbuf holds: the data room less DPDK's headroom (2048
    /// bytes with [`Mempool::DEFAULT_DATA_ROOM`]). bulkhead does not chain mbufs, so
    /// this bounds every frame it handles.
    pub fn frame_room(&self) -> u32 {
        u32::from(self.data_room).saturating_sub(dpdk_sys::RTE_PKTMBUF_HEADROOM)
    }

    /// Mbufs available in the pool (including per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: valid pool.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Mbufs currently taken from the pool (held by ports, queues or the application).
    pub fn in_use(&self) -> u32 {
        // SAFETY: valid pool.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    /// Gives the pool up without freeing it and without the warning of a drop with mbufs
    /// in use (a drop would not free it either): for mbufs a driver is known to keep
    /// after its port is closed (see `mgmt`'s shutdown). The memory goes back when the
    /// process ends.
    pub fn leak(self) {
        std::mem::forget(self);
    }

    /// Takes one mbuf, or `None` when the pool is exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: valid pool; the returned mbuf (if any) is owned by us.
        let m = unsafe { dpdk_sys::bh_pktmbuf_alloc(self.raw.as_ptr()) };
        NonNull::new(m).map(Mbuf::from_non_null)
    }

    /// Takes one mbuf and copies `bytes` into it (for tests, tools and generators).
    pub fn alloc_with(&self, bytes: &[u8]) -> Result<Mbuf, DpdkError> {
        let mut m = self
            .alloc()
            .ok_or_else(|| DpdkError::other("rte_pktmbuf_alloc", "mempool exhausted"))?;
        m.append(bytes)?;
        Ok(m)
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        let in_use = self.in_use();
        if in_use != 0 {
            // Freeing the pool now would leave those mbufs dangling.
            log::warn!("mempool dropped with {in_use} mbufs still in use; leaking it");
            return;
        }
        // SAFETY: no mbuf of this pool is outstanding.
        unsafe { dpdk_sys::rte_mempool_free(self.raw.as_ptr()) };
    }
}
