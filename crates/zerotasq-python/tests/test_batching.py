"""Batched inference with real worker processes: a ``Worker`` with ``process_batch`` (or a
function with ``batched=True``) gets lists of at most ``max_batch_size`` requests formed
from what is queued; the stream still yields one result per request, in order or as
completed. Failures keep their places: a raising batch fails exactly its own requests, a
wrong answer is an error for each (not a hang), a SIGKILL mid-batch loses nothing, a poison
request ends as ``WorkerLost`` alone; ``batch_wait`` is honoured and never waited out at the
end of the input."""

import collections
import os
import time

import pytest
import zerotasq
from kill_storm import imap_under_kill_storm
from test_remote import keys, no_remote_worker_left, remote_workers, stop  # noqa: F401 - fixture
from zerotasq import LoadBalancer, Pool, TaskError, Worker


class Sizes(Worker):
    """Answers each request with the size of the batch it came in (and the worker's pid)."""

    def init(self, pause=0.01):
        self.pause = pause

    def process_batch(self, requests):
        time.sleep(self.pause)
        return [(r, len(requests), os.getpid()) for r in requests]


@pytest.mark.parametrize("ordered", [True, False])
def test_batches_fill_up_to_the_size_and_results_keep_their_places(ordered):
    with Pool(Sizes, n_workers=2, max_batch_size=8) as pool:
        got = list(pool.imap(range(400), ordered=ordered))
        workers = pool.status()["workers"]
    assert sorted(r for r, _, _ in got) == list(range(400))
    if ordered:
        assert [r for r, _, _ in got] == list(range(400))
    sizes = [n for _, n, _ in got]
    assert max(sizes) == 8, collections.Counter(sizes)
    assert sum(n == 8 for n in sizes) > 200, "a queue of 400 makes full batches: %s" % collections.Counter(sizes)
    assert {w["max_batch"] for w in workers} == {8}
    assert max(w["mean_batch"] for w in workers) > 2, workers


def doubled(xs):
    return [2 * x for x in xs]


def test_a_function_takes_lists_through_map_and_pool():
    assert list(zerotasq.map(doubled, range(1000), batched=True, max_batch_size=16)) == [2 * x for x in range(1000)]
    with Pool(doubled, n_workers=2, batched=True) as pool:
        assert pool.map(range(100)) == [2 * x for x in range(100)]


class FailsWith7(Worker):
    """Raises for a batch holding a request ending in 7; notes every batch it is called with."""

    def init(self, log):
        self.log = log

    def process_batch(self, requests):
        bad = [r for r in requests if r % 10 == 7]
        with open(self.log, "a") as f:
            f.write("%s %s\n" % ("bad" if bad else "ok", ",".join(map(str, requests))))
        if bad:
            raise ValueError("no %d" % bad[0])
        return [-r for r in requests]


def test_a_raising_batch_fails_exactly_its_own_requests(tmp_path):
    log = tmp_path / "calls"
    with Pool(FailsWith7, n_workers=2, init_kwargs={"log": str(log)}, max_batch_size=5,
              return_exceptions=True) as pool:
        got = list(pool.imap(range(300)))
    calls = [line.split() for line in log.read_text().splitlines()]
    failed_batches = {int(r) for verdict, batch in calls if verdict == "bad" for r in batch.split(",")}
    errors = {i for i, g in enumerate(got) if isinstance(g, TaskError)}
    assert errors == failed_batches and errors >= set(range(7, 300, 10))
    assert all(got[i] == -i for i in range(300) if i not in errors)
    assert sum(len(batch.split(",")) for _, batch in calls) == 300, "each request was called once"
    for i in errors:
        e = got[i]
        assert isinstance(e, ValueError) and e.index == i and e.message.startswith("ValueError: no ")
        assert "process_batch" in e.remote_traceback


class Miscounts(Worker):
    def process_batch(self, requests):
        if len(requests) % 2:
            return {r: r for r in requests}
        return requests[1:]


def test_a_wrong_answer_is_an_error_for_each_request_not_a_hang():
    started = time.monotonic()
    with Pool(Miscounts, n_workers=2, max_batch_size=4, return_exceptions=True) as pool:
        got = list(pool.imap(range(100)))
    assert time.monotonic() - started < 30
    assert all(isinstance(g, TaskError) for g in got), got
    messages = collections.Counter(g.message for g in got)
    for message in messages:
        assert ("process_batch returned 1 results for a batch of 2 requests" in message
                or "process_batch returned 3 results for a batch of 4 requests" in message
                or ("process_batch returned a dict of length" in message and "it must return a list" in message)
                ), message


def slow_batch(xs):
    time.sleep(0.03)
    return xs


def test_sigkill_mid_batch_gives_every_request_one_outcome():
    n = 2000
    with Pool(slow_batch, n_workers=2, batched=True, max_batch_size=16, max_retries=5,
              return_exceptions=True) as pool:
        got, killed = imap_under_kill_storm(pool, range(n), every=0.5, most=4)
        stats = pool.stats()
    assert len(killed) >= 2, "the run ended before the kills"
    ids = collections.Counter(g.index if isinstance(g, TaskError) else g for g in got)
    assert sorted(ids) == list(range(n)) and set(ids.values()) == {1}
    assert stats["workers_lost"] >= 2 and stats["requeued"] > 0, stats
    assert not [g for g in got if isinstance(g, TaskError) and not isinstance(g, zerotasq.WorkerLost)]


