"""Small things a new user meets first: worker pids right after ``Pool()``, the caller's
``sys.argv`` in the workers, the seed's ``loglevel`` integers, and ``help()`` that leads with
the common case and shows annotations as code, not strings."""

import inspect
import logging
import pydoc
import sys

import pytest
import zerotasq
from zerotasq import LoadBalancer, Pool, Worker


def argv(_):
    return sys.argv


def root_level(_):
    return logging.getLogger().getEffectiveLevel()


class RootLevel(Worker):
    def process(self, _):
        return logging.getLogger().getEffectiveLevel()


def test_worker_pids_right_after_the_pool_starts():
    with Pool(abs, n_workers=3) as pool:
        pids = pool.worker_pids()
        assert len(pids) == 3 and len(set(pids)) == 3


def test_workers_see_the_callers_argv():
    with Pool(argv, n_workers=1) as pool:
        assert pool.map([0]) == [sys.argv]


@pytest.mark.parametrize("loglevel, level", [(0, logging.DEBUG), (1, logging.INFO), (2, logging.WARNING),
                                             (3, logging.ERROR), ("info", logging.INFO),
                                             (logging.ERROR, logging.ERROR)])
def test_loglevel_as_the_seed_numbers_it(loglevel, level):
    with Pool(root_level, n_workers=1, loglevel=loglevel) as pool:
        assert pool.map([0]) == [level]


def test_the_seeds_load_balancer_loglevel():
    with LoadBalancer([RootLevel(), RootLevel()], loglevel=1, reply_sync=True) as conn:
        assert list(conn.iter([0, 1])) == [logging.INFO, logging.INFO]


def test_help_of_pool_leads_with_the_common_case():
    text = pydoc.render_doc(zerotasq.Pool, renderer=pydoc.plaintext)
    assert text.index("pool.imap(") < text.index("listen_workers=")
    doc = inspect.getdoc(zerotasq.Pool)
    assert "tcp" not in doc.split("\n\n")[0].lower()


@pytest.mark.parametrize("obj", [zerotasq.Pool.__init__, zerotasq.Pool.imap, zerotasq.Pool.map,
                                 zerotasq.Pool.worker_pids, zerotasq.map, zerotasq.connect,
                                 zerotasq.Executor.submit, zerotasq.LoadBalancer.__init__,
                                 zerotasq.Connector.iter, zerotasq.Results.__next__, zerotasq.Worker.__init__,
                                 zerotasq.Worker.init, zerotasq.Worker.process])
def test_help_shows_annotations_as_code(obj):
    signature = str(inspect.signature(obj))
    assert "'" not in signature, signature
