#!/usr/bin/env bash
# Hands NIC ports to DPDK (vfio-pci) and gives them back to their kernel driver. Wraps
# dpdk-devbind.py (Debian package `dpdk`).
#
#   scripts/bind-nics.sh status
#   scripts/bind-nics.sh bind   [-n] PCI...   modprobe vfio-pci, bind PCI... to it; the
#                                             kernel driver of each is remembered in
#                                             $STATE_DIR for `unbind`
#   scripts/bind-nics.sh unbind [-n] PCI...   back to the remembered (or given with
#                                             DRIVER=...) kernel driver
#   -n: dry run, print the commands only
#
# Never bind the NIC you manage the machine through: it leaves the kernel, and so does
# your SSH session. dpdk-devbind.py refuses to unbind an interface with routes unless
# forced; this script never forces.
set -euo pipefail

STATE_DIR=${STATE_DIR:-/run/bulkhead/nics}
DEVBIND=${DEVBIND:-$(command -v dpdk-devbind.py || command -v dpdk-devbind || true)}
cmd=${1:-}
shift || true
dry=""
if [ "${1:-}" = -n ]; then dry=1; shift; fi

run() {
  if [ -n "$dry" ]; then echo "+ $*"; else "$@"; fi
}

need_devbind() {
  [ -n "$DEVBIND" ] || { echo "bind-nics: dpdk-devbind.py not found (apt-get install dpdk)" >&2; exit 1; }
}

pci_ok() {
  [[ "$1" =~ ^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$ ]] || { echo "bind-nics: not a PCI address: $1" >&2; exit 2; }
}

full() { if [[ "$1" == ????:* ]]; then echo "$1"; else echo "0000:$1"; fi; }

current_driver() {
  local link=/sys/bus/pci/devices/$1/driver
  [ -e "$link" ] && basename "$(readlink "$link")" || echo ""
}

case "$cmd" in
  status)
    need_devbind
    run "$DEVBIND" --status-dev net
    ;;
  bind)
    [ $# -gt 0 ] || { echo "usage: $0 bind [-n] PCI..." >&2; exit 2; }
    for p in "$@"; do pci_ok "$p"; done
    need_devbind
    run modprobe vfio-pci
    [ -n "$dry" ] || mkdir -p "$STATE_DIR"
    for p in "$@"; do
      p=$(full "$p")
      drv=$(current_driver "$p")
      if [ "$drv" = vfio-pci ]; then echo "bind-nics: $p already on vfio-pci"; continue; fi
      if [ -n "$drv" ]; then
        if [ -n "$dry" ]; then echo "+ echo $drv > $STATE_DIR/$p"; else echo "$drv" > "$STATE_DIR/$p"; fi
      fi
      run "$DEVBIND" -b vfio-pci "$p"
    done
    ;;
  unbind)
    [ $# -gt 0 ] || { echo "usage: $0 unbind [-n] PCI..." >&2; exit 2; }
    for p in "$@"; do pci_ok "$p"; done
    need_devbind
    for p in "$@"; do
      p=$(full "$p")
      drv=${DRIVER:-$(cat "$STATE_DIR/$p" 2>/dev/null || true)}
      if [ -z "$drv" ]; then
        echo "bind-nics: kernel driver of $p unknown (not bound by this script); give it: DRIVER=ixgbe $0 unbind $p" >&2
        exit 1
      fi
      run "$DEVBIND" -b "$drv" "$p"
      [ -n "$dry" ] || rm -f "$STATE_DIR/$p"
    done
    ;;
  *)
    echo "usage: $0 status | bind [-n] PCI... | unbind [-n] PCI..." >&2
    exit 2
    ;;
esac
