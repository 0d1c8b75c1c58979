//! Checks `bulkhead run` makes on this machine before it starts the EAL.
//!
//! **Jumbo frames are not supported.** bulkhead does not chain mbufs: every frame must
//! fit in one mbuf (2048 bytes of frame with the default data room), and every port is
//! configured with the standard MTU, [`dataplane::dpdk::MTU`] (1500), which sets the
//! device's longest accepted frame. A PCI NIC then drops longer frames itself (they
//! show in its rx error counters). A kernel interface taken over by a virtual device
//! (`net_af_packet`'s `iface=`) keeps the MTU the kernel gave it, and a larger one
//! would hand bulkhead frames it cannot hold, so start-up is refused with one line
//! naming the interface and the limit.

use std::path::Path;

use dataplane::dpdk::{Mempool, MTU};

use crate::config::{ApplianceConfig, Device};

/// The kernel interface a virtual device takes over (`iface=NAME`), if any.
pub fn kernel_iface(device: &Device) -> Option<&str> {
    match device {
        Device::Pci(_) => None,
        Device::Vdev(s) => s.split(',').skip(1).find_map(|kv| kv.strip_prefix("iface=")),
    }
}

/// Refuses kernel interfaces whose MTU is above [`MTU`]. `sys_class_net` is
/// `/sys/class/net` (a parameter for tests). Interfaces that do not exist yet are
/// skipped: `net_tap` creates its own, with MTU 1500.
pub fn check_kernel_mtus(file: &str, appliance: &ApplianceConfig, sys_class_net: &Path) -> Result<(), String> {
    for (i, port) in appliance.ports.iter().enumerate() {
        let Some(iface) = kernel_iface(&port.device) else { continue };
        let Ok(text) = std::fs::read_to_string(sys_class_net.join(iface).join("mtu")) else { continue };
        let Ok(mtu) = text.trim().parse::<u32>() else { continue };
        if mtu > u32::from(MTU) {
            return Err(format!(
                "{file}: appliance.ports[{i}] ({}): interface {iface} has MTU {mtu}, above {MTU}: bulkhead does not handle jumbo frames \
                 (one {}-byte mbuf per frame, ports run at MTU {MTU}); lower it with `ip link set {iface} mtu {MTU}` \
                 (and on the hosts of that link)",
                port.name,
                Mempool::DEFAULT_FRAME_ROOM
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_kernel_interface_of_a_vdev() {
        assert_eq!(kernel_iface(&Device::Vdev("net_af_packet0,iface=west".into())), Some("west"));
        assert_eq!(kernel_iface(&Device::Vdev("net_tap0,mac=fixed,iface=bh0".into())), Some("bh0"));
        assert_eq!(kernel_iface(&Device::Vdev("net_null0".into())), None);
        assert_eq!(kernel_iface(&Device::Pci("0000:03:00.0".into())), None);
    }

    #[test]
    fn refuses_a_jumbo_mtu_with_one_line() {
        let yaml = "appliance:\n  ports:\n    - {name: a, device: \"net_af_packet0,iface=va\"}\n    - {name: b, device: \"net_tap0,iface=vb\"}\n  pairs: [[a, b]]\n  workers: [0]\nsegments: []\n";
        let config = crate::config::Config::from_yaml_str("x.yaml", yaml).unwrap();
        let appliance = config.appliance.unwrap();
        let sys = tempfile::tempdir().unwrap();
        // vb does not exist yet (net_tap makes it): skipped.
        std::fs::create_dir(sys.path().join("va")).unwrap();
        std::fs::write(sys.path().join("va/mtu"), "1500\n").unwrap();
        assert_eq!(check_kernel_mtus("x.yaml", &appliance, sys.path()), Ok(()));
        std::fs::write(sys.path().join("va/mtu"), "9000\n").unwrap();
        let e = check_kernel_mtus("x.yaml", &appliance, sys.path()).unwrap_err();
        assert!(e.starts_with("x.yaml: appliance.ports[0] (a): interface va has MTU 9000, above 1500"), "{e}");
        assert!(e.contains("ip link set va mtu 1500") && !e.contains('\n'), "{e}");
    }
}
