"""A user's typed script: test_typing.py checks it with ``mypy --strict`` and runs it. Under
``warn_return_any`` (part of ``--strict``) each function below fails to check if zerotasq
hands back ``Any`` where the result type is known."""

import asyncio
import concurrent.futures as cf
from typing import Iterator, List

import zerotasq
from zerotasq import Executor, LoadBalancer, Pool, Worker


class Scale(Worker[str, float]):
    """A worker class with the documented ``init``: its own parameters, no override error."""

    def init(self, scale: float) -> None:
        self.scale = scale

    def process(self, request: str) -> float:
        return len(request) * self.scale


def length(text: str) -> int:
    return len(text)


def total(pool: Pool[str, float], words: List[str]) -> float:
    return sum(pool.imap(words))


def first_of_class_pool(words: List[str]) -> float:
    with Pool(Scale, n_workers=1, init_kwargs={"scale": 2.0}) as pool:
        return next(iter(pool.imap_unordered(words)))


def lengths(words: List[str]) -> List[int]:
    with Pool(length, n_workers=1) as pool:
        return pool.map(words)


def lazily(words: List[str]) -> Iterator[int]:
    return zerotasq.map(length, words, n_workers=1)


class Lengths(Worker[str, int]):
    """Batched: a list of requests in, a list of results out."""

    def process_batch(self, requests: List[str]) -> List[int]:
        return [len(r) for r in requests]


def lengths_of(texts: List[str]) -> List[int]:
    return [len(t) for t in texts]


def batched(words: List[str]) -> List[int]:
    with Pool(Lengths, n_workers=1, max_batch_size=8, task_timeout=30.0, worker_env={"A": "{slot}"}) as pool:
        first = pool.map(words)
    return first + list(zerotasq.map(lengths_of, words, n_workers=1, batched=True, max_batch_size=4))


def submitted(word: str) -> int:
    with Executor(max_workers=1) as ex:
        future: "cf.Future[int]" = ex.submit(length, word)
        return future.result()


def seed_style(words: List[str]) -> float:
    with LoadBalancer([Scale(init_kwargs={"scale": 1.0})], reply_sync=True) as conn:
        return sum(conn.iter(words))


async def streamed(words: List[str]) -> List[float]:
    with Pool([Scale(init_kwargs={"scale": 3.0})]) as pool:
        return [y async for y in pool.imap(words)]


def caught(words: List[str]) -> str:
    def picky(word: str) -> str:
        if word == "b":
            raise ValueError("no b")
        return word

    with Pool(picky, n_workers=1) as pool:
        try:
            return "".join(pool.imap(words))
        except ValueError as err:
            return "caught %s at task %s" % (err, getattr(err, "index", None))


if __name__ == "__main__":
    words = ["a", "bb", "ccc"]
    with Pool(Scale, n_workers=2, init_kwargs={"scale": 2.0}) as pool:
        assert total(pool, words) == 12.0
    assert first_of_class_pool(words) in (2.0, 4.0, 6.0)
    assert lengths(words) == [1, 2, 3]
    assert list(lazily(words)) == [1, 2, 3]
    assert submitted("four") == 4
    assert batched(words) == [1, 2, 3] * 2
    assert seed_style(words) == 6.0
    assert asyncio.run(streamed(words)) == [3.0, 6.0, 9.0]
    assert caught(["a", "b"]) == "caught no b at task 1"
    print("ok")
