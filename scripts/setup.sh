#!/usr/bin/env bash
# Installs what building, running and testing openstack-vm-exporter needs on
# Debian 12: Go modules, and Debian's packages for the test suite and the
# demo (promtool and Prometheus, Alertmanager, iproute2 and nftables for the
# namespace lab, Keystone, Nova and Neutron for the real-OpenStack tests,
# Open vSwitch, OVN and the OVN metadata agent for the real-OVN tests,
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
    python3-neutron         # the real neutron-server (ML2/OVN) of the OpenStack lab
    openvswitch-switch      # ovsdb-server, ovs-vswitchd (userspace datapath): the OVN hypervisor lab
    ovn-central             # OVN's databases and ovn-northd, under neutron-server
    ovn-host                # ovn-controller: the OVN hypervisor lab
    neutron-ovn-metadata-agent # the real agent that creates the ovnmeta-* namespaces
    haproxy                 # the metadata agent's proxy
    iptables                # the metadata agent runs iptables-save in its namespaces
    iputils-ping            # ping, to check the OVN lab's paths by hand
    ethtool                 # TX checksum offload off on the OVN lab's VM veths
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
  # Debian must not start the services it installs (Open vSwitch, OVN,
  # the metadata agent...): the labs run their own, in their own
  # directories and namespaces. policy-rc.d is how Debian asks; one that
  # exists already (containers ship one) is kept.
  policy_rc=/usr/sbin/policy-rc.d
  made_policy_rc=0
  if [[ ! -e $policy_rc ]]; then
    printf '#!/bin/sh\n# setup.sh: no service starts while packages install\nexit 101\n' >"$policy_rc"
    chmod 755 "$policy_rc"
    made_policy_rc=1
  fi
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if ((made_policy_rc)); then
    rm -f "$policy_rc"
  fi
  # Where a service started anyway (no policy-rc.d honoured), stop it: the
  # project runs its own.
  for svc in prometheus prometheus-alertmanager prometheus-node-exporter victoria-metrics \
    openvswitch-switch ovs-vswitchd ovsdb-server ovn-central ovn-northd ovn-ovsdb-server-nb ovn-ovsdb-server-sb \
    ovn-host ovn-controller neutron-ovn-metadata-agent haproxy; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
      systemctl stop "$svc" || true
    elif [[ -x /etc/init.d/$svc ]] && /etc/init.d/"$svc" status >/dev/null 2>&1; then
      /etc/init.d/"$svc" stop >/dev/null 2>&1 || true
    fi
  done
fi

if ! command -v go >/dev/null; then
  echo "setup: no Go on PATH (need Go 1.21 or later in /usr/local/go/bin or on PATH, to fetch $GOTOOLCHAIN)" >&2
  exit 1
fi
go version # fetches $GOTOOLCHAIN on first use
go mod download
