# Sourced by the command-line benches: `timed CMDLINE` prints the seconds a shell command
# line took (wall clock).
timed() {
  local start end
  start=$(date +%s.%N)
  bash -c "$1"
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}
