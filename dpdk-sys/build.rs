//! Generates bindings to the system DPDK and compiles the `bh_*` shim.
//!
//! DPDK is found with `pkg-config libdpdk`. Its cflags are passed whole, to bindgen and
//! to the C compiler alike: they carry `-include rte_config.h` and `-march=...`, which
//! the `pkg-config` crate would drop, and the headers do not compile without them.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn pkg_config(args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .unwrap_or_else(|e| panic!("dpdk-sys: cannot run pkg-config ({e}); run scripts/install-deps.sh"));
    if !out.status.success() {
        panic!(
            "dpdk-sys: `pkg-config {} libdpdk` failed: {}\nInstall DPDK 22.11 (Debian: libdpdk-dev) or run scripts/install-deps.sh",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // Split on whitespace, but keep `-include rte_config.h` together.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut flags = Vec::new();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-include" {
            if let Some(file) = words.next() {
                flags.push(format!("-include{file}"));
            }
        } else {
            flags.push(w.to_string());
        }
    }
    flags
}

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let version = pkg_config(&["--modversion"]);
    println!("cargo:rustc-env=BULKHEAD_DPDK_BUILD_VERSION={}", version.join(" "));

    let mut cflags = pkg_config(&["--cflags"]);
    cflags.push("-D_GNU_SOURCE".into());

    // The shim: C bodies for DPDK's static inline functions.
    let mut cc = cc::Build::new();
    cc.file("shim/shim.c").include("shim").opt_level(3);
    for f in &cflags {
        if let Some(file) = f.strip_prefix("-include") {
            cc.flag("-include").flag(file);
        } else {
            cc.flag(f);
        }
    }
    cc.warnings(false).compile("bulkhead_dpdk_shim");

    // Link DPDK. `--libs` gives -L, -l and linker flags; the net_ring PMD is named
    // explicitly because `rte_eth_from_ring` lives there and pkg-config omits PMDs.
    for f in pkg_config(&["--libs"]) {
        if let Some(lib) = f.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        } else if let Some(dir) = f.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        }
    }
    println!("cargo:rustc-link-lib=dylib=rte_net_ring");

    let bindings = bindgen::Builder::default()
        .header("shim/shim.h")
        // clang takes `-include<file>` as well as `-include <file>`.
        .clang_args(cflags.iter().cloned())
        .clang_arg("-Ishim")
        .allowlist_function("bh_.*")
        .allowlist_function("rte_eal_(init|cleanup|remote_launch|wait_lcore|mp_wait_lcore|process_type|has_hugepages)")
        // Run-time attach and detach of devices (virtual devices: `net_pcap`, ...).
        .allowlist_function("rte_eal_hotplug_(add|remove)")
        .allowlist_function("rte_(lcore_count|get_main_lcore|lcore_is_enabled|lcore_to_socket_id|socket_id|get_next_lcore)")
        .allowlist_function("rte_eth_(dev_configure|dev_info_get|dev_start|dev_stop|dev_close|dev_count_avail|dev_get_port_by_name|dev_get_name_by_port|dev_socket_id|dev_is_valid_port|rx_queue_setup|tx_queue_setup|stats_get|stats_reset|link_get_nowait|promiscuous_enable|macaddr_get|dev_set_mtu|dev_get_mtu|from_ring|from_rings)")
        .allowlist_function("rte_pktmbuf_(pool_create|free_bulk)")
        .allowlist_function("rte_mempool_(avail_count|in_use_count|free|lookup)")
        .allowlist_function("rte_ring_(create|free)")
        .allowlist_function("rte_strerror")
        .allowlist_var("RTE_MAX_LCORE|RTE_MAX_ETHPORTS|RTE_PKTMBUF_HEADROOM|RTE_MBUF_DEFAULT_BUF_SIZE|RING_F_.*|RTE_ETH_.*|SOCKET_ID_ANY|LCORE_ID_ANY")
        .allowlist_type("rte_eth_(conf|dev_info|stats|link|rxconf|txconf)")
        .blocklist_function("rte_lpm_lookupx4")
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("dpdk-sys: bindgen failed on shim/shim.h");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("dpdk-sys: cannot write bindings.rs");
}
