#!/usr/bin/env python3
"""Bounded traffic probes for the test-bed: every mode stops by itself.

  tcp-server --port P [--timeout S]            accept one connection, read to EOF,
                                               print "<bytes> <sha256>"
  tcp-client --host H --port P --bytes N [--timeout S]
                                               connect, send N deterministic bytes,
                                               print "<bytes> <sha256>"; exit 1 on failure
  udp-server --port P [--timeout S] [--count N] echo up to N datagrams back, then exit
  udp-client --host H --port P [--sport S] [--count N] [--size B] [--timeout S]
                                               send N datagrams, print how many echoes came back
  udp-refused --host H --port P --sport S [--count N] [--timeout S]
                                               from source ports S..S+N-1, one datagram each
                                               to a closed port; print how many came back
                                               refused (an ICMP port unreachable arrived)
  syn-flood --iface I --src A --dst A --dport P --count N [--seconds S]
                                               send N TCP SYNs from random source ports
                                               (raw frames, broadcast MAC), at most S seconds
  vlan-ping --iface I --dst-mac M --vlan V --src A --dst A [--count N]
                                               send N ICMP echo requests in raw frames
                                               tagged with 802.1Q VLAN V (for kernels
                                               without VLAN sub-interfaces), 0.1 s apart
The TCP server answers with "<bytes> <sha256>" once it has read everything, and the
client checks that answer: data flows both ways on the connection.
Exit status 0 on success, 1 when the peer could not be reached in time.
"""
import argparse
import hashlib
import socket
import sys
import time


def payload(n):
    block = bytes(range(256)) * 64  # 16 KiB, deterministic
    out = bytearray()
    while len(out) < n:
        out += block
    return bytes(out[:n])


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def tcp_server(a):
    fam = socket.AF_INET6 if a.ipv6 else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::" if a.ipv6 else "0.0.0.0", a.port))
        s.listen(1)
        s.settimeout(a.timeout)
        try:
            conn, _ = s.accept()
        except socket.timeout:
            print("timeout", flush=True)
            return 1
        conn.settimeout(a.timeout)
        h, total = hashlib.sha256(), 0
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except socket.timeout:
                    print("timeout", flush=True)
                    return 1
                if not chunk:
                    break
                h.update(chunk)
                total += len(chunk)
            answer = f"{total} {h.hexdigest()}"
            try:
                conn.sendall(answer.encode() + b"\n")
            except OSError:
                pass
        print(answer, flush=True)
        return 0


def tcp_client(a):
    data = payload(a.bytes)
    try:
        with socket.create_connection((a.host, a.port), timeout=a.timeout) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(a.timeout)
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = s.recv(256)
                if not chunk:
                    break
                answer += chunk
    except OSError as e:
        print("failed", e, flush=True)
        return 1
    mine = f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    print(mine, flush=True)
    return 0 if answer.decode(errors="replace").strip() == mine else 1


def udp_server(a):
    fam = socket.AF_INET6 if a.ipv6 else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.bind(("::" if a.ipv6 else "0.0.0.0", a.port))
        deadline = time.monotonic() + a.timeout
        served = 0
        while served < a.count and time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data, peer = s.recvfrom(65535)
            except socket.timeout:
                break
            s.sendto(data, peer)
            served += 1
        print(served, flush=True)
        return 0


def udp_client(a):
    with socket.socket(family(a.host), socket.SOCK_DGRAM) as s:
        if a.sport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::" if ":" in a.host else "0.0.0.0", a.sport))
        s.settimeout(a.timeout)
        got = 0
        for i in range(a.count):
            msg = payload(a.size)
            try:
                s.sendto(msg, (a.host, a.port))
                data, _ = s.recvfrom(65535)
                if data == msg:
                    got += 1
            except OSError:
                pass
        print(got, flush=True)
        return 0 if got == a.count else 1


