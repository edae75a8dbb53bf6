#!/usr/bin/env bash
# Pools across hosts, measured (crates/zerotasq/benches/distributed.rs): CURVE against plain
# TCP, and CPU-bound scaling over 1–3 worker hosts. Needs root.
#
#   bench/distributed/run.sh              # both parts, as in docs/distributed.md
#   bench/distributed/run.sh scaling      # one part: curve | scaling
#   QUOTA=0.5 bench/distributed/run.sh    # CPUs per worker host (default 0.5)
#
# Makes three hosts — network namespaces, each joined to this one by a veth pair with a /30
# in 10.188.0.0/16 and a default route back here — and one cgroup v1 cpu group per host,
# capped at QUOTA CPUs (cpu.cfs_quota_us / cpu.cfs_period_us), which the benchmark puts each
# host's worker process into. This machine has 2 cores: three hosts at 0.5 CPU = 1.5 CPUs
# leaves room for the broker and the client, so the hosts, not the machine, are the limit.
# Everything made here is removed on exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
QUOTA=${QUOTA:-0.5}
PERIOD_US=100000
CG=/sys/fs/cgroup/cpu
TAG=ztbench$$
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, cgroups)" >&2; exit 2; }
[ -w "$CG/cgroup.procs" ] || { echo "needs the cgroup v1 cpu controller at $CG" >&2; exit 2; }
if [ -n "$(ip -o addr show to 10.188.0.0/16)" ]; then
  echo "10.188.0.0/16 is in use here (another run?)" >&2; exit 2
fi
# Build before making anything, so a long build holds nothing.
cargo bench -q -p zerotasq --bench distributed --no-run

HOSTS=() CGROUPS=()
cleanup() {
  for i in 1 2 3; do
    ip netns del "$TAG-$i" 2>/dev/null || true
    local cg="$CG/$TAG-$i"
    [ -d "$cg" ] || continue
    # Only this run's workers are in it; the benchmark kills them itself unless it crashed.
    for pid in $(cat "$cg/cgroup.procs"); do kill -9 "$pid" 2>/dev/null || true; done
    for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$cg" 2>/dev/null && break; sleep 0.1; done
  done
}
trap cleanup EXIT

for i in 1 2 3; do
  ns="$TAG-$i" veth="ztbv$$-$i" peer="ztbp$$-$i"
  ip netns add "$ns"
  ip link add "$veth" type veth peer name "$peer"
  ip link set "$peer" netns "$ns"
  ip addr add "10.188.$i.1/30" dev "$veth"
  ip link set "$veth" up
  ip -n "$ns" addr add "10.188.$i.2/30" dev "$peer"
  ip -n "$ns" link set "$peer" up
  ip -n "$ns" link set lo up
  ip -n "$ns" route add default via "10.188.$i.1"
  mkdir "$CG/$TAG-$i"
  echo "$PERIOD_US" > "$CG/$TAG-$i/cpu.cfs_period_us"
  awk -v q="$QUOTA" -v p="$PERIOD_US" 'BEGIN { printf "%d\n", q * p }' > "$CG/$TAG-$i/cpu.cfs_quota_us"
  HOSTS+=("$ns") CGROUPS+=("$CG/$TAG-$i")
done

ZT_BENCH_HOSTS="${HOSTS[*]}" ZT_BENCH_BROKER=10.188.1.1 ZT_BENCH_CGROUPS="${CGROUPS[*]}" \
  ZT_BENCH_QUOTA="$QUOTA" cargo bench -q -p zerotasq --bench distributed -- "$@"
