#!/usr/bin/env bash
# The checks of scripts/test.sh that need neither root's lab nor its
# timing: go vet, the release build, the Go-only tier as nobody and
# govulncheck. scripts/test.sh runs them at the lowest CPU priority beside
# the lab tier, whose tests mostly wait (for: durations, services) and so
# keep the CPU they ask for; run alone, they are the same checks in a row.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/goenv.sh
start=$SECONDS
step() { echo "== [side $((SECONDS - start))s] $*"; }

# Everything here builds as the Dockerfile and the Makefile do (no cgo,
# -trimpath, netgo and osusergo): this one build, as root, compiles the
# standard library and the modules once for the release build, nobody's
# vet, its Go-only tier (deploy's TestDockerfileBuild runs the Dockerfile's
# build line there) and govulncheck. From cold, each full compile is about
# 130 CPU-seconds; this lane used to do it three times.
step "go build (the release's flags)"
CGO_ENABLED=0 go build -trimpath -tags netgo,osusergo -o /dev/null .

# vet and the Go-only tier run as nobody (scripts/test-unprivileged.sh),
# with root's compiled packages lent to it: none of them needs root.
# go vet runs once, with the lab tag: every file builds with it. A second
# run without the tag found none of the first run's results in the build
# cache and analysed the dependencies again: 40-50 CPU-seconds more,
# measured. So a file the lab tag leaves out would never be vetted.
excluded=$(grep -rlE --include='*.go' '^//go:build .*!\(?lab\b' . || true)
if [[ -n "$excluded" ]]; then
  echo "these files are left out by the lab tag, so go vet (run with it) never sees them: make them build with it (see exporter/promtool_test.go):"
  echo "$excluded"; exit 1
fi
step "as nobody, with only Go on PATH: go vet (both tiers), go test ./... (the tier any laptop runs)"
./scripts/test-unprivileged.sh '
export CGO_ENABLED=0 GOFLAGS="$GOFLAGS -trimpath -tags=netgo,osusergo"
echo "== go vet (both tiers: every file)"
go vet -tags lab,netgo,osusergo ./...
# -vet=off: go vet ran above, with every analyzer, on the files of both tiers.
echo "== go test ./..."
go test -count=1 -vet=off ./...
'
# Fuzzing is scripts/fuzz.sh, not part of the suite: its instrumented
# rebuilds cost more than the whole Go-only tier, for seconds of fuzzing.
# The seed corpora run in go test above.

# Also the arm64 build check: govulncheck type-checks every package for
# each platform the release ships (scripts/vulncheck.sh).
step "govulncheck (linux/amd64, linux/arm64)"
./scripts/vulncheck.sh
step "done"
