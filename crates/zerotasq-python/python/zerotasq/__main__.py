"""``python -m zerotasq``: the Python face's command line.

    python -m zerotasq keygen NAME            # NAME.key (public) and NAME.key_secret
    python -m zerotasq worker --connect tcp://HOST:PORT -n 4 \\
        --server-key broker.key --key worker.key_secret [--devices 0,1] [--env NAME=VALUE]

``worker`` joins a ``Pool(listen_workers=…)`` on another machine, which sends it the worker
definition; with ``--worker module:attr`` it runs that one instead (for a standalone
``zerotasq broker``, which has no definition to send).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zerotasq", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="write a CURVE key pair: NAME.key and NAME.key_secret")
    keygen.add_argument("name")
    keygen.add_argument("--force", action="store_true", help="overwrite existing key files")
    worker = commands.add_parser("worker", help="run workers that join a pool on another machine")
    worker.add_argument("--connect", required=True, metavar="ENDPOINT",
                        help="the pool's worker endpoint, e.g. tcp://host:5556")
    worker.add_argument("-n", "--workers", type=int, default=None,
                        help="worker processes (default: one per core)")
    worker.add_argument("--server-key", metavar="FILE", help="the pool's public key (its NAME.key file)")
    worker.add_argument("--key", metavar="FILE", help="our key pair (a NAME.key_secret file)")
    worker.add_argument("--insecure", action="store_true",
                        help="plain TCP without CURVE (refused off loopback unless --allow-insecure-remote)")
    worker.add_argument("--allow-insecure-remote", action="store_true",
                        help="allow --insecure on a non-loopback address")
    worker.add_argument("--worker", metavar="MODULE:ATTR",
                        help="run this Worker class or function instead of the pool's definition")
    worker.add_argument("--init-kwargs", metavar="JSON", default=None,
                        help="keyword arguments of the --worker class's init, as JSON")
    worker.add_argument("--patience", type=float, default=30.0, metavar="SECONDS",
                        help="how long to wait for the pool's definition before trying again")
    worker.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="set NAME=VALUE in each worker's environment; {slot} is its slot (0..N-1). "
                             "Repeatable")
    worker.add_argument("--devices", metavar="LIST",
                        help="devices to give the workers, one each in turn (CUDA_VISIBLE_DEVICES), e.g. 0,1")
    worker.add_argument("--threads-per-worker", type=int, metavar="N",
                        help="threads each worker's math libraries may start (OMP_NUM_THREADS, ...) "
                             "[default: cores / workers; variables you set win]")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "keygen":
        from zerotasq import _native

        try:
            public = _native.keygen(args.name, args.force)
        except (OSError, _native.PoolError) as exc:
            print("zerotasq: %s" % exc, file=sys.stderr)
            return 2
        print("zerotasq: wrote %s.key (public: %s) and %s.key_secret (secret, keep it)"
              % (args.name, public, args.name), file=sys.stderr)
        return 0
    from zerotasq import _remote
    from zerotasq._controls import Controls
    from zerotasq._launch import default_workers

    _remote.log_to_stderr()
    try:
        env = {}
        for assignment in args.env:
            name, eq, value = assignment.partition("=")
            if not eq:
                raise ValueError("--env expects NAME=VALUE, not %r" % assignment)
            env[name] = value
        controls = Controls(worker_env=env or None, devices=args.devices, threads_per_worker=args.threads_per_worker)
    except (TypeError, ValueError) as exc:
        print("zerotasq: %s" % exc, file=sys.stderr)
        return 2
    if not args.insecure and not (args.server_key and args.key):
        print("zerotasq: connecting to %s needs --server-key (the pool's NAME.key) and --key (our "
              "NAME.key_secret), or --insecure for plain TCP" % args.connect, file=sys.stderr)
        return 2
    def absolute(path: Optional[str]) -> Optional[str]:
        return os.path.abspath(path) if path and os.path.exists(path) else path

    from zerotasq import _native

    try:
        _native.check_security(args.connect, absolute(args.server_key), absolute(args.key), args.insecure,
                               args.allow_insecure_remote)
    except _native.PoolError as exc:
        print("zerotasq: %s" % exc, file=sys.stderr)
        return 2
    settings = dict(connect=args.connect, server_key=absolute(args.server_key), key=absolute(args.key),
                    insecure=args.insecure, allow_insecure_remote=args.allow_insecure_remote,
                    worker=args.worker, init_kwargs=json.loads(args.init_kwargs) if args.init_kwargs else None,
                    patience=args.patience)
    return _remote.supervise(settings, args.workers or default_workers(), controls)


if __name__ == "__main__":
    sys.exit(main())
