//! Safe owners of DPDK resources. This is the only module of the workspace, besides the
//! `dpdk-sys` crate, that contains `unsafe` code.
//!
//! - [`Eal`]: the environment abstraction layer, initialised once per process.
//! - [`Mempool`]: a packet-buffer pool; [`Mbuf`]: one owned packet buffer, freed on drop.
//! - [`Port`]: an ethdev port (NIC or virtual device) and its [`RxQueue`]s/[`TxQueue`]s;
//!   [`Port::attach_vdev`] hot-plugs a virtual device (e.g. `net_pcap`) after EAL init
//!   and detaches it when the port is dropped.
//! - [`lcore`]: launching closures on EAL worker lcores.
//! - [`VirtualCable`]: two ring-backed ports joined like a veth pair, for tests and
//!   benchmarks without a NIC.
//!
//! Ownership rules the types enforce: an [`Mbuf`] has exactly one owner and no `Clone`;
//! an rx burst hands out owned mbufs; a tx burst takes ownership of what the NIC
//! accepted and leaves the rest with the caller. Drop order that types cannot enforce:
//! ports and mempools must be dropped before the [`Eal`]; a [`Mempool`] with mbufs still
//! out is leaked (with a warning) rather than freed under them.
#![allow(unsafe_code)]

mod eal;
mod error;
pub mod lcore;
mod mbuf;
mod mempool;
mod port;
mod ring;

pub use eal::Eal;
pub use error::DpdkError;
pub use mbuf::{free_bulk, Mbuf, MbufBurst, BURST_SIZE};
pub use mempool::Mempool;
pub use port::{max_mtu, Link, Port, PortSetup, PortStats, RxQueue, TxQueue, L2_OVERHEAD, MTU};
pub use ring::VirtualCable;

/// Reads the CPU timestamp counter.
#[inline(always)]
pub fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: RDTSC has no preconditions.
    unsafe {
        std::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: reads the platform's cycle counter; no preconditions.
    unsafe {
        dpdk_sys::bh_get_tsc_cycles()
    }
}

/// Hints the CPU to load the cache line at `ptr` (any address: a prefetch never faults).
#[inline(always)]
pub fn prefetch<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint; it does not fault, even on an invalid address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(ptr as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// Hints the CPU to load the cache line holding `slice[i]`; does nothing when `i` is out
/// of range. Safe: the address is computed without dereferencing it.
#[inline(always)]
pub fn prefetch_index<T>(slice: &[T], i: usize) {
    if i < slice.len() {
        prefetch(slice.as_ptr().wrapping_add(i));
    }
}

/// Asks the kernel to back the memory of `mem` with transparent huge pages (2 MiB on
/// x86-64) where it can. For a large table read at random addresses (the conntrack flow
/// table) this turns a page walk per lookup (a nested one in a VM) into a TLB hit. Only
/// the whole pages inside `mem` are advised; call it before the memory is first written
/// (e.g. on a `Vec`'s spare capacity): pages already in place are merged later, if ever,
/// by khugepaged. A hint: when the kernel has no transparent huge pages or they are
/// off, nothing happens. Not Linux: nothing.
pub fn advise_huge_pages<T>(mem: &[T]) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
        let start = mem.as_ptr() as usize;
        let end = start.saturating_add(std::mem::size_of_val(mem));
        let a = start.div_ceil(page) * page;
        let b = end / page * page;
        if b > a {
            // SAFETY: MADV_HUGEPAGE changes neither the contents nor the permissions of
            // the mapping, and [a, b) lies inside the memory `mem` borrows.
            unsafe {
                libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = mem;
}

/// Timestamp-counter ticks per second (valid after [`Eal::init`]).
pub fn tsc_hz() -> u64 {
    // SAFETY: no preconditions; returns 0 before EAL init.
    unsafe { dpdk_sys::bh_get_tsc_hz() }
}

/// The DPDK version string of the linked library, e.g. `DPDK 22.11.11`.
pub fn version() -> String {
    // SAFETY: rte_version returns a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(dpdk_sys::bh_version()) }
        .to_string_lossy()
        .into_owned()
}
