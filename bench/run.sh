#!/usr/bin/env bash
# The benchmark harness: builds the exporter, and measures it beside fping,
# smokeping_prober and blackbox_exporter on a namespace lab of this machine.
# Needs root. Takes about 8 minutes with the defaults; stops by itself and
# removes its namespaces. Arguments go to bench/main.go, e.g.:
#   sudo bench/run.sh -n 1000,10000,50000 -cycles 4
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/goenv.sh
WITH_BENCH_PEERS=1 ./scripts/setup.sh
bin=$(mktemp -d)/openstack-vm-exporter
trap 'rm -rf "$(dirname "$bin")"' EXIT
make build >/dev/null && mv openstack-vm-exporter "$bin"
go run ./bench -binary "$bin" "$@"
