"""Across machines, over real TCP on loopback with CURVE: remote workers started with
``python -m zerotasq worker --connect`` are sent the worker definition (code from this test
module, which they cannot import, travels by value), mix with local workers and may join
mid-stream; clients connect with ``zerotasq.connect``, to a pool or to a standalone
``zerotasq broker``. A peer without a listed key gets no task, submits nothing, and a pickle
payload it sends is never unpickled anywhere."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import zerotasq
from zerotasq import Pool

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(zerotasq.__file__)))
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


@pytest.fixture
def keys(tmp_path):
    """Key pairs: the pool's, a worker's, a client's and a stranger's (not admitted)."""
    paths = {}
    for name in ("pool", "worker", "client", "stranger"):
        zerotasq.keygen(str(tmp_path / name))
        paths[name] = str(tmp_path / name)
    with open(tmp_path / "allowed.keys", "w") as f:
        for name in ("worker", "client"):
            with open(paths[name] + ".key") as key:
                f.write(key.read())
    paths["allowed"] = str(tmp_path / "allowed.keys")
    return paths


# Marks the remote workers this test run starts (they inherit it), so the check that none
# is left sees only ours, not another run's on the same machine.
RUN_MARKER = "%d-%d" % (os.getpid(), time.monotonic_ns())


def remote_workers(endpoint, keys, who="worker", n=1, extra=(), cwd=None):
    """``python -m zerotasq worker`` in another directory, with only the package importable:
    it cannot import this test module."""
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT, ZT_TEST_RUN=RUN_MARKER)
    cmd = [sys.executable, "-m", "zerotasq", "worker", "--connect", endpoint, "-n", str(n),
           "--server-key", keys["pool"] + ".key", "--key", keys[who] + ".key_secret", *extra]
    return subprocess.Popen(cmd, cwd=cwd or "/", env=env, stderr=subprocess.PIPE, text=True)


def stop(proc):
    """Ctrl-C: the command stops its workers and exits 130."""
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 130, err
    return err


def remote_worker_pids():
    """The remote worker processes this test run started that are still there."""
    left = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                remote = b"zerotasq._remote" in f.read()
            with open("/proc/%s/environ" % pid, "rb") as f:
                ours = ("ZT_TEST_RUN=" + RUN_MARKER).encode() in f.read().split(b"\0")
            if remote and ours:
                left.append(int(pid))
        except OSError:
            pass
    return left


def no_remote_worker_left():
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = remote_worker_pids()
        if not left:
            return
        time.sleep(0.05)
    raise AssertionError("remote worker processes left: %s" % left)


def with_pid(x):
    time.sleep(0.002)
    return x, os.getpid()


class Evil:
    """Unpickling it creates a file: proof that a payload was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_remote_workers_are_sent_a_closure_defined_here(keys):
    offset = 7

    def shift(x):  # a closure of this test: only by value can a remote worker run it
        return x + offset

    with Pool(shift, n_workers=0, listen_workers="tcp://127.0.0.1:0", key=keys["pool"] + ".key_secret",
              allow=keys["allowed"]) as pool:
        proc = remote_workers(pool.endpoints["workers"], keys, n=2)
        try:
            got = list(pool.imap(range(5000)))
            assert pool.stats()["workers_ready"] >= 1
        finally:
            err = stop(proc)
    assert got == [x + 7 for x in range(5000)]
    assert "2 workers joining" in err
    no_remote_worker_left()


def test_a_remote_worker_joins_mid_stream_beside_local_ones(keys):
    with Pool(with_pid, n_workers=1, listen_workers="tcp://127.0.0.1:0", key=keys["pool"] + ".key_secret",
              allow=keys["allowed"]) as pool:
        results = pool.imap(range(3000), window=64)
        got = [next(results) for _ in range(300)]
        local = set(pool.worker_pids())
        proc = remote_workers(pool.endpoints["workers"], keys)
        try:
            got.extend(results)
        finally:
            stop(proc)
    assert [x for x, _ in got] == list(range(3000))
    remote = {pid for _, pid in got[300:]} - local
    assert remote, "the remote worker did no task"
    no_remote_worker_left()


def test_a_sigkilled_worker_command_takes_its_workers_along(keys):
    # The pool lives on, so its heartbeats cannot end them: only their parent-death signal.
    with Pool(with_pid, n_workers=0, listen_workers="tcp://127.0.0.1:0", key=keys["pool"] + ".key_secret",
              allow=keys["allowed"]) as pool:
        proc = remote_workers(pool.endpoints["workers"], keys, n=2)
        try:
            got = list(pool.imap(range(100)))
            proc.kill()
            proc.wait(timeout=10)
            no_remote_worker_left()
        finally:
            proc.kill()
            proc.stderr.close()
            for pid in remote_worker_pids():
                os.kill(pid, signal.SIGKILL)
    assert [x for x, _ in got] == list(range(100))


