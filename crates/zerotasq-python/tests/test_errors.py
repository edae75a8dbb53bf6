"""An exception in ``process`` arrives at its task's place as an instance of its own type
that is also a ``TaskError``, chaining the remote traceback; iteration goes on after it.
Types that cannot be rebuilt arrive as a plain ``TaskError`` carrying the original."""

import concurrent.futures as cf
import pickle
import subprocess
import sys
import textwrap

import pytest
import zerotasq
from zerotasq import LoadBalancer, Pool, TaskError, Worker


class Picky(Worker):
    def process(self, request):
        if request == 5:
            raise ValueError("boom in task %d" % request)
        return request


def test_raise_then_continue():
    with Pool(Picky, n_workers=2) as pool:
        it = iter(pool.imap(range(10)))
        got = [next(it) for _ in range(5)]
        with pytest.raises(TaskError) as info:
            next(it)
        got += list(it)
    assert got == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    err = info.value
    assert err.exc_type == "ValueError"
    assert str(err) == "boom in task 5"
    assert err.index == 5
    assert isinstance(err, ValueError)
    assert isinstance(err.original, ValueError) and err.original.args == err.args
    assert isinstance(err.__cause__, zerotasq.RemoteTraceback)
    assert "in process" in err.remote_traceback and "boom in task 5" in err.remote_traceback


def test_except_catches_the_original_type():
    with Pool(Picky, n_workers=2) as pool:
        try:
            pool.map(range(10))
        except ValueError as err:
            caught = err
    assert isinstance(caught, TaskError) and type(caught).__name__ == "ValueError"
    assert caught.index == 5 and "boom in task 5" in str(caught.__cause__)


def test_return_exceptions():
    with Pool(Picky, n_workers=2, return_exceptions=True) as pool:
        got = list(pool.imap_unordered(range(10)))
    errors = [g for g in got if isinstance(g, TaskError)]
    assert len(got) == 10 and len(errors) == 1
    assert isinstance(errors[0], ValueError) and errors[0].index == 5
    assert sorted(g for g in got if not isinstance(g, TaskError)) == [0, 1, 2, 3, 4, 6, 7, 8, 9]


class FailingInit(Worker):
    def init(self):
        raise RuntimeError("no model here")

    def process(self, request):
        return request


def test_init_failure_is_an_error_not_a_hang():
    with Pool(FailingInit, n_workers=1, return_exceptions=True) as pool:
        got = list(pool.imap(range(3)))
    assert len(got) == 3
    assert all(isinstance(g, zerotasq.InitFailed) for g in got)
    assert "no model here" in str(got[0])


class Custom(Exception):
    """An exception whose ``__init__`` takes other arguments than it passes on."""

    def __init__(self, code, note=""):
        super().__init__("code %d" % code)
        self.code = code
        self.note = note


class CannotSubclass(Exception):
    def __init_subclass__(cls, **kwargs):
        raise TypeError("no subclasses")


class OwnReduce(Exception):
    def __reduce__(self):
        return (_own_reduce, self.args)


def _own_reduce(*args):
    return OwnReduce(*args)


def raising(kind):
    if kind == "custom":
        raise Custom(7, note="seven")
    if kind == "key":
        raise KeyError("missing")
    if kind == "os":
        raise FileNotFoundError(2, "No such file", "/nowhere")
    if kind == "final":
        raise CannotSubclass("final")
    if kind == "own_reduce":
        raise OwnReduce("reduced")
    if kind == "exit":
        raise SystemExit(4)
    return kind


def test_rebuilt_types_keep_their_arguments_and_attributes():
    with Pool(raising, n_workers=1, return_exceptions=True) as pool:
        custom, key, os_error = pool.map(["custom", "key", "os"])
    assert isinstance(custom, Custom) and isinstance(custom, TaskError)
    assert (custom.code, custom.note, str(custom), custom.index) == (7, "seven", "code 7", 0)
    assert isinstance(key, KeyError) and str(key) == "'missing'" and key.index == 1
    assert isinstance(os_error, FileNotFoundError)
    assert (os_error.errno, os_error.filename) == (2, "/nowhere")
    with Pool(raising, n_workers=1, return_exceptions=True) as pool:
        assert type(pool.map(["custom"])[0]) is type(custom)
    again = pickle.loads(pickle.dumps(os_error))
    assert isinstance(again, FileNotFoundError) and isinstance(again, TaskError)
    assert (again.filename, again.index) == ("/nowhere", 2)


def test_types_that_cannot_be_rebuilt_arrive_as_task_error():
    with Pool(raising, n_workers=1, return_exceptions=True) as pool:
        final, own, exit_ = pool.map(["final", "own_reduce", "exit"])
    for err, original in [(final, CannotSubclass), (own, OwnReduce), (exit_, SystemExit)]:
        assert type(err) is TaskError
        assert isinstance(err.original, original) and err.__cause__ is err.original
    assert final.index == 0 and "final" in str(final)
    assert isinstance(exit_.__cause__.__cause__, zerotasq.RemoteTraceback)


def test_load_balancer_and_executor_raise_the_original_type():
    with LoadBalancer([Picky()], reply_sync=True) as conn:
        with pytest.raises(ValueError) as info:
            list(conn.iter(range(10)))
        assert isinstance(info.value, TaskError)
        conn.send(5)
        with pytest.raises(ValueError):
            conn.receive(timeout=30)
    with zerotasq.Executor(max_workers=1) as ex:
        future = ex.submit(raising, "key")
        with pytest.raises(KeyError):
            future.result(timeout=30)
        assert isinstance(future.exception(), TaskError)
        for f in cf.as_completed([ex.submit(raising, "custom")], timeout=30):
            assert isinstance(f.exception(), Custom)


SCRIPT = textwrap.dedent("""\
    import zerotasq

    class BadInput(Exception):
        pass

    class Model(zerotasq.Worker):
        def process(self, x):
            if x == 2:
                raise BadInput("no %d" % x)
            return x

    if __name__ == "__main__":
        with zerotasq.Pool(Model, n_workers=1) as pool:
            try:
                pool.map(range(4))
            except BadInput as err:
                assert isinstance(err, zerotasq.TaskError) and err.index == 2
                raise
""")


def test_a_script_catches_its_own_exception_class_and_sees_its_own_lines(tmp_path):
    script = tmp_path / "my_script.py"
    script.write_text(SCRIPT)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    # The worker's frame: the script's own file, line and source, not "<dynamic-code>".
    assert 'File "%s", line 9, in process' % script in run.stderr, run.stderr
    assert 'raise BadInput("no %d" % x)' in run.stderr
    lines = run.stderr.rstrip().splitlines()
    if sys.version_info >= (3, 11):  # exception notes
        assert lines.pop() == "(zerotasq: raised in a worker by task #2)"
    assert lines[-1] in ("BadInput: no 2", "__main__.BadInput: no 2")  # the module named before 3.10
