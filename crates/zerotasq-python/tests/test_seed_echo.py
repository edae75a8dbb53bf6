"""The seed's own usage: its echo worker over 1,000 tasks via ``iter`` (ordered and
unordered) and via ``send``/``receive`` from two threads."""

import threading

import pytest
from zerotasq import LoadBalancer, Worker

N = 1000


class EchoWorker(Worker):
    def init(self, prefix=""):
        self.prefix = prefix

    def process(self, request):
        return self.prefix + request


def workers(n=2):
    return [EchoWorker(init_kwargs={"prefix": "echo:"}, loglevel=1) for _ in range(n)]


def tasks():
    return ["task %d" % i for i in range(N)]


@pytest.mark.parametrize("reply_sync", [True, False])
def test_iter(reply_sync):
    with LoadBalancer(workers(), reply_sync=reply_sync) as conn:
        results = list(conn.iter(iter(tasks()), cache_size=100))
    expected = ["echo:" + t for t in tasks()]
    assert len(results) == N
    if reply_sync:
        assert results == expected
    else:
        assert sorted(results) == sorted(expected)


@pytest.mark.parametrize("reply_sync", [True, False])
def test_send_receive_two_threads(reply_sync):
    received = []
    with LoadBalancer(workers(), reply_sync=reply_sync) as conn:
        def sender():
            for t in tasks():
                conn.send(t)

        def receiver():
            for _ in range(N):
                received.append(conn.receive())

        threads = [threading.Thread(target=sender), threading.Thread(target=receiver)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    expected = ["echo:" + t for t in tasks()]
    if reply_sync:
        assert received == expected
    else:
        assert sorted(received) == sorted(expected)


def test_workers_may_differ():
    ws = [EchoWorker(init_kwargs={"prefix": "a:"}), EchoWorker(init_kwargs={"prefix": "b:"})]
    with LoadBalancer(ws, reply_sync=True) as conn:
        results = list(conn.iter(["x"] * 200, cache_size=10))
    assert set(results) <= {"a:x", "b:x"} and len(results) == 200
