use std::ffi::{c_char, CStr, CString};

use super::error::{check, DpdkError};
use super::mbuf::{MbufBurst, BURST_SIZE};
use super::mempool::Mempool;

/// Linux `ENOTSUP`: what a driver returns for an operation it lacks.
const ENOTSUP: i32 = 95;

/// The MTU every port is configured with: standard Ethernet. bulkhead does not handle
/// multi-segment (chained) mbufs, so a frame must fit in one mbuf; see
/// [`L2_OVERHEAD`] and [`Mempool::frame_room`].
pub const MTU: u16 = 1500;

/// Bytes a frame adds to its MTU-sized payload, counted generously: Ethernet header
/// (14) and two VLAN tags (QinQ, 8). The CRC is stripped before the mbuf.
pub const L2_OVERHEAD: u32 = 22;

/// The largest MTU whose frames fit in one mbuf of `pool`.
pub fn max_mtu(pool: &Mempool) -> u32 {
    pool.frame_room().saturating_sub(L2_OVERHEAD)
}

/// A Toeplitz key made of one repeated 16-bit pattern, so that swapping source and
/// destination (addresses and ports) gives the same hash: both directions of a flow go to
/// the same queue (Woo and Park, "Scalable TCP Session Monitoring with Symmetric RSS").
const SYMMETRIC_RSS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d,
    0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
    0x6d, 0x5a,
];

/// RSS flow types bulkhead asks for (`RTE_ETH_RSS_*` of rte_ethdev.h, which bindgen
/// cannot read: they are `RTE_BIT64` macros): IPv4 and IPv6, fragments, TCP, UDP, SCTP.
const RSS_FLOW_TYPES: u64 = (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// How to set up a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSetup {
    /// Number of rx queues (one per worker that polls this port).
    pub rx_queues: u16,
    /// Number of tx queues (one per worker that transmits on this port).
    pub tx_queues: u16,
    /// Descriptors per rx queue.
    pub rx_descriptors: u16,
    /// Descriptors per tx queue.
    pub tx_descriptors: u16,
    /// Receive frames not addressed to the port's MAC (needed for L2-transparent
    /// forwarding).
    pub promiscuous: bool,
}

impl Default for PortSetup {
    fn default() -> Self {
        PortSetup { rx_queues: 1, tx_queues: 1, rx_descriptors: 1024, tx_descriptors: 1024, promiscuous: true }
    }
}

/// Port statistics as the driver reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Packets the NIC dropped because rx queues were full.
    pub rx_missed: u64,
    /// Erroneous received packets.
    pub rx_errors: u64,
    /// Failed transmissions.
    pub tx_errors: u64,
    /// Rx mbuf allocation failures (mempool exhausted).
    pub rx_nombuf: u64,
}

/// Link state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// Whether the link is up.
    pub up: bool,
    /// Speed in Mbit/s (0 if unknown).
    pub speed_mbps: u32,
    /// Full duplex.
    pub full_duplex: bool,
}

/// An ethdev port. Dropping it stops (if started) and closes it; a port made by
/// [`Port::attach_vdev`] is also detached (its device removed from the EAL).
#[derive(Debug)]
pub struct Port {
    id: u16,
    name: String,
    started: bool,
    setup: Option<PortSetup>,
    /// Whether this value attached the device at run time and must detach it on drop.
    attached: bool,
}

/// The EAL bus of virtual devices, NUL-terminated.
const VDEV_BUS: &[u8] = b"vdev\0";

