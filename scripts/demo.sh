#!/usr/bin/env bash
# One command from a fresh Debian machine to a running exporter: installs
# what the demo needs (Go modules; Debian's prometheus, so that the bundled
# alerts can be seen firing; iproute2 and nftables for the demo's network),
# builds the exporter, and runs it against its built-in demo cloud on
# 127.0.0.1, whose servers live in network namespaces (198.18.0.0/15) the
# demo builds. Run as root (network namespaces, raw ICMP sockets); Ctrl-C
# stops everything and removes the namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/goenv.sh
SETUP_PROFILE=demo ./scripts/setup.sh
make build
exec ./openstack-vm-exporter demo "$@"
