use std::ffi::CStr;
use std::fmt;

/// An error from a DPDK call: which operation failed, DPDK's error code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpdkError {
    /// What was being done, e.g. `rte_eth_dev_configure(port 0)`.
    pub op: String,
    /// Positive errno value (DPDK's `rte_errno` or the negated return value).
    pub errno: i32,
    /// DPDK's description of `errno`.
    pub message: String,
}

impl DpdkError {
    /// An error with code `errno` (sign ignored) from operation `op`.
    pub(crate) fn new(op: impl Into<String>, errno: i32) -> Self {
        let errno = errno.abs();
        // SAFETY: rte_strerror returns a pointer to a static or thread-local string.
        let message = unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(errno)) }
            .to_string_lossy()
            .into_owned();
        DpdkError { op: op.into(), errno, message }
    }

    /// An error from `op` whose code is in `rte_errno`.
    pub(crate) fn from_rte_errno(op: impl Into<String>) -> Self {
        // SAFETY: reads the calling thread's rte_errno.
        let errno = unsafe { dpdk_sys::bh_rte_errno() };
        Self::new(op, errno)
    }

    /// An error that DPDK did not report but the wrapper detected.
    pub(crate) fn other(op: impl Into<String>, message: impl Into<String>) -> Self {
        DpdkError { op: op.into(), errno: 0, message: message.into() }
    }
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.errno == 0 {
            write!(f, "{}: {}", self.op, self.message)
        } else {
            write!(f, "{}: {} (errno {})", self.op, self.message, self.errno)
        }
    }
}

impl std::error::Error for DpdkError {}

/// Turns a DPDK return code (negative errno on failure) into a `Result`.
pub(crate) fn check(op: impl FnOnce() -> String, ret: i32) -> Result<i32, DpdkError> {
    if ret < 0 {
        Err(DpdkError::new(op(), ret))
    } else {
        Ok(ret)
    }
}
