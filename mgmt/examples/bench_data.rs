//! Writes the data of the full-policy forwarding benchmark (scripts/bench.sh):
//! `policy.yaml` (the synthetic large policy: 1,000 segments, 10,000 CIDRs, 1,000 rules)
//! and `traffic-0.pcap` / `traffic-1.pcap` (packets with a realistic address mix drawn
//! from it, one file per direction), for `net_pcap,rx_pcap=...,infinite_rx=1` ports.
//!
//! Usage: cargo run --release -p mgmt --example bench_data -- OUT_DIR [PACKETS] [RULES]
//!
//! Flows mode, for the conntrack forwarding benchmark (`bench_forwarding.py --scenario
//! flows`): `bench_data -- OUT_DIR --flows N` writes the same `policy.yaml` and two pcaps
//! of N/2 packets each where every packet is a distinct UDP flow (the address mix of
//! the policy scenario, only flows the policy allows, no flow in both files either way
//! round): replayed with `infinite_rx`, the first pass through the files creates N flows
//! (UDP pseudo-connections start on any packet) and every later packet is a hit on an
//! established flow of a table holding N.
//!
//! Every frame is parsed back; only frames that parse to exactly the description they
//! were built from are written, so the benchmark measures what it says.

use std::io::Write as _;
use std::net::IpAddr;

use dataplane::packet::{self, Fragment, PacketMeta, L4};
use dataplane::policy::synth::{self, Params};
use dataplane::policy::{Action, Policy, ProtocolMatch};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(args.get(1).expect("usage: bench_data OUT_DIR [PACKETS] [RULES]"));
    let flows: Option<usize> = (args.get(2).map(String::as_str) == Some("--flows"))
        .then(|| args.get(3).and_then(|s| s.parse().ok()).expect("usage: bench_data OUT_DIR --flows N"));
    let packets: usize = match flows {
        Some(_) => 0,
        None => args.get(2).map_or(2048, |s| s.parse().expect("PACKETS")),
    };
    let mut params = Params::large();
    if let (None, Some(rules)) = (flows, args.get(3)) {
        params.rules = rules.parse().expect("RULES");
    }
    std::fs::create_dir_all(&out).expect("create OUT_DIR");
    let mut spec = synth::policy(1, &params);
    // The synthetic generator also makes rules the YAML refuses (ports with protocol
    // `any`, ICMP types with a non-ICMP protocol): leave those out.
    let ports_ok = |p: ProtocolMatch| matches!(p, ProtocolMatch::Number(6 | 17 | 132));
    let icmp_ok = |p: ProtocolMatch| matches!(p, ProtocolMatch::Number(1 | 58));
    spec.rules.retain(|r| {
        (r.dst_ports.is_empty() && r.src_ports.is_empty() || ports_ok(r.protocol))
            && (r.icmp_types.is_empty() || icmp_ok(r.protocol))
    });
    for s in &mut spec.segments {
        s.vlans.sort_unstable();
        s.vlans.dedup();
    }
    for r in &mut spec.rules {
        r.icmp_types.sort_unstable();
        r.icmp_types.dedup();
        for ports in [&mut r.dst_ports, &mut r.src_ports] {
            ports.sort_unstable_by_key(|p| (p.lo, p.hi));
            ports.dedup();
        }
    }
    // Forwarding is what is measured: traffic no rule denies passes, as through an
    // appliance in service, while every packet is still looked up and matched in full.
    spec.default_action = Action::Allow;
    spec.intra_segment_default = Action::Allow;
    std::fs::write(out.join("policy.yaml"), mgmt::learn::policy_yaml(&spec)).expect("write policy.yaml");
    let policy = Policy::compile(&spec, 1).expect("the synthetic policy compiles");
    if let Some(n) = flows {
        write_flows(&out, &spec, &policy, n);
        return;
    }

    for (file, seed) in [("traffic-0.pcap", 11), ("traffic-1.pcap", 12)] {
        // Fragments and the generator's few impossible packets (an SCTP header-less
        // packet, say) are left out: every frame written parses back to its description.
        let mut pcap = pcap_header();
        let (mut written, mut allowed) = (0, 0);
        for m in synth::traffic(&spec, seed, packets * 2, 0.95, 0.02) {
            if written == packets || m.fragment != Fragment::None {
                continue;
            }
            let frame = frame(&m);
            if packet::parse(&frame).as_ref() != Ok(&m) {
                continue;
            }
            allowed += usize::from(policy.classify(&m).verdict.is_allow());
            written += 1;
            pcap_record(&mut pcap, &frame);
        }
        std::fs::File::create(out.join(file)).and_then(|mut f| f.write_all(&pcap)).expect("write pcap");
        eprintln!("{file}: {written} packets, {allowed} allowed by the policy");
    }
}

