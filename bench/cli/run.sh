#!/usr/bin/env bash
# The command line against GNU parallel and xargs -P, side by side in one run, with ratios.
#
#   bench/cli/run.sh            # both scenarios, as in docs/cli.md
#   A_LINES=200 bench/cli/run.sh   # a quicker (a)
#
# (a) a worker that takes 200 ms to start and 1 ms per line, 2,000 lines:
#     zerotasq (long-lived workers) vs parallel and xargs starting one process per line.
# (b) 1,000,000 tiny lines echoed by `cat`: zerotasq (adaptive packs of lines, per-line
#     accounting and order kept; also from a pipe, and with --no-pack) vs
#     `parallel --pipe --round-robin` (blocks of lines, no order).
# Every tool gets the same number of jobs (JOBS, default: cores). Timing is wall clock.
set -euo pipefail
cd "$(dirname "$0")/../.."
JOBS=${JOBS:-$(nproc)}
A_LINES=${A_LINES:-2000}
B_LINES=${B_LINES:-1000000}
command -v parallel >/dev/null || { echo "needs GNU parallel: apt-get install -y parallel" >&2; exit 2; }
cargo build --release -q -p zerotasq-cli --bin zerotasq --example line_worker
TARGET=${CARGO_TARGET_DIR:-target}
Z="$TARGET/release/zerotasq"
W="$TARGET/release/examples/line_worker"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# shellcheck source=timed.sh
. bench/cli/timed.sh
ratio() { printf "%.2f" "$(echo "$1 / $2" | bc -l)"; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "jobs: $JOBS"

echo
echo "(a) worker: 200 ms start-up, 1 ms per line; $A_LINES lines"
seq "$A_LINES" > "$TMP/a.in"
export STARTUP_MS=200 WORK_MS=1
za=$(timed "$Z map -j $JOBS --no-progress --stats none -- $W < $TMP/a.in > $TMP/a.z")
pa=$(timed "parallel -j $JOBS --pipe -N 1 $W < $TMP/a.in > $TMP/a.p")
xa=$(timed "xargs -d '\n' -n 1 -P $JOBS sh -c 'printf \"%s\n\" \"\$1\" | $W' _ < $TMP/a.in > $TMP/a.x")
[ "$(wc -l < "$TMP/a.z")" = "$A_LINES" ] && [ "$(wc -l < "$TMP/a.p")" = "$A_LINES" ]
printf '  zerotasq map          %8.2f s\n' "$za"
printf '  parallel --pipe -N 1  %8.2f s   zerotasq is %s× faster (target ≥ 50×)\n' "$pa" "$(ratio "$pa" "$za")"
printf '  xargs -P -n 1         %8.2f s   zerotasq is %s× faster\n' "$xa" "$(ratio "$xa" "$za")"
unset STARTUP_MS WORK_MS

echo
echo "(b) $B_LINES tiny lines through cat"
seq "$B_LINES" > "$TMP/b.in"
zb=$(timed "$Z map -j $JOBS --no-progress --stats none -- cat < $TMP/b.in > $TMP/b.z")
zp=$(timed "$Z map -j $JOBS --no-pack --no-progress --stats none -- cat < $TMP/b.in > $TMP/b.zp")
zc=$(timed "cat $TMP/b.in | $Z map -j $JOBS --no-progress --stats none -- cat > $TMP/b.zc")
zu=$(timed "$Z map -j $JOBS --unordered --no-progress --stats none -- cat < $TMP/b.in > $TMP/b.u")
pb=$(timed "parallel -j $JOBS --pipe --round-robin cat < $TMP/b.in > $TMP/b.p")
cmp -s "$TMP/b.in" "$TMP/b.zp" || { echo "zerotasq --no-pack's output differs from its input" >&2; exit 1; }
cmp -s "$TMP/b.in" "$TMP/b.zc" || { echo "zerotasq's output (input from a pipe) differs from its input" >&2; exit 1; }
cmp -s "$TMP/b.in" "$TMP/b.z" || { echo "zerotasq's output differs from its input" >&2; exit 1; }
[ "$(wc -l < "$TMP/b.p")" = "$B_LINES" ]
printf '  zerotasq map (ordered)             %6.2f s   %s× parallel'"'"'s throughput (target ≥ 1×)\n' "$zb" "$(ratio "$pb" "$zb")"
printf '  zerotasq map, input from a pipe    %6.2f s   %s×\n' "$zc" "$(ratio "$pb" "$zc")"
printf '  zerotasq map --no-pack (ordered)   %6.2f s   %s×\n' "$zp" "$(ratio "$pb" "$zp")"
printf '  zerotasq map --unordered           %6.2f s   %s×\n' "$zu" "$(ratio "$pb" "$zu")"
printf '  parallel --pipe --round-robin      %6.2f s\n' "$pb"