impl Port {
    /// The port the EAL created for device `name`: a PCI address (`0000:03:00.0`) or a
    /// virtual device name (`net_af_packet0`).
    pub fn by_name(name: &str) -> Result<Port, DpdkError> {
        let op = || format!("rte_eth_dev_get_port_by_name({name})");
        let cname = CString::new(name).map_err(|_| DpdkError::other(op(), "name contains a NUL byte"))?;
        let mut id = 0u16;
        // SAFETY: valid C string and out-pointer.
        check(op, unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) })?;
        Ok(Port { id, name: name.to_string(), started: false, setup: None, attached: false })
    }

    /// The port with id `id`.
    pub fn by_id(id: u16) -> Result<Port, DpdkError> {
        // SAFETY: any id may be asked about.
        if unsafe { dpdk_sys::rte_eth_dev_is_valid_port(id) } == 0 {
            return Err(DpdkError::other(format!("port {id}"), "no such port"));
        }
        let mut buf = [0 as c_char; 64];
        // SAFETY: buffer is RTE_ETH_NAME_MAX_LEN (64) bytes.
        check(|| format!("rte_eth_dev_get_name_by_port({id})"), unsafe {
            dpdk_sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr())
        })?;
        // SAFETY: DPDK wrote a NUL-terminated name into buf.
        let name = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
        Ok(Port { id, name, started: false, setup: None, attached: false })
    }

    /// Attaches a virtual device at run time (hot-plug, like `--vdev` but after EAL
    /// init) and returns its port. `devargs` is what `--vdev` takes: the device name,
    /// which must start with the driver's name and be unique among live devices, then
    /// the driver's arguments after the first comma, e.g.
    /// `net_pcap_replay0,rx_pcap=/tmp/in.pcap`.
    ///
    /// The returned port owns the device: dropping it stops and closes the port, then
    /// detaches the device (`rte_eal_hotplug_remove`), so the name can be used again.
    /// If the device does not create an ethdev port of the same name, it is detached
    /// again and an error returned.
    pub fn attach_vdev(devargs: &str) -> Result<Port, DpdkError> {
        let op = || format!("rte_eal_hotplug_add(vdev, {devargs})");
        let (name, args) = devargs.split_once(',').unwrap_or((devargs, ""));
        let cname = CString::new(name).map_err(|_| DpdkError::other(op(), "name contains a NUL byte"))?;
        let cargs = CString::new(args).map_err(|_| DpdkError::other(op(), "arguments contain a NUL byte"))?;
        // SAFETY: EAL initialised (else DPDK reports an error); valid C strings, which
        // DPDK copies.
        check(op, unsafe { dpdk_sys::rte_eal_hotplug_add(VDEV_BUS.as_ptr() as *const c_char, cname.as_ptr(), cargs.as_ptr()) })?;
        match Port::by_name(name) {
            Ok(mut port) => {
                port.attached = true;
                Ok(port)
            }
            Err(e) => {
                detach_vdev(name);
                Err(e)
            }
        }
    }

    /// DPDK's port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The NUMA socket of the device (-1 if unknown).
    pub fn socket(&self) -> i32 {
        // SAFETY: valid port id.
        unsafe { dpdk_sys::rte_eth_dev_socket_id(self.id) }
    }

    /// The device's description from its driver (`rte_eth_dev_info_get`).
    fn info(&self) -> Result<dpdk_sys::rte_eth_dev_info, DpdkError> {
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: valid port id and out-pointer.
        check(|| format!("rte_eth_dev_info_get(port {})", self.id), unsafe {
            dpdk_sys::rte_eth_dev_info_get(self.id, &mut info)
        })?;
        Ok(info)
    }

    /// Most rx and tx queues the device supports.
    pub fn max_queues(&self) -> Result<(u16, u16), DpdkError> {
        let info = self.info()?;
        Ok((info.max_rx_queues, info.max_tx_queues))
    }

    /// The name of the device's driver (e.g. `net_af_packet`, `net_ixgbe`).
    pub fn driver_name(&self) -> Result<String, DpdkError> {
        let info = self.info()?;
        if info.driver_name.is_null() {
            return Ok(String::new());
        }
        // SAFETY: the driver's name is a NUL-terminated string that lives as long as the
        // driver (static in the PMD).
        Ok(unsafe { std::ffi::CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned())
    }

    /// The RSS flow types the device can hash on (0: no RSS).
    pub fn rss_flow_types(&self) -> Result<u64, DpdkError> {
        Ok(self.info()?.flow_type_rss_offloads)
    }

    /// Configures the device and its queues; rx buffers come from `pool`.
    pub fn configure(&mut self, setup: PortSetup, pool: &Mempool) -> Result<(), DpdkError> {
        let id = self.id;
        let (max_rx, max_tx) = self.max_queues()?;
        if setup.rx_queues > max_rx || setup.tx_queues > max_tx {
            return Err(DpdkError::other(
                format!("configure port {id} ({})", self.name),
                format!(
                    "{} rx / {} tx queues asked, the device supports {max_rx} rx / {max_tx} tx",
                    setup.rx_queues, setup.tx_queues
                ),
            ));
        }
        // Jumbo frames: not supported. Every port gets the standard MTU, which limits the
        // longest frame the device accepts (max rx packet length) to what one mbuf
        // holds; scatter rx stays off, so a longer frame is dropped by the device (its
        // rx error counters), never split into a chain bulkhead would mis-handle.
        let room = max_mtu(pool);
        if u32::from(MTU) > room {
            return Err(DpdkError::other(
                format!("configure port {id} ({})", self.name),
                format!("MTU {MTU} needs frames of {} bytes but one mbuf holds {}", u32::from(MTU) + L2_OVERHEAD, pool.frame_room()),
            ));
        }
        let mut conf = dpdk_sys::rte_eth_conf::default();
        conf.rxmode.mtu = u32::from(MTU);
        // Several rx queues on a NIC: spread flows by RSS with a symmetric key, so both
        // directions of a flow land on the same queue (and worker) on either port of a
        // pair. Devices without RSS (af_packet spreads by the kernel's symmetric flow
        // hash, ring, null) report no RSS flow types and are left as they are.
        let mut key = SYMMETRIC_RSS_KEY;
        let rss_hf = RSS_FLOW_TYPES & self.rss_flow_types()?;
        if setup.rx_queues > 1 && rss_hf != 0 {
            conf.rxmode.mq_mode = dpdk_sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
            conf.rx_adv_conf.rss_conf.rss_key_len = key.len() as u8;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        // SAFETY: valid port id and configuration; the key outlives the call (DPDK copies
        // it into the device).
        check(|| format!("rte_eth_dev_configure(port {id} {})", self.name), unsafe {
            dpdk_sys::rte_eth_dev_configure(id, setup.rx_queues, setup.tx_queues, &conf)
        })?;
        let mtu = self.mtu()?;
        if u32::from(mtu) > room {
            return Err(DpdkError::other(
                format!("configure port {id} ({})", self.name),
                format!(
                    "the device runs with MTU {mtu}, above {room}, the most one {}-byte mbuf holds; bulkhead does not handle multi-segment (jumbo) frames",
                    pool.frame_room()
                ),
            ));
        }
        let socket = self.socket().max(0) as u32;
        for q in 0..setup.rx_queues {
            // SAFETY: configured port; NULL rxconf means driver defaults; the pool outlives
            // the port (documented drop order).
            check(|| format!("rte_eth_rx_queue_setup(port {id}, queue {q})"), unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(id, q, setup.rx_descriptors, socket, std::ptr::null(), pool.as_ptr())
            })?;
        }
        for q in 0..setup.tx_queues {
            // SAFETY: configured port; NULL txconf means driver defaults.
            check(|| format!("rte_eth_tx_queue_setup(port {id}, queue {q})"), unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(id, q, setup.tx_descriptors, socket, std::ptr::null())
            })?;
        }
        self.setup = Some(setup);
        Ok(())
    }

    /// The MTU the device is configured with (`rte_eth_dev_get_mtu`).
    pub fn mtu(&self) -> Result<u16, DpdkError> {
        let mut mtu = 0u16;
        // SAFETY: valid port id and out-pointer.
        check(|| format!("rte_eth_dev_get_mtu(port {})", self.id), unsafe { dpdk_sys::rte_eth_dev_get_mtu(self.id, &mut mtu) })?;
        Ok(mtu)
    }

    /// Starts the port (after [`Port::configure`]).
    pub fn start(&mut self) -> Result<(), DpdkError> {
        let setup = self
            .setup
            .ok_or_else(|| DpdkError::other(format!("start port {}", self.id), "port is not configured"))?;
        // SAFETY: configured port.
        check(|| format!("rte_eth_dev_start(port {} {})", self.id, self.name), unsafe {
            dpdk_sys::rte_eth_dev_start(self.id)
        })?;
        self.started = true;
        if setup.promiscuous {
            // SAFETY: started port. Some virtual devices do not support it; not fatal.
            let ret = unsafe { dpdk_sys::rte_eth_promiscuous_enable(self.id) };
            if ret < 0 && ret != -ENOTSUP {
                log::warn!("{}", DpdkError::new(format!("rte_eth_promiscuous_enable(port {})", self.id), ret));
            }
        }
        Ok(())
    }

    /// Stops the port: no more rx or tx.
    pub fn stop(&mut self) -> Result<(), DpdkError> {
        if self.started {
            self.started = false;
            // SAFETY: started port.
            check(|| format!("rte_eth_dev_stop(port {})", self.id), unsafe { dpdk_sys::rte_eth_dev_stop(self.id) })?;
        }
        Ok(())
    }

    /// The driver's statistics.
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        Self::stats_of(self.id)
    }

    /// The link state, without waiting.
    pub fn link(&self) -> Result<Link, DpdkError> {
        Self::link_of(self.id)
    }

    /// The driver's statistics of port `id` (for threads that do not own the port).
    pub fn stats_of(id: u16) -> Result<PortStats, DpdkError> {
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: any id may be asked about; DPDK checks it and fills the out-pointer.
        check(|| format!("rte_eth_stats_get(port {id})"), unsafe { dpdk_sys::rte_eth_stats_get(id, &mut s) })?;
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// The link state of port `id`, without waiting (for threads that do not own the
    /// port, such as the management thread).
    pub fn link_of(id: u16) -> Result<Link, DpdkError> {
        let mut l = dpdk_sys::rte_eth_link::default();
        // SAFETY: any id may be asked about; DPDK checks it and fills the out-pointer.
        check(|| format!("rte_eth_link_get_nowait(port {id})"), unsafe { dpdk_sys::rte_eth_link_get_nowait(id, &mut l) })?;
        Ok(Link { up: l.link_status() != 0, speed_mbps: l.link_speed, full_duplex: l.link_duplex() != 0 })
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Result<[u8; 6], DpdkError> {
        let mut a = dpdk_sys::rte_ether_addr::default();
        // SAFETY: valid port id and out-pointer.
        check(|| format!("rte_eth_macaddr_get(port {})", self.id), unsafe {
            dpdk_sys::rte_eth_macaddr_get(self.id, &mut a)
        })?;
        Ok(a.addr_bytes)
    }

    /// A handle on rx queue `queue`. Each queue must be polled by one thread only: hand
    /// each handle to exactly one worker.
    pub fn rx_queue(&self, queue: u16) -> Result<RxQueue, DpdkError> {
        match self.setup {
            Some(s) if queue < s.rx_queues => Ok(RxQueue { port: self.id, queue }),
            _ => Err(DpdkError::other(format!("rx queue {queue} of port {}", self.id), "no such queue")),
        }
    }

    /// The queue set-up the port was configured with, if it was.
    pub fn setup(&self) -> Option<PortSetup> {
        self.setup
    }

    /// A handle on tx queue `queue`; one thread per queue, as for rx.
    pub fn tx_queue(&self, queue: u16) -> Result<TxQueue, DpdkError> {
        match self.setup {
            Some(s) if queue < s.tx_queues => Ok(TxQueue {
                port: self.id,
                queue,
                syscall_per_burst: self.driver_name().is_ok_and(|d| SYSCALL_TX_DRIVERS.contains(&d.as_str())),
            }),
            _ => Err(DpdkError::other(format!("tx queue {queue} of port {}", self.id), "no such queue")),
        }
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::warn!("{e}");
        }
        if self.setup.is_some() {
            // SAFETY: stopped port; closing releases its queues and their mbufs.
            let ret = unsafe { dpdk_sys::rte_eth_dev_close(self.id) };
            if ret < 0 {
                log::warn!("{}", DpdkError::new(format!("rte_eth_dev_close(port {})", self.id), ret));
            }
        }
        if self.attached {
            detach_vdev(&self.name);
        }
    }
}

