#!/usr/bin/env bash
# govulncheck over the module. vuln.go.dev is out of reach here, so the
# vulnerability database is built from Go's own database module
# (golang.org/x/vulndb, fetched through the Go module proxy like any module).
# Fails on any vulnerability the code calls, in a required module or in the
# standard library of the Go it is built with (scripts/goenv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/goenv.sh
GOVULNCHECK_VERSION=v1.9.0
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018
cache="${XDG_CACHE_HOME:-$HOME/.cache}/openstack-vm-exporter"
mkdir -p "$cache/bin"
GOBIN="$cache/bin" go install "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION"
db="$cache/vulndb-$VULNDB_VERSION"
if [[ ! -f "$db/index/db.json" ]]; then
  src=$(cd /tmp && go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  go run ./scripts/vulndb -osv "$src/data/osv" -out "$db.tmp"
  rm -rf "$db" && mv "$db.tmp" "$db"
fi
out=$("$cache/bin/govulncheck" -db "file://$db" ./... 2>&1) && status=0 || status=$?
echo "$out"
summary=$(grep -E "^Your code is affected" <<<"$out" || true)
if [[ $status -ne 0 && -z "$summary" ]]; then
  echo "vulncheck: govulncheck failed" >&2; exit 1
fi
if [[ -n "$summary" ]]; then
  echo "vulncheck: the code calls the vulnerabilities above ($(go version | cut -d' ' -f3)); fix them before releasing" >&2
  exit 1
fi
echo "vulncheck: no vulnerable code is called ($(go version | cut -d' ' -f3), vulndb $VULNDB_VERSION)"
