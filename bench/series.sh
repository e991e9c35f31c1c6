#!/usr/bin/env bash
# The series budget of docs/scaling.md: builds the exporter and measures the
# series and bytes of its real /metrics per VM, per address, per host and per
# exporter, with each knob (bench/series/main.go). Needs root (namespace lab,
# raw sockets). Arguments go to bench/series, e.g.:
#   sudo bench/series.sh -n 1000,10000
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/goenv.sh
./scripts/setup.sh
bin=$(mktemp -d)/openstack-vm-exporter
trap 'rm -rf "$(dirname "$bin")"' EXIT
make build >/dev/null && mv openstack-vm-exporter "$bin"
go run ./bench/series -binary "$bin" "$@"