/// Flows mode: `n` distinct allowed UDP flows, one packet each, half in each pcap.
fn write_flows(out: &std::path::Path, spec: &dataplane::policy::PolicySpec, policy: &Policy, n: usize) {
    let mut seen = std::collections::HashSet::new();
    let mut seed = 100;
    for (file, count) in [("traffic-0.pcap", n / 2), ("traffic-1.pcap", n - n / 2)] {
        let mut pcap = pcap_header();
        let mut written = 0;
        while written < count {
            for mut m in synth::traffic(spec, seed, 100_000, 0.95, 0.0) {
                let (Some((src, dst)), L4::Ports { src: sp, dst: dp }) = (m.addrs, m.l4) else { continue };
                if written == count || m.fragment != Fragment::None {
                    continue;
                }
                m.proto = packet::proto::UDP;
                m.tcp_flags = 0;
                // The flow key conntrack uses: both endpoints in order, VLANs.
                let (a, b) = if (src, sp) <= (dst, dp) { ((src, sp), (dst, dp)) } else { ((dst, dp), (src, sp)) };
                let frame = frame(&m);
                if packet::parse(&frame).as_ref() != Ok(&m)
                    || !policy.classify(&m).verdict.is_allow()
                    || !seen.insert((a, b, m.outer_vlan, m.inner_vlan))
                {
                    continue;
                }
                written += 1;
                pcap_record(&mut pcap, &frame);
            }
            seed += 1;
        }
        std::fs::File::create(out.join(file)).and_then(|mut f| f.write_all(&pcap)).expect("write pcap");
        eprintln!("{file}: {written} packets, each a distinct UDP flow the policy allows");
    }
}

/// An Ethernet frame that parses to `m` (checksums zero: nothing on the path checks them).
fn frame(m: &PacketMeta) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    let tags = [m.outer_vlan, m.inner_vlan];
    for (i, vid) in tags.iter().enumerate() {
        if let Some(vid) = vid {
            let tpid: u16 = if i == 0 && m.inner_vlan.is_some() { 0x88a8 } else { 0x8100 };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
    }
    f.extend_from_slice(&m.ethertype.to_be_bytes());
    let Some((src, dst)) = m.addrs else {
        f.resize(f.len() + 46, 0);
        return f;
    };
    let l4 = l4_header(m);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + l4.len()) as u16;
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0, 64, m.proto, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.extend_from_slice(&[m.proto, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed address families"),
    }
    f.extend_from_slice(&l4);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

fn l4_header(m: &PacketMeta) -> Vec<u8> {
    match m.l4 {
        L4::Ports { src, dst } => {
            let mut h = Vec::new();
            h.extend_from_slice(&src.to_be_bytes());
            h.extend_from_slice(&dst.to_be_bytes());
            match m.proto {
                packet::proto::TCP => {
                    h.extend_from_slice(&[0; 8]);
                    h.extend_from_slice(&[5 << 4, m.tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
                }
                packet::proto::UDP => h.extend_from_slice(&[0, 8, 0, 0]),
                _ => h.extend_from_slice(&[0; 8]), // SCTP common header
            }
            h
        }
        L4::Icmp { ty, code, id } => {
            let id = id.to_be_bytes();
            vec![ty, code, 0, 0, id[0], id[1], 0, 0]
        }
        L4::None => Vec::new(),
    }
}

fn pcap_header() -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    h
}

fn pcap_record(out: &mut Vec<u8>, frame: &[u8]) {
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(frame);
}
