#!/usr/bin/env bash
# Builds of the command line against each other, in turns (no peers): before/after a change,
# or two libzmqs. Each argument is NAME=DIR, DIR holding a release `zerotasq` and
# `examples/line_worker` (a cargo target's release directory).
#
#   bench/cli/builds.sh before=/tmp/target-before/release after=target/release
#
# Scenarios as in run.sh: (a) 2,000 lines, 200 ms start, 1 ms a line; (b) 1,000,000 lines
# through `cat` from a file, and from a pipe. ROUNDS rounds (default 3); take medians.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
JOBS=${JOBS:-2}
[ $# -ge 1 ] || { echo "usage: $0 NAME=DIR..." >&2; exit 2; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
seq 2000 > "$TMP/a.in"
seq 1000000 > "$TMP/b.in"

# shellcheck source=timed.sh
. "$(dirname "$0")/timed.sh"

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); jobs $JOBS"
for round in $(seq "$ROUNDS"); do
  for build in "$@"; do
    name=${build%%=*}
    dir=${build#*=}
    z="$dir/zerotasq"
    w="$dir/examples/line_worker"
    a=$(STARTUP_MS=200 WORK_MS=1 timed "$z map -j $JOBS --no-progress --stats none -- $w < $TMP/a.in > $TMP/a.out")
    b=$(timed "$z map -j $JOBS --no-progress --stats none -- cat < $TMP/b.in > $TMP/b.out")
    p=$(timed "cat $TMP/b.in | $z map -j $JOBS --no-progress --stats none -- cat > $TMP/p.out")
    cmp -s "$TMP/b.in" "$TMP/b.out" && cmp -s "$TMP/b.in" "$TMP/p.out" \
      && [ "$(wc -l < "$TMP/a.out")" = 2000 ] || { echo "$name: wrong output" >&2; exit 1; }
    printf 'round %s  %-10s (a) %6.3f s   (b) file %6.3f s   pipe %6.3f s\n' "$round" "$name" "$a" "$b" "$p"
  done
done
