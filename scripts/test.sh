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

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n "$unformatted" ]]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

step "go vet (both tiers)"
go vet ./...
go vet -tags lab ./...

step "go build"
go build -o /dev/null .

step "go build linux/arm64 (the release's other platform)"
CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath -tags netgo,osusergo -buildvcs=false -o /dev/null .

step "govulncheck"
./scripts/vulncheck.sh | tail -4

step "go test ./... as nobody, with only Go on PATH (the tier any laptop runs)"
./scripts/test-unprivileged.sh

# The tests that run the exporter share one build of it.
bindir=$(mktemp -d)
trap 'rm -rf "$bindir"' EXIT
step "go build -race (the binary the tests run)"
go build -race -o "$bindir/openstack-vm-exporter" .
export OVMX_TEST_BINARY="$bindir/openstack-vm-exporter"

step "go test -race -tags lab (both tiers)"
go test -race -tags lab -count=1 -timeout 15m ./...

step "fuzzing (briefly; the seed corpora are in testdata/fuzz and the tests)"
go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 10s ./config/
go test -run '^$' -fuzz '^FuzzServer$' -fuzztime 10s ./inventory/
go test -run '^$' -fuzz '^FuzzParseEchoReply$' -fuzztime 10s ./probes/
step "done"
