//! The policy-loader harness: shared by the `policy` fuzz target and by
//! `mgmt/tests/fuzz_regressions.rs`, which replays committed inputs.
//!
//! Input: any bytes; what is not UTF-8 is ignored (the loader refuses it before
//! parsing). The text goes through `Config::from_yaml_str` (YAML -> schema -> validated
//! spec); a spec that validates is compiled with `Policy::compile`; a policy that
//! compiles classifies a fixed set of packets, each checked against the reference
//! evaluator. Nothing may panic: a bad file must come back as an error.

use std::sync::OnceLock;

use dataplane::packet::{self, PacketMeta};
use dataplane::policy::{reference, Policy};
use mgmt::config::Config;

/// Parsed metadata of a few frames: TCP, UDP and ICMP over IPv4 (one VLAN-tagged),
/// TCP and ICMPv6 neighbour solicitation over IPv6, ARP, LLC, LLDP.
fn packets() -> &'static [PacketMeta] {
    static P: OnceLock<Vec<PacketMeta>> = OnceLock::new();
    P.get_or_init(|| {
        let eth = |vlan: Option<u16>, ethertype: u16| {
            let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
            if let Some(v) = vlan {
                f.extend_from_slice(&[0x81, 0x00]);
                f.extend_from_slice(&v.to_be_bytes());
            }
            f.extend_from_slice(&ethertype.to_be_bytes());
            f
        };
        let v4 = |vlan, src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]| {
            let mut f = eth(vlan, 0x0800);
            let total = (20 + l4.len()) as u16;
            f.extend_from_slice(&[0x45, 0, total.to_be_bytes()[0], total.to_be_bytes()[1], 0, 1, 0, 0, 64, proto, 0, 0]);
            f.extend_from_slice(&src);
            f.extend_from_slice(&dst);
            f.extend_from_slice(l4);
            f
        };
        let v6 = |src: [u8; 16], dst: [u8; 16], next: u8, l4: &[u8]| {
            let mut f = eth(None, 0x86dd);
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.extend_from_slice(&[next, 64]);
            f.extend_from_slice(&src);
            f.extend_from_slice(&dst);
            f.extend_from_slice(l4);
            f
        };
        let tcp = |sport: u16, dport: u16| {
            let mut h = vec![0u8; 20];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h[12] = 5 << 4;
            h[13] = 0x02;
            h
        };
        let udp = |sport: u16, dport: u16| [&sport.to_be_bytes()[..], &dport.to_be_bytes(), &[0, 8, 0, 0]].concat();
        let a6 = |first: u16, last: u8| {
            let mut a = [0u8; 16];
            a[0..2].copy_from_slice(&first.to_be_bytes());
            a[15] = last;
            a
        };
        let mut arp = eth(None, 0x0806);
        arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 1, 0, 1, 0, 0, 0, 0, 0, 0, 10, 2, 0, 1]);
        let mut llc = eth(None, 0x0026);
        llc.extend_from_slice(&[0x42; 38]);
        let mut lldp = eth(None, 0x88cc);
        lldp.extend_from_slice(&[0; 32]);
        let frames = vec![
            v4(None, [10, 1, 0, 5], [10, 2, 0, 7], 6, &tcp(40000, 8080)),
            v4(None, [10, 1, 0, 5], [10, 2, 0, 7], 17, &udp(40000, 53)),
            v4(None, [192, 168, 1, 1], [8, 8, 8, 8], 1, &[8, 0, 0, 0, 0, 1, 0, 1]),
            v4(Some(100), [10, 3, 0, 1], [172, 16, 0, 1], 6, &tcp(22, 443)),
            v4(None, [10, 10, 1, 10], [10, 10, 3, 10], 6, &tcp(5000, 5432)),
            v6(a6(0xfd00, 1), a6(0x2001, 2), 6, &tcp(1234, 443)),
            v6(a6(0xfe80, 1), a6(0xff02, 1), 58, &[135, 0, 0, 0, 0, 0, 0, 0]),
            arp,
            llc,
            lldp,
        ];
        frames.iter().map(|f| packet::parse(f).expect("the harness's frames parse")).collect()
    })
}

/// Runs one input; panics if an invariant breaks.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = Config::from_yaml_str("fuzz.yaml", text) else { return };
    let Ok(policy) = Policy::compile(&config.policy, 1) else { return };
    for meta in packets() {
        assert_eq!(policy.classify(meta), reference::classify(&config.policy, meta), "classifier vs reference on {meta:?}");
    }
}
