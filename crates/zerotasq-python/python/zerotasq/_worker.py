"""Entry of a worker process: ``python -S -c 'import zerotasq._worker as w; w.run()'``
(no ``site``, no ``runpy``: the caller's ``sys.path`` comes in the header, and start-up time
matters; ``-m zerotasq._worker`` works too). A fresh interpreter reads from stdin a header
(the caller's ``sys.path`` and ``sys.argv``) and its worker definitions, picks its own by
its slot, runs ``init`` and then the engine's worker loop, calling
``process`` for each task (or ``process_batch`` for each batch)."""

from __future__ import annotations

import os
import sys


def _index() -> int:
    slot = os.environ.get("ZEROTASQ_SLOT", "")
    return int(slot) if slot.isdigit() else 0


def main() -> int:
    from zerotasq import _native

    _native.prepare_worker_process()
    import _pickle  # the C pickler alone: `pickle` imports re, enum and struct too (start-up)

    stdin = sys.stdin.buffer
    paths, sys.argv = _pickle.load(stdin)
    sys.path[:0] = [p for p in paths if p and p not in sys.path]
    payload = stdin.read()

    from zerotasq._codec import dumps, loads
    from zerotasq._errors import describe
    from zerotasq.worker import is_batched, log_level

    try:
        definitions = loads(payload)
        worker = definitions[_index() % len(definitions)]
        if getattr(worker, "loglevel", None) is not None:
            import logging

            logging.basicConfig(
                level=log_level(worker.loglevel),
                format="%(asctime)s zerotasq-worker[%(process)d] %(levelname)s %(name)s: %(message)s")
        worker.init(**getattr(worker, "init_kwargs", {}))
    except BaseException as exc:  # noqa: B902 - any failure of init is reported, then we exit
        message, detail = describe(exc)
        print("zerotasq worker: init failed: %s\n%s" % (message, detail.split("\n\x00")[0]),
              file=sys.stderr, flush=True)
        try:
            _native.report_init_failure(message)
        except Exception:
            pass
        return 3
    from zerotasq import _logging

    _logging.start()  # after init: it may have configured `logging`
    try:
        if is_batched(worker):
            return _native.serve_worker(worker.process_batch, describe, dumps, loads, True)
        return _native.serve_worker(worker.process, describe, dumps, loads)
    finally:
        # Before the interpreter's exit, which waits for `threading`'s threads: when the pump
        # was the first to import `threading` (with `logging`, for an engine record), it
        # passes for the main thread there, and that wait would never end.
        _logging.stop()


def run() -> None:
    """Runs ``main`` and exits with its status."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


if __name__ == "__main__":
    run()
