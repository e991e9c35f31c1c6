#!/usr/bin/env bash
# What probing from network namespaces costs (docs/performance.md): 10,000
# targets over 200 namespaces of 50 addresses against 10,000 in one
# namespace, every target answering (bench/netns/main.go). Needs root; takes
# about a minute; removes its namespaces. Arguments go to bench/netns, e.g.:
#   sudo bench/netns.sh -rounds 3 -count 3
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/goenv.sh
command -v ip >/dev/null || { echo "ip not found: apt-get install -y iproute2 (scripts/setup.sh does)" >&2; exit 2; }
go run ./bench/netns "$@"
