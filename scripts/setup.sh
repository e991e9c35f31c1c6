#!/usr/bin/env bash
# Installs what building, running and testing openstack-vm-exporter needs on
# Debian 12: Go modules, and Debian's packages for the test suite and the
# demo (promtool and Prometheus, Alertmanager, iproute2 and nftables for the
# namespace lab, Keystone and Nova for the real-OpenStack tests,
# VictoriaMetrics with vmagent and vmalert for the sharded chain, and the
# peers the benchmark compares against). Safe to run again: it installs only
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/goenv.sh

packages=(
  prometheus              # promtool, and the Prometheus of the end-to-end test and demo
  ca-certificates
  make                    # the build (make build), which the demo and the tests use
  iproute2                # ip netns, veth: the namespace lab and the demo's network
  nftables                # packet loss in the lab and in the demo
)
# SETUP_PROFILE=demo installs only what the demo needs.
if [[ "${SETUP_PROFILE:-test}" != demo ]]; then
  packages+=(
    prometheus-alertmanager # Alertmanager and amtool
    python3-keystone        # a real Keystone on loopback
    python3-nova            # the real Nova API on loopback
    systemd                 # systemd-analyze verify for the unit file
    victoria-metrics        # victoria-metrics, vmagent, vmalert: the sharded end-to-end test
  )
fi
if [[ "${WITH_BENCH_PEERS:-0}" == 1 ]]; then
  packages+=(fping prometheus-smokeping-prober prometheus-blackbox-exporter)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: these Debian packages are missing: ${missing[*]}" >&2
    echo "setup: run as root, or: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts these as services where it can; the project runs its own.
  for svc in prometheus prometheus-alertmanager prometheus-node-exporter victoria-metrics; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
      systemctl stop "$svc" || true
    fi
  done
fi

if ! command -v go >/dev/null; then
  echo "setup: no Go on PATH (need Go 1.21 or later in /usr/local/go/bin or on PATH, to fetch $GOTOOLCHAIN)" >&2
  exit 1
fi
go version # fetches $GOTOOLCHAIN on first use
go mod download