/// Removes virtual device `name` from the EAL (its driver releases a port not yet
/// closed); failures are logged.
fn detach_vdev(name: &str) {
    let Ok(cname) = CString::new(name) else { return };
    // SAFETY: valid C strings; the device's port is closed or no Port refers to it.
    let ret = unsafe { dpdk_sys::rte_eal_hotplug_remove(VDEV_BUS.as_ptr() as *const c_char, cname.as_ptr()) };
    if ret < 0 {
        log::warn!("{}", DpdkError::new(format!("rte_eal_hotplug_remove(vdev, {name})"), ret));
    }
}

/// One rx queue of one port. Not `Clone`: one poller per queue.
#[derive(Debug)]
pub struct RxQueue {
    port: u16,
    queue: u16,
}

impl RxQueue {
    /// Port id.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Receives up to the free space in `burst` (at most [`BURST_SIZE`]) packets,
    /// appending them; returns how many arrived.
    #[inline(always)]
    pub fn rx_burst(&mut self, burst: &mut MbufBurst) -> usize {
        let len = burst.len();
        let room = (BURST_SIZE - len) as u16;
        // SAFETY: Mbuf is repr(transparent) over `rte_mbuf *`; the spare capacity of the
        // ArrayVec holds `room` slots; the driver writes `n <= room` owned pointers,
        // which become owned Mbufs when the length is extended.
        unsafe {
            let slots = burst.as_mut_ptr().add(len) as *mut *mut dpdk_sys::rte_mbuf;
            let n = dpdk_sys::bh_eth_rx_burst(self.port, self.queue, slots, room) as usize;
            burst.set_len(len + n);
            n
        }
    }
}

