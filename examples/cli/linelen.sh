#!/bin/sh
# A zerotasq line-protocol worker in shell: answers each line with its length.
#
#     zerotasq map -j 4 -- sh examples/cli/linelen.sh < lines.txt
#
# Use shell builtins (read, printf): they write at once. Pipes through tools such as
# `tr`, `sed` or `awk` buffer their output when it is not a terminal, so an answer would
# never come back: use `sed -u`, `awk` with fflush(), or `stdbuf -oL` for those.
while IFS= read -r line; do
    printf '%s\n' "${#line}"
done
