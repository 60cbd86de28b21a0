#!/usr/bin/env bash
# Run every Go fuzz target (func FuzzXxx in a _test.go file) for FUZZTIME each (default 10s).
#
# `go test -fuzz` takes one target of one package at a time, so this finds them all and runs
# them in turn; a failure stops the run with the target's output, and Go keeps the input that
# failed under <package>/testdata/fuzz/<target>/ — commit it: `go test` replays that corpus
# (with the seeds) on every run. FUZZTIME=5s is what `make test` gives each target.
set -euo pipefail
FUZZTIME=${FUZZTIME:-10s}
cd "$(dirname "$0")/.."
# Go's fuzz coordinator before 1.27 may fail a target with a bare "context deadline
# exceeded" when -fuzztime runs out on a loaded machine, no failing input found or written
# (go.dev/issue/75804; a CI run lost FuzzKVRequest to it). On an older Go, fuzzing runs on
# go1.27.3, which the go command fetches from the module proxy once per machine (76 MB,
# seconds); everything else keeps the machine's Go.
minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ -n "$minor" ] && [ "$minor" -lt 27 ]; then
  export GOTOOLCHAIN=go1.27.3
  echo "fuzz: with $(go version | cut -d' ' -f3) (go.dev/issue/75804)"
fi
targets=$(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./\.' | sort)
[ -n "$targets" ] || { echo "fuzz: no fuzz targets found" >&2; exit 1; }
count=0
for file in $targets; do
  pkg="./$(dirname "${file#./}")"
  for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
    echo "fuzz: $pkg $name for $FUZZTIME"
    go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg"
    count=$((count + 1))
  done
done
echo "fuzz: $count targets, $FUZZTIME each, no failure"
