use std::ffi::{c_char, CString};
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::DpdkError;

/// Whether `rte_eal_init` has been called in this process: DPDK refuses a second call,
/// even after `rte_eal_cleanup`.
static EAL_INITIALISED: AtomicBool = AtomicBool::new(false);

/// The initialised DPDK environment. One per process; dropping it runs
/// `rte_eal_cleanup` (drop ports and mempools first).
#[derive(Debug)]
pub struct Eal {
    main_lcore: u32,
}

impl Eal {
    /// Initialises the EAL with `args` (without the program name, which is added).
    ///
    /// Fails with a clear error if the EAL was already initialised in this process, if
    /// an argument contains a NUL byte, or if DPDK rejects the arguments.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, DpdkError> {
        if EAL_INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::other(
                "rte_eal_init",
                "the EAL is already initialised in this process (DPDK allows it once)",
            ));
        }
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("bulkhead").expect("static string has no NUL"));
        for a in args {
            let a = a.as_ref();
            owned.push(CString::new(a).map_err(|_| {
                DpdkError::other("rte_eal_init", format!("EAL argument {a:?} contains a NUL byte"))
            })?);
        }
        // rte_eal_init may permute argv; give it its own array of pointers.
        let mut argv: Vec<*mut c_char> = owned.iter().map(|s| s.as_ptr() as *mut c_char).collect();
        let argc = argv.len() as i32;
        // SAFETY: argv points to `argc` valid NUL-terminated strings that outlive the
        // call; DPDK keeps no pointer into them after returning (it strdup's what it keeps).
        let ret = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(DpdkError::from_rte_errno(format!(
                "rte_eal_init({})",
                args.iter().map(|a| a.as_ref()).collect::<Vec<_>>().join(" ")
            )));
        }
        // SAFETY: EAL is initialised.
        let main_lcore = unsafe { dpdk_sys::rte_get_main_lcore() };
        Ok(Eal { main_lcore })
    }

    /// The lcore of the thread that called [`Eal::init`].
    pub fn main_lcore(&self) -> u32 {
        self.main_lcore
    }

    /// All lcores enabled by the `-l`/`-c` argument, main lcore included.
    pub fn lcores(&self) -> Vec<u32> {
        (0..dpdk_sys::RTE_MAX_LCORE)
            // SAFETY: EAL is initialised; any id below RTE_MAX_LCORE is valid to ask.
            .filter(|&id| unsafe { dpdk_sys::rte_lcore_is_enabled(id) } != 0)
            .collect()
    }

    /// The NUMA socket of `lcore`.
    pub fn lcore_socket(&self, lcore: u32) -> i32 {
        // SAFETY: EAL is initialised.
        unsafe { dpdk_sys::rte_lcore_to_socket_id(lcore) as i32 }
    }

    /// Number of ethdev ports the EAL probed (NICs bound to DPDK and `--vdev`s).
    pub fn port_count(&self) -> u16 {
        // SAFETY: EAL is initialised.
        unsafe { dpdk_sys::rte_eth_dev_count_avail() }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: called once, after the owner dropped ports and mempools.
        let ret = unsafe { dpdk_sys::rte_eal_cleanup() };
        if ret < 0 {
            log::warn!("{}", DpdkError::new("rte_eal_cleanup", ret));
        }
    }
}
