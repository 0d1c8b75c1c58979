#!/usr/bin/env bash
# The gateway-host test-bed: bulkhead between a host's NIC and the host's own kernel,
# built from network namespaces.
#
#   [up] client 192.168.60.1/24          the upstream network (a router, an admin, ...)
#        route 10.20.0.0/16 via 192.168.60.2
#          |  veth
#   [host] nic0      the host's "NIC": bulkhead takes it with net_af_packet
#          bh0       the kernel-facing exception port: net_tap, created by bulkhead
#                    when it starts; `attach` moves the host's address here
#          br0 10.20.1.1/24, ip_forward=1: the host routes for its containers
#          |  veths
#   [web] 10.20.1.10/24 gw 10.20.1.1     [db] 10.20.1.20/24 gw 10.20.1.1
#
# Traffic from the client to a container crosses nic0 -> bulkhead -> bh0 -> the host's
# routing -> br0 -> the container, and back the same way.
#
#   scripts/testbed-gateway.sh up     [prefix]  namespaces; the host's address on nic0
#                                               (the host as it was before bulkhead)
#   scripts/testbed-gateway.sh attach [prefix]  after bulkhead has started in
#                                               <prefix>-host: move the address and the
#                                               default route from nic0 to bh0
#   scripts/testbed-gateway.sh detach [prefix]  move them back to nic0 (bulkhead stopped
#                                               or not)
#   scripts/testbed-gateway.sh down   [prefix]  remove every namespace (and its processes)
#   scripts/testbed-gateway.sh list   [prefix]
#
# Run bulkhead in the host namespace (see configs/gateway-testbed.yaml):
#   ip netns exec <prefix>-host bulkhead run --config configs/gateway-testbed.yaml
# Nothing is created outside the namespaces (default prefix: gw).
set -euo pipefail

cmd=${1:-}
P=${2:-${BH_PREFIX:-gw}}
HOST_ADDR=192.168.60.2/24
# The host's MAC: nic0 has it before bulkhead, and configs/gateway-testbed.yaml gives it
# to the tap (net_tap's mac=), so upstream neighbours need not re-learn the host.
HOST_MAC=02:60:00:00:00:02
UPSTREAM=192.168.60.1
CONTAINERS=(web db)
declare -A V4=([web]=10.20.1.10 [db]=10.20.1.20)

# shellcheck source=netns-lib.sh
source "$(dirname "$0")/netns-lib.sh"


up() {
  down quiet
  for n in up host "${CONTAINERS[@]}"; do
    ip netns add "$P-$n"
    ns "$n" ip link set lo up
  done
  # The upstream link: client eth0 <-> the host's NIC.
  ip link add "$P-nic0" netns "$P-host" type veth peer name eth0 netns "$P-up"
  ns host ip link set "$P-nic0" name nic0
  ns host ip link set nic0 address "$HOST_MAC"
  ns host sysctl -qw net.ipv6.conf.nic0.disable_ipv6=1
  ns host ip link set nic0 up
  ns up ip addr add "$UPSTREAM/24" dev eth0
  ns up sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1
  ns up ip link set eth0 up
  ns up ip route add 10.20.0.0/16 via "${HOST_ADDR%/*}"
  no_offload host nic0
  no_offload up eth0
  # The host: routing for its containers behind a bridge.
  ns host sysctl -qw net.ipv4.ip_forward=1
  ns host ip link add br0 type bridge
  ns host ip addr add 10.20.1.1/24 dev br0
  ns host ip link set br0 up
  ns host sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null || true
  for c in "${CONTAINERS[@]}"; do
    ip link add "$P-$c" netns "$P-$c" type veth peer name "$c" netns "$P-host"
    ns "$c" ip link set "$P-$c" name eth0
    ns "$c" ip addr add "${V4[$c]}/24" dev eth0
    ns "$c" sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1
    ns "$c" ip link set eth0 up
    ns "$c" ip route add default via 10.20.1.1
    ns host ip link set "$c" master br0 up
    no_offload "$c" eth0
    no_offload host "$c"
  done
  # Before bulkhead: the host's address and default route on its NIC.
  detach quiet
  echo "testbed-gateway $P: up ($(ip netns list | grep -c "^$P-") namespaces)"
}

# The operator's move, as docs/deployments.md describes it for a real host.
attach() {
  local i
  for i in $(seq 50); do ns host ip link show bh0 >/dev/null 2>&1 && break; sleep 0.1; done
  ns host ip link show bh0 >/dev/null 2>&1 || { echo "testbed-gateway $P: no bh0: is bulkhead running in $P-host?" >&2; exit 1; }
  ns host ip addr flush dev nic0
  # nic0 stays up for af_packet, but the host's kernel must neither answer nor route
  # what arrives on it, or traffic would bypass bulkhead: no ARP, no IPv6, no
  # forwarding from it, strict reverse-path filter (the host's address now lives on
  # bh0). On real hardware none of this is needed: the NIC left the kernel when it was
  # bound to vfio-pci.
  ns host ip link set nic0 arp off
  ns host sysctl -qw net.ipv4.conf.nic0.forwarding=0 net.ipv4.conf.nic0.rp_filter=1
  ns host sysctl -qw net.ipv6.conf.bh0.disable_ipv6=1
  no_offload host bh0
  ns host ip addr add "$HOST_ADDR" dev bh0
  ns host ip link set bh0 up
  ns host ip route replace default via "$UPSTREAM" dev bh0
  echo "testbed-gateway $P: host address on bh0"
}

detach() {
  if ns host ip link show bh0 >/dev/null 2>&1; then ns host ip addr flush dev bh0; fi
  ns host ip addr flush dev nic0
  ns host ip link set nic0 arp on
  ns host sysctl -qw net.ipv4.conf.nic0.forwarding=1 net.ipv4.conf.nic0.rp_filter=0
  ns host ip addr add "$HOST_ADDR" dev nic0
  ns host ip route replace default via "$UPSTREAM" dev nic0
  [ "${1:-}" = quiet ] || echo "testbed-gateway $P: host address on nic0"
}

down() {
  local quiet=${1:-}
  remove_namespaces
  [ -n "$quiet" ] || echo "testbed-gateway $P: down"
}

case "$cmd" in
  up) up ;;
  attach) attach ;;
  detach) detach ;;
  down) down ;;
  list) ip netns list | grep "^$P-" || true ;;
  *) echo "usage: $0 up|attach|detach|down|list [prefix]" >&2; exit 2 ;;
esac