def exit_on_13(xs):
    if 13 in xs:
        os._exit(1)
    time.sleep(0.005)
    return xs


def test_a_poison_request_inside_batches_is_lost_alone():
    with Pool(exit_on_13, n_workers=2, batched=True, max_batch_size=8, max_retries=2,
              return_exceptions=True) as pool:
        got = list(pool.imap(range(200)))
    assert isinstance(got[13], zerotasq.WorkerLost) and got[13].index == 13
    assert got[:13] + got[14:] == [x for x in range(200) if x != 13]


def test_batch_wait_gathers_requests_sent_one_by_one():
    def sizes(wait):
        with LoadBalancer([Sizes(init_kwargs={"pause": 0})], reply_sync=True, max_batch_size=8,
                          batch_wait=wait) as conn:
            conn.send(-1)  # the worker is up, and idle from here on
            assert conn.receive(timeout=30)[0] == -1
            for x in range(24):
                conn.send(x)
                time.sleep(0.02)
            got = [conn.receive(timeout=10) for _ in range(24)]
        assert [r for r, _, _ in got] == list(range(24))
        return collections.Counter(n for _, n, _ in got)

    waited = sizes(1.0)
    assert waited[8] >= 16, "three full batches from requests 20 ms apart: %s" % waited
    assert sizes(0.0)[1] >= 12, "no wait: the idle worker takes each request as it comes"


def test_batch_wait_is_never_waited_out_at_the_end_of_the_input():
    with Pool(Sizes, n_workers=2, max_batch_size=64, batch_wait=30) as pool:
        pool.map(range(2))  # the workers are up
        started = time.monotonic()
        assert [r for r, _, _ in pool.map(range(3))] == [0, 1, 2]
        assert [r for r, _, _ in pool.imap(x for x in range(100))] == list(range(100))
        assert time.monotonic() - started < 5
    started = time.monotonic()
    assert list(zerotasq.map(doubled, range(5), batched=True, batch_wait=30)) == [0, 2, 4, 6, 8]
    assert time.monotonic() - started < 10


def hang_with_17(xs):
    if 17 in xs:
        time.sleep(3600)
    return xs


def test_a_time_limit_is_per_call_and_a_hung_request_times_out_alone():
    with Pool(hang_with_17, n_workers=2, batched=True, max_batch_size=8, task_timeout=1, max_retries=2,
              return_exceptions=True) as pool:
        got = list(pool.imap(range(40)))
    assert isinstance(got[17], zerotasq.TaskTimeout), got[17]
    assert got[:17] + got[18:] == [x for x in range(40) if x != 17], "its batch-mates ran again alone"


def test_the_window_bounds_requests_not_batches():
    pulled = []

    def endless():
        for i in range(10**6):
            pulled.append(i)
            yield i

    with Pool(doubled, n_workers=2, batched=True, max_batch_size=64, window=100) as pool:
        results = pool.imap(endless())
        assert [next(results) for _ in range(500)] == [2 * x for x in range(500)]
        assert len(pulled) <= 500 + 100 + 1, len(pulled)
        results.close()


def sizes_here(xs):
    return [(x, len(xs)) for x in xs]


def test_remote_workers_take_batches_of_the_pools_size(keys):  # noqa: F811 - fixture
    with Pool(sizes_here, n_workers=0, batched=True, max_batch_size=4, listen_workers="tcp://127.0.0.1:0",
              key=keys["pool"] + ".key_secret", allow=keys["allowed"]) as pool:
        proc = remote_workers(pool.endpoints["workers"], keys, n=1)
        try:
            got = list(pool.imap(range(500)))
        finally:
            stop(proc)
    assert [x for x, _ in got] == list(range(500))
    sizes = collections.Counter(n for _, n in got)
    assert max(sizes) == 4 and sizes[4] > 100, sizes
    no_remote_worker_left()


class Batches(Worker):
    def process_batch(self, requests):
        return [(r, len(requests)) for r in requests]


class OneByOne(Worker):
    def process(self, request):
        return request, 0


def test_packs_from_a_client_elsewhere_are_batched_within_the_size():
    # A client of another program cannot know the workers batch; the one that does not
    # reports its busy time, so tiny items go in packs — to both workers.
    with Pool([Batches(), OneByOne()], max_batch_size=8, listen_clients="tcp://127.0.0.1:0", insecure=True) as pool:
        deadline = time.monotonic() + 30
        while len(pool.status()["workers"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        with zerotasq.connect(pool.endpoints["clients"], insecure=True) as client:
            got = list(client.imap(range(20000)))
        assert pool.stats()["submitted"] < 20000 / 4, "packed"
    assert [x for x, _ in got] == list(range(20000))
    sizes = collections.Counter(n for _, n in got)
    assert max(sizes) == 8 and sum(c for n, c in sizes.items() if n) > 100, sizes


def test_batching_settings_are_checked_at_the_call():
    with pytest.raises(ValueError, match="max_batch_size and batch_wait are for workers that define process_batch"):
        Pool(abs, max_batch_size=8)
    with pytest.raises(ValueError, match="batch_wait must be zero or more seconds"):
        Pool(Sizes, batch_wait=-1)
    with pytest.raises(ValueError, match="max_batch_size must be at least 1"):
        zerotasq.map(doubled, [1], batched=True, max_batch_size=0)
    with pytest.raises(TypeError, match="a Worker batches by defining process_batch"):
        Pool(Sizes, batched=True)
