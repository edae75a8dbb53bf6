"""Mistakes ``mypy --strict`` must report (test_typing.py checks that each line marked
``# error`` is reported, and nothing else): they go unnoticed when results are ``Any``."""

from typing import List

import zerotasq
from zerotasq import Executor, LoadBalancer, Pool, Worker


class Scale(Worker[str, float]):
    def process(self, request: str) -> float:
        return float(len(request))


def length(text: str) -> int:
    return len(text)


def lengths(texts: List[str]) -> List[int]:
    return [len(t) for t in texts]


def mistakes() -> None:
    with Pool(length) as pool:
        pool.map([1, 2])  # error: ints to a function of str
        name: str = pool.map(["a"])[0]  # error: an int is no str
    with Pool(Scale) as scaled:
        names: List[str] = list(scaled.imap(["a"]))  # error: floats are no str
    first: str = next(zerotasq.map(length, ["a"]))  # error: an int is no str
    many: str = next(zerotasq.map(lengths, ["a"], batched=True))  # error: an int is no str
    with Executor() as ex:
        text: str = ex.submit(length, "a").result()  # error: an int is no str
    with LoadBalancer([Scale()]) as conn:
        conn.send(3)  # error: the worker takes str
    print(name, names, first, many, text)
