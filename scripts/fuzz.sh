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
# git grep -o prints "file:func FuzzName" for each harness.
while IFS=: read -r file match; do
  name=${match#func }
  echo "== $name in ./$(dirname "$file") for $fuzztime"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "./$(dirname "$file")/"
  found=$((found + 1))
done < <(git grep -o -E '^func Fuzz[A-Za-z0-9_]*' -- '*_test.go')
if (( found == 0 )); then
  echo "no fuzz harness found" >&2
  exit 1
fi
echo "== $found harnesses fuzzed, $fuzztime each"
