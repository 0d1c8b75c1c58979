#!/usr/bin/env bash
# Reserves 2 MiB hugepages for DPDK and mounts hugetlbfs. Idempotent.
#
#   scripts/hugepages.sh [N]        reserve N pages (default 1024 = 2 GiB), mount
#                                   /dev/hugepages if needed, show the status
#   scripts/hugepages.sh status     show the status only
#
# Pages are reserved system-wide (or on NUMA node $NODE if set). Reserving at boot is
# more reliable on a long-running machine (memory fragments): add
# `default_hugepagesz=2M hugepagesz=2M hugepages=1024` to the kernel command line.
# Test-beds and the demo need none of this: they run with `hugepages: false`.
set -euo pipefail

arg=${1:-1024}
MNT=${HUGEPAGES_MOUNT:-/dev/hugepages}
if [ -n "${NODE:-}" ]; then
  NR=/sys/devices/system/node/node$NODE/hugepages/hugepages-2048kB/nr_hugepages
else
  NR=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
fi

status() {
  echo "hugepages: $(grep -E '^HugePages_(Total|Free)|^Hugepagesize' /proc/meminfo | tr -s ' ' | paste -sd ';' -)"
  if mount -t hugetlbfs | grep -q " $MNT "; then echo "hugepages: hugetlbfs mounted on $MNT"; else echo "hugepages: hugetlbfs not mounted on $MNT"; fi
}

if [ "$arg" = status ]; then status; exit 0; fi
case "$arg" in
  '' | *[!0-9]*) echo "usage: $0 [N|status]   (N: number of 2 MiB pages)" >&2; exit 2 ;;
esac

if [ ! -e "$NR" ]; then
  echo "hugepages: $NR does not exist: no 2 MiB hugepage support here (kernel or NUMA node)" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "hugepages: needs root (run with sudo)" >&2
  exit 1
fi
current=$(cat "$NR")
if [ "$current" -ne "$arg" ]; then
  # In a container /sys is usually read-only: say so instead of failing obscurely.
  if ! { echo "$arg" > "$NR"; } 2>/dev/null; then
    echo "hugepages: cannot write $NR (read-only /sys: a container?). Reserve the pages on the host, or run with hugepages: false" >&2
    exit 1
  fi
  got=$(cat "$NR")
  if [ "$got" -lt "$arg" ]; then
    echo "hugepages: asked for $arg pages, the kernel gave $got (memory fragmented? reserve at boot)" >&2
  fi
fi
if ! mount -t hugetlbfs | grep -q " $MNT "; then
  mkdir -p "$MNT"
  if ! mount -t hugetlbfs -o pagesize=2M nodev "$MNT" 2>/dev/null; then
    echo "hugepages: cannot mount hugetlbfs on $MNT (no CAP_SYS_ADMIN: a container?)" >&2
    exit 1
  fi
fi
status
