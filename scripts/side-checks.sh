#!/usr/bin/env bash
# The checks of scripts/test.sh that need neither root's lab nor its
# timing: go vet, the builds, the Go-only tier as nobody and govulncheck.
# scripts/test.sh runs them at the lowest CPU priority beside the lab
# tier, whose tests mostly wait (for: durations, services) and so keep the
# CPU they ask for; run alone, they are the same checks in a row.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/goenv.sh
start=$SECONDS
step() { echo "== [side $((SECONDS - start))s] $*"; }

# vet, the build and the Go-only tier run as nobody, in one build
# cache (scripts/test-unprivileged.sh): none of them needs root, and they
# compile the same packages. They build as the Dockerfile and the Makefile
# do (no cgo, -trimpath, netgo and osusergo), since deploy's TestDockerfileBuild
# builds the release binary that way: its build then finds every package
# compiled already (alone, that build is 140 CPU-seconds on 2 cores).
step "as nobody, with only Go on PATH: go vet (both tiers), go build, go test ./... (the tier any laptop runs)"
./scripts/test-unprivileged.sh '
export CGO_ENABLED=0 GOFLAGS="$GOFLAGS -trimpath -tags=netgo,osusergo"
echo "== go vet (both tiers)"
go vet ./...
go vet -tags lab,netgo,osusergo ./...
echo "== go build"
go build -o /dev/null .
# -vet=off: go vet ran above, with every analyzer, on the files of both tiers.
echo "== go test ./..."
go test -count=1 -vet=off ./...
'
# Fuzzing is scripts/fuzz.sh, not part of the suite: its instrumented
# rebuilds cost more than the whole Go-only tier, for seconds of fuzzing.
# The seed corpora run in go test above.

step "go build linux/arm64 (the release's other platform)"
CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath -tags netgo,osusergo -buildvcs=false -o /dev/null .

step "govulncheck"
./scripts/vulncheck.sh | tail -4
step "done"
