#!/usr/bin/env bash
# govulncheck over the module, for each platform the release ships
# (linux/amd64 and linux/arm64, built as the Dockerfile and `make cross`
# build: no cgo, netgo and osusergo). vuln.go.dev is out of reach here, so
# the vulnerability database is built from Go's own database module
# (golang.org/x/vulndb, fetched through the Go module proxy like any module).
# Fails on any vulnerability the code calls, in a required module or in the
# standard library of the Go it is built with (scripts/goenv.sh), and on any
# package that does not type-check for a platform: govulncheck loads every
# package from source for it, which is the suite's arm64 build check (for
# pure Go code, what a cross build would catch, at a fifteenth of its CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/goenv.sh
GOVULNCHECK_VERSION=v1.9.0
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018
# The tools build with the release's flags too: they then find the
# standard library compiled by the release build (scripts/test.sh), and
# installing govulncheck costs a quarter of its CPU from cold.
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath -tags=netgo,osusergo"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/openstack-vm-exporter"
mkdir -p "$cache/bin"
GOBIN="$cache/bin" go install "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION"
db="$cache/vulndb-$VULNDB_VERSION"
if [[ ! -f "$db/index/db.json" ]]; then
  src=$(cd /tmp && go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  go run ./scripts/vulndb -osv "$src/data/osv" -out "$db.tmp"
  rm -rf "$db" && mv "$db.tmp" "$db"
fi
for arch in amd64 arm64; do
  echo "== govulncheck linux/$arch"
  out=$(GOOS=linux GOARCH=$arch "$cache/bin/govulncheck" -tags netgo,osusergo -db "file://$db" ./... 2>&1) && status=0 || status=$?
  summary=$(grep -E "^Your code is affected" <<<"$out" || true)
  if [[ $status -ne 0 && -z "$summary" ]]; then
    echo "$out"
    echo "vulncheck: govulncheck failed for linux/$arch (a package that does not load or type-check for it?)" >&2; exit 1
  fi
  if [[ -n "$summary" ]]; then
    echo "$out"
    echo "vulncheck: the code calls the vulnerabilities above on linux/$arch ($(go version | cut -d' ' -f3)); fix them before releasing" >&2
    exit 1
  fi
  tail -1 <<<"$out"
done
echo "vulncheck: no vulnerable code is called on linux/amd64 and linux/arm64 ($(go version | cut -d' ' -f3), vulndb $VULNDB_VERSION)"
