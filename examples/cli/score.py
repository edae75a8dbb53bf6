#!/usr/bin/env python3
"""A zerotasq line-protocol worker in Python: one JSON object in, one JSON object out.

    zerotasq map -j 4 -- python3 examples/cli/score.py < in.jsonl > out.jsonl

The protocol: read one line from stdin, write exactly one line to stdout, flush. Anything
for humans goes to stderr (zerotasq prefixes it with the worker's number). Load expensive
things once, before the loop: this process lives for the whole run.
"""
import json
import os
import sys


def load_model():
    # Stands for loading a model: done once per worker, not once per line.
    weights = {"a": 1.0, "b": 2.0}
    print(f"worker {os.environ.get('ZEROTASQ_WORKER', '?')} ready", file=sys.stderr)
    return weights


def main():
    model = load_model()
    for line in sys.stdin:
        task = json.loads(line)
        score = sum(model.get(k, 0.0) * float(v) for k, v in task.items()
                    if isinstance(v, (int, float)))
        sys.stdout.write(json.dumps({"id": task.get("id"), "score": score}) + "\n")
        sys.stdout.flush()  # the one rule: flush after each answer


if __name__ == "__main__":
    main()