def udp_refused(a):
    refused = 0
    for sport in range(a.sport, a.sport + a.count):
        with socket.socket(family(a.host), socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::" if ":" in a.host else "0.0.0.0", sport))
            # Connected: the ICMP error of the datagram is reported to the next recv.
            s.connect((a.host, a.port))
            s.settimeout(a.timeout)
            start = time.monotonic()
            try:
                s.send(b"is anybody there")
                s.recv(65535)
                print(f"source port {sport}: an answer came", file=sys.stderr)
            except ConnectionRefusedError:
                refused += 1
            except OSError as e:
                print(f"source port {sport}: {e} after {time.monotonic() - start:.3f} s", file=sys.stderr)
    print(refused, flush=True)
    return 0 if refused == a.count else 1


def syn_flood(a):
    import random
    import struct
    with open(f"/sys/class/net/{a.iface}/address") as f:
        src_mac = bytes.fromhex(f.read().strip().replace(":", ""))
    src = socket.inet_aton(a.src)
    dst = socket.inet_aton(a.dst)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.iface, 0))
    deadline = time.monotonic() + a.seconds
    sent = 0
    rnd = random.Random(7)
    while sent < a.count and time.monotonic() < deadline:
        sport = rnd.randrange(1024, 65535)
        tcp = struct.pack("!HHIIBBHHH", sport, a.dport, rnd.getrandbits(32), 0, 5 << 4, 0x02, 65535, 0, 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst)
        # A bridge with br_netfilter drops IPv4 frames whose header checksum is wrong.
        words = sum(struct.unpack("!10H", ip))
        words = (words & 0xFFFF) + (words >> 16)
        ip = ip[:10] + struct.pack("!H", ~((words & 0xFFFF) + (words >> 16)) & 0xFFFF) + ip[12:]
        s.send(b"\xff" * 6 + src_mac + b"\x08\x00" + ip + tcp)
        sent += 1
    print(sent, flush=True)
    return 0


def ip_checksum(data):
    import struct
    if len(data) % 2:
        data += b"\0"
    words = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while words >> 16:
        words = (words & 0xFFFF) + (words >> 16)
    return ~words & 0xFFFF


def vlan_ping(a):
    import struct
    with open(f"/sys/class/net/{a.iface}/address") as f:
        src_mac = bytes.fromhex(f.read().strip().replace(":", ""))
    dst_mac = bytes.fromhex(a.dst_mac.replace(":", ""))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.iface, 0))
    for seq in range(a.count):
        icmp = struct.pack("!BBHHH", 8, 0, 0, 0x4268, seq) + b"bulkhead-vlan-probe"
        icmp = icmp[:2] + struct.pack("!H", ip_checksum(icmp)) + icmp[4:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq, 0, 64, 1, 0,
                         socket.inet_aton(a.src), socket.inet_aton(a.dst))
        ip = ip[:10] + struct.pack("!H", ip_checksum(ip)) + ip[12:]
        tag = struct.pack("!HH", 0x8100, a.vlan & 0x0FFF)
        s.send(dst_mac + src_mac + tag + b"\x08\x00" + ip + icmp)
        time.sleep(0.1)
    print(a.count, flush=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    for name in ("tcp-server", "udp-server"):
        q = sub.add_parser(name)
        q.add_argument("--port", type=int, required=True)
        q.add_argument("--timeout", type=float, default=10)
        q.add_argument("--count", type=int, default=1)
        q.add_argument("--ipv6", action="store_true")
    q = sub.add_parser("tcp-client")
    q.add_argument("--host", required=True)
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--bytes", type=int, default=1 << 20)
    q.add_argument("--timeout", type=float, default=10)
    q = sub.add_parser("udp-client")
    q.add_argument("--host", required=True)
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--count", type=int, default=1)
    q.add_argument("--size", type=int, default=64)
    q.add_argument("--timeout", type=float, default=1)
    q.add_argument("--sport", type=int, default=0)
    q = sub.add_parser("udp-refused")
    q.add_argument("--host", required=True)
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--sport", type=int, required=True)
    q.add_argument("--count", type=int, default=1)
    q.add_argument("--timeout", type=float, default=1)
    q = sub.add_parser("syn-flood")
    q.add_argument("--iface", required=True)
    q.add_argument("--src", required=True)
    q.add_argument("--dst", required=True)
    q.add_argument("--dport", type=int, required=True)
    q.add_argument("--count", type=int, default=10000)
    q.add_argument("--seconds", type=float, default=10)
    q = sub.add_parser("vlan-ping")
    q.add_argument("--iface", required=True)
    q.add_argument("--dst-mac", required=True)
    q.add_argument("--vlan", type=int, required=True)
    q.add_argument("--src", required=True)
    q.add_argument("--dst", required=True)
    q.add_argument("--count", type=int, default=3)
    a = p.parse_args()
    modes = {"tcp-server": tcp_server, "tcp-client": tcp_client, "udp-server": udp_server,
             "udp-client": udp_client, "udp-refused": udp_refused, "syn-flood": syn_flood,
             "vlan-ping": vlan_ping}
    return modes[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
