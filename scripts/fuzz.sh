#!/usr/bin/env bash
# fuzz.sh: run every fuzz target of the package for FUZZTIME each (default
# 1m), one after the other, and print the last progress line of each. New
# interesting inputs stay in Go's fuzz cache; a failing one is written under
# testdata/fuzz/ (then `go test` runs it as a test until it is fixed).
# TARGETS="FuzzA FuzzB" picks some.
# Temp files go to /dev/shm where there is one: the targets write files.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-1m}
PARALLEL=${PARALLEL:-$(nproc)}
[ -d /dev/shm ] && export TMPDIR=/dev/shm
targets=${TARGETS:-$(grep -ho '^func Fuzz[A-Za-z0-9_]*' ./*_test.go | cut -c6- | sort)}
for t in $targets; do
	log=$(mktemp)
	start=$(date +%s)
	# Go's fuzzer may end a run that found nothing with "context deadline
	# exceeded" when the time is up during a minimization: not a failure
	# unless it wrote a failing input.
	if ! "$GO" test -run '^$' -fuzz "^$t\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 1s -parallel "$PARALLEL" . >"$log" 2>&1 &&
		! { grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; }; then
		grep -v 'level=' "$log" | tail -20
		rm -f "$log"
		echo "fuzz: $t FAILED" >&2
		exit 1
	fi
	echo "$t: $(( $(date +%s) - start ))s, $(grep -o 'execs: [0-9]*' "$log" | tail -1), $(grep -o 'total: [0-9]*' "$log" | tail -1) in the corpus"
	rm -f "$log"
done
