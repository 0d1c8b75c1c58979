//! Running closures on EAL lcores. The EAL pins each lcore's thread to its CPU; a
//! closure launched here runs on that pinned thread until it returns.

use std::ffi::c_void;

use super::error::DpdkError;

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

unsafe extern "C" fn trampoline(arg: *mut c_void) -> i32 {
    // SAFETY: `arg` is the Box<Job> leaked by `launch`, handed to exactly one lcore.
    let job: Box<Job> = unsafe { Box::from_raw(arg as *mut Job) };
    // A panic must not unwind into C: it ends the job with -1.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or(-1)
}

/// A closure running on an lcore; [`Launched::wait`] joins it.
#[derive(Debug)]
#[must_use = "an lcore that is never waited for keeps running"]
pub struct Launched {
    lcore: u32,
}

impl Launched {
    /// The lcore it runs on.
    pub fn lcore(&self) -> u32 {
        self.lcore
    }

    /// Waits for the closure to return and gives its return value (-1 if it panicked).
    pub fn wait(self) -> i32 {
        // SAFETY: called from the main lcore for a launched worker lcore.
        unsafe { dpdk_sys::rte_eal_wait_lcore(self.lcore) }
    }
}

/// Runs `job` on worker lcore `lcore` (not the main lcore, which is the caller).
pub fn launch<F>(lcore: u32, job: F) -> Result<Launched, DpdkError>
where
    F: FnOnce() -> i32 + Send + 'static,
{
    let boxed: Box<Job> = Box::new(Box::new(job));
    let arg = Box::into_raw(boxed) as *mut c_void;
    // SAFETY: EAL initialised; trampoline takes ownership of `arg` if the launch succeeds.
    let ret = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if ret < 0 {
        // SAFETY: the launch failed, so the lcore never saw `arg`; reclaim it.
        drop(unsafe { Box::from_raw(arg as *mut Job) });
        return Err(DpdkError::new(format!("rte_eal_remote_launch(lcore {lcore})"), ret));
    }
    Ok(Launched { lcore })
}

/// The lcore id of the calling thread (`u32::MAX` for a non-EAL thread).
pub fn current() -> u32 {
    // SAFETY: reads a thread-local.
    unsafe { dpdk_sys::bh_lcore_id() }
}