/// Drivers whose transmit is a system call per burst (or per packet): the kernel's
/// packet socket, an XDP socket in copy mode (its `sendto` wake-up), tap device and
/// libpcap.
const SYSCALL_TX_DRIVERS: [&str; 4] = ["net_af_packet", "net_af_xdp", "net_tap", "net_pcap"];

/// One tx queue of one port. Not `Clone`: one transmitter per queue.
#[derive(Debug)]
pub struct TxQueue {
    port: u16,
    queue: u16,
    syscall_per_burst: bool,
}

impl TxQueue {
    /// Port id.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether each [`TxQueue::tx_burst`] costs a system call (af_packet, af_xdp, tap,
    /// pcap devices): there, sending few packets at a time costs far more CPU per packet than
    /// on a NIC or a ring, whose transmit is a doorbell or an enqueue.
    pub fn syscall_per_burst(&self) -> bool {
        self.syscall_per_burst
    }

    /// Offers every packet of `burst` to the NIC. The NIC owns what it accepted; those
    /// leave `burst`, and what it refused stays there, in order, for the caller to
    /// retry or drop. Returns how many were sent.
    #[inline(always)]
    pub fn tx_burst(&mut self, burst: &mut MbufBurst) -> usize {
        let n = burst.len();
        if n == 0 {
            return 0;
        }
        // SAFETY: the burst's storage is an array of `n` owned `rte_mbuf *`; the driver
        // takes ownership of the first `sent`. Those are forgotten (not dropped) by moving
        // the unsent tail to the front and shortening the vector.
        unsafe {
            let ptr = burst.as_mut_ptr() as *mut *mut dpdk_sys::rte_mbuf;
            let sent = dpdk_sys::bh_eth_tx_burst(self.port, self.queue, ptr, n as u16) as usize;
            let sent = sent.min(n);
            if sent > 0 {
                std::ptr::copy(ptr.add(sent), ptr, n - sent);
                burst.set_len(n - sent);
            }
            sent
        }
    }
}
