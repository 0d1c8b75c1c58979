use std::ffi::CString;

use super::error::DpdkError;
use super::port::Port;

/// Two ring-backed ethdev ports joined like the two ends of a veth pair: what one end
/// transmits, the other receives. For in-process tests and benchmarks without a NIC.
///
/// The rings live until the process ends (DPDK's ring PMD does not free them).
#[derive(Debug)]
pub struct VirtualCable {
    /// One end (e.g. the appliance's port).
    pub a: Port,
    /// The other end (e.g. the test's traffic generator).
    pub b: Port,
}

impl VirtualCable {
    /// Creates a cable named `name` whose rings hold `capacity` packets each (a power of
    /// two). Both ends have one rx and one tx queue; configure them as usual.
    pub fn new(name: &str, capacity: u32) -> Result<VirtualCable, DpdkError> {
        let a_to_b = ring(&format!("{name}_ab"), capacity)?;
        let b_to_a = ring(&format!("{name}_ba"), capacity)?;
        let a = from_rings(&format!("{name}_a"), b_to_a, a_to_b)?;
        let b = from_rings(&format!("{name}_b"), a_to_b, b_to_a)?;
        Ok(VirtualCable { a, b })
    }
}

fn ring(name: &str, capacity: u32) -> Result<*mut dpdk_sys::rte_ring, DpdkError> {
    let op = || format!("rte_ring_create({name}, {capacity})");
    let cname = CString::new(name).map_err(|_| DpdkError::other(op(), "name contains a NUL byte"))?;
    // SAFETY: EAL initialised (else DPDK reports an error); valid name. Single producer
    // and single consumer: each end is driven by one thread.
    let r = unsafe {
        dpdk_sys::rte_ring_create(
            cname.as_ptr(),
            capacity,
            dpdk_sys::SOCKET_ID_ANY,
            dpdk_sys::RING_F_SP_ENQ | dpdk_sys::RING_F_SC_DEQ,
        )
    };
    if r.is_null() {
        Err(DpdkError::from_rte_errno(op()))
    } else {
        Ok(r)
    }
}

fn from_rings(name: &str, rx: *mut dpdk_sys::rte_ring, tx: *mut dpdk_sys::rte_ring) -> Result<Port, DpdkError> {
    let op = || format!("rte_eth_from_rings({name})");
    let cname = CString::new(name).map_err(|_| DpdkError::other(op(), "name contains a NUL byte"))?;
    let rxs = [rx];
    let txs = [tx];
    // SAFETY: valid rings that live for the process; arrays of one queue each.
    let id = unsafe { dpdk_sys::rte_eth_from_rings(cname.as_ptr(), rxs.as_ptr(), 1, txs.as_ptr(), 1, 0) };
    if id < 0 {
        return Err(DpdkError::from_rte_errno(op()));
    }
    Port::by_id(id as u16)
}
