#!/usr/bin/env bash
# The whole test suite: what CI runs (.ci/run) and what a developer runs.
# Installs what is missing first (scripts/setup.sh). Needs root: the tests of
# the "lab" tier (build tag lab) create network namespaces and raw sockets,
# and run Debian's promtool, Prometheus, Alertmanager, Keystone and Nova; they
# fail, never skip, without them. Plain `go test ./...` runs the other tier,
# which needs nothing but Go, anywhere; this script runs both.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/goenv.sh
start=$SECONDS
# Each step says when it starts, in seconds since the script began.
step() { echo "== [$((SECONDS - start))s] $*"; }

step "setup"
./scripts/setup.sh

# The scripts parse: a slip such as a quote in a quoted script would
# otherwise fail the run only when that script runs, minutes in.
step "bash -n (scripts)"
for script in scripts/*.sh .ci/run; do
  bash -n "$script"
done

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n "$unformatted" ]]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

# The race builds of the lab tier (and of the go commands its tests run)
# without DWARF, which no test reads (race reports and panics symbolize
# from the symbol table): from a cold cache, the compiler and the linker
# spend about a tenth less on them (210-216 CPU-seconds instead of
# 231-271 for the exporter and the test binaries). The side checks build
# with the user's own GOFLAGS.
user_goflags="${GOFLAGS:-}"
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-gcflags=all=-dwarf=false -ldflags=-w"

# The tests that run the exporter share one build of it.
bindir=$(mktemp -d)
side_log="$bindir/side-checks.log"
side_pid=""
cleanup() {
  if [[ -n "$side_pid" ]]; then kill -- "-$side_pid" 2>/dev/null || true; fi
  rm -rf "$bindir"
}
trap cleanup EXIT
step "go build -race (the binary the tests run)"
go build -race -o "$bindir/openstack-vm-exporter" .
export OVMX_TEST_BINARY="$bindir/openstack-vm-exporter"

# The lab tier's test binaries, compiled before any of them runs: compiling
# beside the first tests starved them (a missed scrape pages in the chains).
step "go test -race -tags lab: compiling"
# -vet=off here and below: scripts/side-checks.sh runs go vet, with every
# analyzer, on both tiers' files.
go test -race -tags lab -count=1 -vet=off -run '^$' -p 4 ./... > /dev/null

# The release build, vet, govulncheck and the Go-only tier as nobody: beside
# the lab tier, at the lowest CPU priority (scripts/side-checks.sh).
step "side checks started (scripts/side-checks.sh, niced; their output follows the lab tier's)"
# Its own process group (job control), so that an interrupted run stops all
# of it; not its own session (setsid): with the kernel's autogroup
# scheduling, a new session is a new group that gets an equal share of the
# CPU whatever its nice value, and the side lane then took half of the CPU
# from the lab tier (whose packages took twice as long as alone).
set -m
GOFLAGS="$user_goflags" nice -n 19 ./scripts/side-checks.sh > "$side_log" 2>&1 &
side_pid=$!
set +m

# The lab tier's tests mostly wait (alerts' for: durations, Prometheus's
# evaluations, Keystone and Nova): four packages and four tests of each run
# at once, each test in its own namespaces and on its own reserved ports.
# (Eight at once starved the chains' exporters on 2 cores.)
# -timeout is a bound for a hang, not for speed: a package's tests wait for
# machine-wide turns that other packages' tests hold (a turn to start an
# OpenStack lab), so on a slow machine a package runs longer than its own
# tests.
# -skip: the Go-only tier (side checks) builds the Dockerfile's line, in the
# cache of the release's flags (deploy's TestDockerfileBuild).
step "go test -race -tags lab (both tiers)"
lab_status=0
go test -race -tags lab -count=1 -vet=off -p 4 -parallel 4 -timeout 30m -skip '^TestDockerfileBuild$' ./... || lab_status=$?

step "side checks: waiting for them"
side_status=0
wait "$side_pid" || side_status=$?
side_pid=""
cat "$side_log"
if (( lab_status != 0 || side_status != 0 )); then
  echo "FAILED: lab tier exit $lab_status, side checks exit $side_status"
  exit 1
fi
step "done"
