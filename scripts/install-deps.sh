#!/usr/bin/env bash
# Installs what bulkhead needs to build, test and run on Debian 12 (idempotent: packages
# already present are skipped; the Rust toolchain is left alone if cargo is on PATH).
set -euo pipefail

packages=(
  libdpdk-dev dpdk dpdk-dev # DPDK 22.11 LTS: headers, libraries, PMDs, dpdk-devbind.py; dpdk-testpmd
  clang libclang-dev        # bindgen
  pkg-config build-essential
  libpcap-dev               # net_pcap PMD headers (replays)
  iproute2 ethtool iputils-ping   # test-bed: namespaces, veths, offloads, ping
  iperf3 netcat-openbsd tcpdump
  python3 python3-pip
  prometheus rsyslog        # tests: promtool parses the metrics; rsyslogd receives the events
  systemd                   # tests: `systemd-analyze verify` of configs/bulkhead.service
  vagrant                   # tests: `vagrant validate` of vagrant/Vagrantfile (no VM is started)
  nftables netsniff-ng      # benchmarks: nftables beside bulkhead, trafgen (64-byte UDP)
  python3-yaml python3-matplotlib   # benchmarks: policy translation, plots
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: all Debian packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || {
    echo "install-deps: installing the Rust toolchain with rustup"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  }
fi
# The Python Prometheus parser used by the metrics tests (the interpreter on PATH may not
# be Debian's, so install for whichever python3 runs the tests).
python3 -c "import prometheus_client" 2>/dev/null || python3 -m pip install --quiet prometheus_client \
  || echo "install-deps: could not install prometheus_client (promtool still checks the metrics)"
echo "install-deps: DPDK $(pkg-config --modversion libdpdk)"
