#!/usr/bin/env bash
# The checks of scripts/test.sh that need neither root's lab nor its
# timing: go vet, the builds, govulncheck, the Go-only tier as nobody, and
# brief fuzzing. scripts/test.sh runs them at the lowest CPU priority beside
# the lab tier, whose tests mostly wait (for: durations, services) and so
# keep the CPU they ask for; run alone, they are the same checks in a row.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/goenv.sh
start=$SECONDS
step() { echo "== [side $((SECONDS - start))s] $*"; }

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

# Briefly: a smoke test that each harness runs (the seed corpora also run
# as plain tests); long fuzzing belongs to a run of its own, not to CI.
step "fuzzing (briefly; the seed corpora are in testdata/fuzz and the tests)"
go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 3s ./config/
go test -run '^$' -fuzz '^FuzzServer$' -fuzztime 3s ./inventory/
go test -run '^$' -fuzz '^FuzzParseEchoReply$' -fuzztime 3s ./probes/
step "done"
