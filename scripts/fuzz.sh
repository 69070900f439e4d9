#!/usr/bin/env bash
# Runs every Go fuzz target of both modules (the main one and qemu-tests)
# for $FUZZTIME each; minimisation of a new input is capped at 5 s.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${FUZZTIME:-5s}
n=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for mod in . qemu-tests recovery; do
  for pkg in $(cd "$mod" && go list ./...); do
    for f in $(cd "$mod" && go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
      echo "fuzz: $pkg $f ($t)"
      (cd "$mod" && go test -run='^$' -fuzz="^${f}\$" -fuzztime="$t" -fuzzminimizetime=5s "$pkg") >"$log" 2>&1 || { cat "$log"; exit 1; }
      n=$((n+1))
    done
  done
done
echo "fuzz: $n targets ran for $t each"