def test_strangers_get_nothing_and_their_pickles_are_never_loaded(keys, tmp_path):
    planted = str(tmp_path / "planted-by-stranger")
    with Pool(with_pid, n_workers=1, listen_workers="tcp://127.0.0.1:0",
              listen_clients="tcp://127.0.0.1:0", key=keys["pool"] + ".key_secret",
              allow=keys["allowed"]) as pool:
        endpoints = pool.endpoints
        stranger_worker = remote_workers(endpoints["workers"], keys, who="stranger", extra=["--patience", "1"])
        # A client with an unknown key, and one without CURVE at all, submit the payload.
        for client in (zerotasq.connect(endpoints["clients"], server_key=keys["pool"] + ".key",
                                        key=keys["stranger"] + ".key_secret", patience=1.5),
                       zerotasq.connect(endpoints["clients"], insecure=True, patience=1.5)):
            with client:
                got = list(client.imap([Evil(planted)], return_exceptions=True))
            assert len(got) == 1 and isinstance(got[0], zerotasq.TaskError), got
            assert "unreachable" in str(got[0]) or "refused" in str(got[0]), got[0]
        # Raw bytes on both ports: the pickle itself, no handshake.
        import pickle

        for endpoint in endpoints.values():
            host, port = endpoint[len("tcp://"):].rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(pickle.dumps(Evil(planted)) * 4)
                time.sleep(0.2)
        try:
            got = list(pool.imap(range(10_000)))
        finally:
            err = stop(stranger_worker)
        assert [x for x, _ in got] == list(range(10_000))
        assert {pid for _, pid in got} <= set(pool.worker_pids()), "a stranger ran tasks"
        assert pool.stats()["workers_ready"] == 1
        assert not os.path.exists(planted), "a stranger's pickle was loaded"
        # The same payload from an admitted client is loaded: the check above can fail.
        admitted = str(tmp_path / "planted-by-client")
        with zerotasq.connect(endpoints["clients"], server_key=keys["pool"] + ".key",
                              key=keys["client"] + ".key_secret") as client:
            list(client.imap([Evil(admitted)], return_exceptions=True))
        assert os.path.exists(admitted)
    assert "no worker definition" in err and "unreachable" in err, err
    no_remote_worker_left()


def test_python_client_and_worker_through_a_standalone_broker(keys, tmp_path):
    binary = os.environ.get("ZEROTASQ_BIN") or next(
        (p for p in (os.path.join(REPO, "target", d, "zerotasq") for d in ("debug", "release")) if os.path.exists(p)),
        None)
    assert binary, "the zerotasq binary is needed (cargo build -p zerotasq-cli), or ZEROTASQ_BIN"
    with open(tmp_path / "module_for_broker.py", "w") as f:
        f.write("def triple(x):\n    return 3 * x\n")
    broker = subprocess.Popen([binary, "broker", "--clients", "tcp://127.0.0.1:0", "--workers", "tcp://127.0.0.1:0",
                               "--key", keys["pool"] + ".key_secret", "--allow", keys["allowed"]],
                              stdout=subprocess.PIPE, text=True)
    try:
        endpoints = {}
        while len(endpoints) < 2:
            line = broker.stdout.readline()  # "clients tcp://…", then "workers tcp://…"
            assert line, "the broker exited"
            side, endpoint = line.split()
            endpoints[side] = endpoint
        # A standalone broker has no definition to send: the worker names its own.
        proc = remote_workers(endpoints["workers"], keys, extra=["--worker", "module_for_broker:triple"],
                              cwd=str(tmp_path))
        try:
            with zerotasq.connect(endpoints["clients"], server_key=keys["pool"] + ".key",
                                  key=keys["client"] + ".key_secret", patience=10) as client:
                got = client.map(range(1000))
                status = client.status()
        finally:
            stop(proc)
        assert got == [3 * x for x in range(1000)]
        assert status["totals"]["completed"] >= 1000
        assert len(status["workers"]) == 1 and status["workers"][0]["completed"] >= 1, status
    finally:
        broker.send_signal(signal.SIGINT)
        broker.communicate(timeout=10)
    no_remote_worker_left()


def test_keygen_command(tmp_path):
    def run(*a):
        return subprocess.run([sys.executable, "-m", "zerotasq", *a], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=PACKAGE_ROOT))
    first = run("keygen", str(tmp_path / "k"))
    assert first.returncode == 0, first.stderr
    assert os.stat(tmp_path / "k.key_secret").st_mode & 0o077 == 0
    again = run("keygen", str(tmp_path / "k"))
    assert again.returncode == 2 and "exists" in again.stderr


