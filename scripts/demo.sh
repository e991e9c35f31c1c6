#!/usr/bin/env bash
# One command from a fresh Debian machine to a running exporter: installs
# what the demo needs (Go modules; Debian's prometheus, so that the bundled
# alerts can be seen firing), builds the exporter, and runs it against its
# built-in demo cloud on 127.0.0.1. Run as root (ICMP to the demo servers'
# loopback addresses needs raw sockets); Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/goenv.sh
SETUP_PROFILE=demo ./scripts/setup.sh
make build
exec ./openstack-vm-exporter demo "$@"
