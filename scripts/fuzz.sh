#!/usr/bin/env bash
# Fuzzes every harness of the module (the func Fuzz* in its tests), one
# after the other, FUZZTIME each (1m by default). Not part of
# scripts/test.sh: each harness first rebuilds its package and all it
# imports with coverage instrumentation (about 160 CPU-seconds for the three
# on 2 cores), which a few seconds of fuzzing per CI run did not repay; the
# seed corpora (testdata/fuzz and the f.Add seeds) run in every `go test`.
# Run it after changing a parser; new failing inputs land in testdata/fuzz,
# to be committed with the fix. Needs only Go, no root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/goenv.sh
fuzztime="${FUZZTIME:-1m}"
found=0
while IFS= read -r line; do
  file=${line%%:*}
  name=$(sed -E 's/^.*func (Fuzz[A-Za-z0-9_]*)\(.*$/\1/' <<<"${line#*:}")
  echo "== $name in ./$(dirname "$file") for $fuzztime"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "./$(dirname "$file")/"
  found=$((found + 1))
done < <(git grep -n -E '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' -- '*_test.go' | sed -E 's/^([^:]*):[0-9]+:/\1:/')
if (( found == 0 )); then
  echo "no fuzz harness found" >&2
  exit 1
fi
echo "== $found harnesses fuzzed, $fuzztime each"