def test_worker_command_refuses_missing_keys_and_plain_tcp_off_loopback(tmp_path):
    def run(*a):
        return subprocess.run([sys.executable, "-m", "zerotasq", "worker", *a], capture_output=True,
                              text=True, env=dict(os.environ, PYTHONPATH=PACKAGE_ROOT), timeout=30)
    missing = run("--connect", "tcp://127.0.0.1:1", "--server-key", str(tmp_path / "none.key"),
                  "--key", str(tmp_path / "none.key_secret"))
    assert missing.returncode == 2 and "none" in missing.stderr
    no_keys = run("--connect", "tcp://127.0.0.1:1")
    assert no_keys.returncode == 2 and "--server-key" in no_keys.stderr
    plain = run("--connect", "tcp://10.1.2.3:5556", "--insecure")
    assert plain.returncode == 2 and "plain TCP" in plain.stderr


def test_pool_refuses_plain_tcp_off_loopback_and_listening_without_keys(keys):
    with pytest.raises(zerotasq.PoolError, match="plain TCP"):
        Pool(with_pid, n_workers=1, listen_workers="tcp://0.0.0.0:0", insecure=True)
    with pytest.raises(zerotasq.PoolError, match="key="):
        Pool(with_pid, n_workers=1, listen_workers="tcp://127.0.0.1:0")
    with pytest.raises(zerotasq.PoolError, match="no public key"):
        empty = keys["allowed"] + ".empty"
        with open(empty, "w") as f:
            f.write("# nobody\n")
        Pool(with_pid, n_workers=1, listen_workers="tcp://127.0.0.1:0", key=keys["pool"] + ".key_secret", allow=empty)
    # Plain TCP on loopback, asked for explicitly, works.
    with Pool(with_pid, n_workers=1, listen_workers="tcp://127.0.0.1:0", insecure=True) as pool:
        assert pool.endpoints["workers"].startswith("tcp://127.0.0.1:")
        assert [x for x, _ in pool.map(range(10))] == list(range(10))


def test_remote_workers_take_up_the_new_definition_of_a_new_pool(keys):
    """Remote workers outlive a pool; the next pool on that address (an edited script run
    again) must not get the old code: the workers notice the new definition and restart."""
    def plus_one(x):
        return x + 1

    def times_ten(x):
        return x * 10

    tcp = dict(key=keys["pool"] + ".key_secret", allow=keys["allowed"])
    with Pool(plus_one, n_workers=0, listen_workers="tcp://127.0.0.1:0", **tcp) as pool:
        endpoint = pool.endpoints["workers"]
        proc = remote_workers(endpoint, keys)
        try:
            assert pool.map(range(100)) == [x + 1 for x in range(100)]
        except BaseException:
            stop(proc)
            raise
    try:
        with Pool(times_ten, n_workers=0, listen_workers=endpoint, **tcp) as pool:
            assert pool.map(range(100)) == [x * 10 for x in range(100)]
    finally:
        err = stop(proc)
    assert "another worker definition" in err, err
    no_remote_worker_left()


def test_a_client_outlives_a_broker_killed_and_restarted_mid_run(keys, tmp_path):
    # kill -9 of `zerotasq broker` mid-run, and the same broker again on the same ports a
    # second later: the client submits again what it still waited for, and its results are
    # exactly an undisturbed run's.
    binary = os.environ.get("ZEROTASQ_BIN") or next(
        (p for p in (os.path.join(REPO, "target", d, "zerotasq") for d in ("debug", "release")) if os.path.exists(p)),
        None)
    assert binary, "the zerotasq binary is needed (cargo build -p zerotasq-cli), or ZEROTASQ_BIN"
    with open(tmp_path / "slow_module.py", "w") as f:
        f.write("import time\ndef double(x):\n    time.sleep(0.002)\n    return 2 * x\n")

    def start_broker(clients="tcp://127.0.0.1:0", workers="tcp://127.0.0.1:0"):
        broker = subprocess.Popen([binary, "broker", "--clients", clients, "--workers", workers,
                                   "--key", keys["pool"] + ".key_secret", "--allow", keys["allowed"]],
                                  stdout=subprocess.PIPE, text=True)
        endpoints = {}
        while len(endpoints) < 2:
            line = broker.stdout.readline()
            assert line, "the broker exited"
            side, endpoint = line.split()
            endpoints[side] = endpoint
        return broker, endpoints

    broker, endpoints = start_broker()
    proc = remote_workers(endpoints["workers"], keys, n=2, extra=["--worker", "slow_module:double"],
                          cwd=str(tmp_path))
    restarted = None
    try:
        with zerotasq.connect(endpoints["clients"], server_key=keys["pool"] + ".key",
                              key=keys["client"] + ".key_secret", patience=10) as client:
            got = []
            for i, result in enumerate(client.imap(range(3000))):
                got.append(result)
                if i == 300:
                    broker.kill()  # SIGKILL
                    broker.wait()
                    broker.stdout.close()
                    time.sleep(1)
                    restarted, _ = start_broker(endpoints["clients"], endpoints["workers"])
        assert got == [2 * x for x in range(3000)]
    finally:
        stop(proc)
        for b in (broker, restarted):
            if b is not None and b.poll() is None:
                b.send_signal(signal.SIGINT)
                b.communicate(timeout=10)
    no_remote_worker_left()
