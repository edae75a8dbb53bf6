"""The task of ``startup.py``: the worker's pid, when this module was imported in it (while
the worker definition loads), and when the worker ran its first task."""

import os
import time

LOADED = time.time()
_first = None


def probe(item):
    global _first
    if _first is None:
        _first = time.time()
    return (os.getpid(), LOADED, _first)
