"""Pickle protocol 5 out-of-band buffers: objects that hand their memory to
``buffer_callback`` (numpy arrays, or ``Blob`` below) travel as raw buffers beside the pickle,
as tasks and as results, small and big, and arrive equal and writable."""

import pickle

import pytest
from zerotasq import Pool


def _rebuild(buf):
    return Blob(buf)


class Blob:
    """Bytes that pickle out of band (protocol 5), like a numpy array."""

    def __init__(self, data):
        self.data = data

    def __reduce_ex__(self, protocol):
        if protocol >= 5:
            return _rebuild, (pickle.PickleBuffer(self.data),)
        return _rebuild, (bytes(self.data),)

    def __eq__(self, other):
        return isinstance(other, Blob) and bytes(self.data) == bytes(other.data)


def reverse(blob):
    # the received buffer must be writable, like numpy's out-of-band arrays
    memoryview(blob.data)[0:1] = b"\x00"
    return Blob(bytearray(reversed(bytes(blob.data))))


@pytest.mark.parametrize("size", [10, 3 << 20])
def test_out_of_band_tasks_and_results(size):
    blobs = [Blob(bytearray(bytes([i % 251]) * size) + b"end") for i in range(6)]
    with Pool(reverse, n_workers=2) as pool:
        got = pool.map(blobs)
    for blob, back in zip(blobs, got):
        sent = bytearray(blob.data)
        sent[0] = 0
        assert back == Blob(bytearray(reversed(bytes(sent))))


def _double(a):
    return a * 2


def test_numpy_arrays_round_trip():
    import numpy as np  # installed by scripts/test-python: this test must run, not skip
    arrays = [np.arange(n, dtype=np.float64) for n in (3, 200_000)]
    with Pool(_double, n_workers=2) as pool:
        got = pool.map(arrays)
    for a, b in zip(arrays, got):
        assert b.flags.writeable
        np.testing.assert_array_equal(b, a * 2)
