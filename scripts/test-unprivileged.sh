#!/usr/bin/env bash
# Runs the tier of the tests that needs nothing but Go (`go test ./...`,
# without the lab tag) as an unprivileged user (nobody) with only Go and sh
# on its PATH: the proof that it passes on any developer's laptop, without root,
# capabilities or Debian's tools. Called by scripts/test.sh as root; the
# module cache is lent read-only through a bind mount in a private mount
# namespace, since root's home is closed to other users.
#
# With an argument, runs that sh script there instead (scripts/side-checks.sh
# runs vet, the build and this tier in one go, so that they share
# one build cache: compiling everything twice, once as root for vet and once
# as nobody for the tests, was the side lane's longest step).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/goenv.sh
script="${1:-go test -count=1 ./...}"
if [[ $(id -u) -ne 0 ]]; then
  # Already unprivileged: just run it.
  exec sh -ec "$script"
fi
modcache=$(go env GOMODCACHE)
scratch=$(mktemp -d /tmp/ovmx-unprivileged-XXXXXX)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/mod" "$scratch/home" "$scratch/tmp" "$scratch/src" "$scratch/bin"
# On its PATH: Go and a POSIX shell, nothing of Debian's test packages.
ln -s "$(command -v sh)" "$scratch/bin/sh"
# A copy of the work tree the user may write in (go test writes nothing
# there, but the user must be able to read it wherever it is checked out).
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$scratch/src" 2>/dev/null || cp -a . "$scratch/src"
chown -R nobody:nogroup "$scratch/home" "$scratch/tmp" "$scratch/src"
chmod 755 "$scratch"
# The Go that scripts/goenv.sh chose lives in the module cache: the same
# one, through the mount.
goroot=$(go env GOROOT)
case "$goroot" in
  "$modcache"/*) goroot="$scratch/mod/${goroot#"$modcache"/}" ;;
esac
unshare --mount --propagation private bash -c '
  mount --bind -o ro "$1" "$2/mod"
  cd "$2/src"
  exec setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all --bounding-set=-all \
    env -i HOME="$2/home" TMPDIR="$2/tmp" PATH="$3/bin:$2/bin" GOTOOLCHAIN=local GOFLAGS=-mod=mod GOPROXY=off \
        GOMODCACHE="$2/mod" GOCACHE="$2/home/go-build" CI="${CI:-}" \
        sh -ec "$4"
' _ "$modcache" "$scratch" "$goroot" "$script"
