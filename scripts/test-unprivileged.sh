#!/usr/bin/env bash
# Runs the tier of the tests that needs nothing but Go (`go test ./...`,
# without the lab tag) as an unprivileged user (nobody) with only Go and sh
# on its PATH: the proof that it passes on any developer's laptop, without root,
# capabilities or Debian's tools. Called by scripts/test.sh as root; the
# module cache is lent read-only through a bind mount in a private mount
# namespace, since root's home is closed to other users.
#
# With an argument, runs that sh script there instead (scripts/side-checks.sh
# runs vet and this tier in one go).
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
# Root's compiled packages, lent as hard links (no copy, well under a
# second): nobody's builds find the standard library and the modules
# compiled already (scripts/side-checks.sh builds with the same flags first),
# instead of compiling them again from nothing. The files stay root's and
# read-only to nobody, so nothing nobody does reaches root's cache;
# nobody writes new entries into its own copies of the directories. A fresh
# trim.txt spares nobody's go a trim of the lent entries.
gocache=$(go env GOCACHE)
mkdir -p "$scratch/home/go-build"
if [[ -d "$gocache" ]] && ! cp -al "$gocache/." "$scratch/home/go-build/" 2>/dev/null; then
  # Another filesystem: nobody compiles everything itself.
  rm -rf "$scratch/home/go-build" && mkdir -p "$scratch/home/go-build"
fi
# A file root left writable by others (a umask of 0) would let nobody
# change root's cache through the link: such files are not lent.
find "$scratch/home/go-build" -type f -perm /022 -delete
rm -f "$scratch/home/go-build/trim.txt"
date +%s > "$scratch/home/go-build/trim.txt"
find "$scratch/home" -type d -exec chown nobody:nogroup {} +
chown nobody:nogroup "$scratch/home/go-build/trim.txt"
chown -R nobody:nogroup "$scratch/tmp" "$scratch/src"
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
