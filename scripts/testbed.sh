#!/usr/bin/env bash
# The network-namespace test-bed: "containers" on both sides of the appliance.
#
#   web (10.10.1.10) --+                                      +-- api (10.10.2.10)
#                      +-- [sw-west] -- west [app] east -- [sw-east] --+
#   ops (10.10.4.10) --+              (bulkhead)              +-- db  (10.10.3.10)
#
# Every box is a network namespace named <prefix>-<box>; sw-* hold a Linux bridge; the
# appliance namespace holds the two ports bulkhead takes over with net_af_packet
# (interfaces `west` and `east`). All hosts share 10.10.0.0/16 and fd10::/16 on one L2
# segment, so forwarding through bulkhead is L2-transparent. Nothing is created outside
# the namespaces, and `down` removes them all (veths die with their namespaces).
#
#   scripts/testbed.sh up   [prefix]   (default prefix: bh)
#   scripts/testbed.sh down [prefix]
#   scripts/testbed.sh list [prefix]
set -euo pipefail

cmd=${1:-}
P=${2:-${BH_PREFIX:-bh}}
HOSTS_WEST=(web ops)
HOSTS_EAST=(api db)
declare -A V4=([web]=10.10.1.10 [api]=10.10.2.10 [db]=10.10.3.10 [ops]=10.10.4.10)
declare -A V6=([web]=fd10:0:1::10 [api]=fd10:0:2::10 [db]=fd10:0:3::10 [ops]=fd10:0:4::10)

# shellcheck source=netns-lib.sh
source "$(dirname "$0")/netns-lib.sh"

up() {
  down quiet
  for n in app sw-west sw-east "${HOSTS_WEST[@]}" "${HOSTS_EAST[@]}"; do
    ip netns add "$P-$n"
    ns "$n" ip link set lo up
  done
  for side in west east; do
    sw="sw-$side"
    ns "$sw" ip link add br0 type bridge
    ns "$sw" ip link set br0 up
    # Where br_netfilter is loaded (Docker hosts), bridged IPv4 goes through netfilter,
    # which reassembles fragments: the appliance would see one oversized frame.
    ns "$sw" sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 \
      net.bridge.bridge-nf-call-arptables=0 2>/dev/null || true
    # Uplink: appliance port <-> bridge
    ip link add "$P-$side" netns "$P-app" type veth peer name uplink netns "$P-$sw"
    ns app ip link set "$P-$side" name "$side"
    ns app sysctl -qw "net.ipv6.conf.$side.disable_ipv6=1"
    ns app ip link set "$side" up
    ns "$sw" ip link set uplink master br0 up
    no_offload app "$side"
    no_offload "$sw" uplink
  done
  for h in "${HOSTS_WEST[@]}" "${HOSTS_EAST[@]}"; do
    if [[ " ${HOSTS_WEST[*]} " == *" $h "* ]]; then sw=sw-west; else sw=sw-east; fi
    ip link add "$P-$h" netns "$P-$h" type veth peer name "$h" netns "$P-$sw"
    ns "$h" ip link set "$P-$h" name eth0
    ns "$h" ip addr add "${V4[$h]}/16" dev eth0
    ns "$h" ip addr add "${V6[$h]}/16" dev eth0 nodad
    ns "$h" ip link set eth0 up
    ns "$sw" ip link set "$h" master br0 up
    no_offload "$h" eth0
    no_offload "$sw" "$h"
  done
  echo "testbed $P: up ($(ip netns list | grep -c "^$P-") namespaces)"
}

down() {
  local quiet=${1:-}
  remove_namespaces
  [ -n "$quiet" ] || echo "testbed $P: down"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  list) ip netns list | grep "^$P-" || true ;;
  *) echo "usage: $0 up|down|list [prefix]" >&2; exit 2 ;;
esac
