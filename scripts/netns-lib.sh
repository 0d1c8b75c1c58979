# Helpers shared by the test-bed scripts (sourced, not run). They act on the network
# namespaces named "$P-<box>" of one test-bed prefix P.

# ns BOX CMD...: run CMD in namespace "$P-BOX".
ns() { ip netns exec "$P-$1" "${@:2}"; }

# no_offload BOX DEV: checksum/segmentation offloads on veths make af_packet see
# oversized or un-checksummed frames; TCP through the appliance then stalls.
no_offload() { ns "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true; }

# remove_namespaces: kill what runs in every "$P-*" namespace and delete them (their
# veths go with them), so teardown leaves nothing behind even after a failed run.
remove_namespaces() {
  local n
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-" || true); do
    ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$n" 2>/dev/null || true
  done
}
