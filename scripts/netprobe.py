#!/usr/bin/env python3
"""Bounded traffic probes for the test-bed: every mode stops by itself.

  tcp-server --port P [--timeout S]            accept one connection, read to EOF,
                                               print "<bytes> <sha256>"
  tcp-client --host H --port P --bytes N [--timeout S]
                                               connect, send N deterministic bytes,
                                               print "<bytes> <sha256>"; exit 1 on failure
  udp-server --port P [--timeout S] [--count N] echo up to N datagrams back, then exit
  udp-client --host H --port P [--count N] [--size B] [--timeout S]
                                               send N datagrams, print how many echoes came back
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
        print(total, h.hexdigest(), flush=True)
        return 0


def tcp_client(a):
    data = payload(a.bytes)
    try:
        with socket.create_connection((a.host, a.port), timeout=a.timeout) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(a.timeout)
            s.recv(1)
    except OSError as e:
        print("failed", e, flush=True)
        return 1
    print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
    return 0


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
    a = p.parse_args()
    return {"tcp-server": tcp_server, "tcp-client": tcp_client, "udp-server": udp_server, "udp-client": udp_client}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
