"""Pool(..., http=...): Prometheus metrics and the dashboard from a Python pool, on loopback."""

import urllib.error
import urllib.request

import pytest
import zerotasq


def square(x):
    return x * x


def get(url, method="GET"):
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def test_a_pool_serves_its_metrics_and_dashboard():
    with zerotasq.Pool(square, n_workers=2, http="127.0.0.1:0") as pool:
        assert list(pool.imap(range(100))) == [x * x for x in range(100)]
        address = pool.http_address
        assert address.startswith("http://127.0.0.1:")
        status, page = get(address + "/metrics")
        assert status == 200
        lines = page.splitlines()
        assert any(line.startswith("zerotasq_tasks_completed_total ") for line in lines), page
        assert "# TYPE zerotasq_task_duration_seconds histogram" in lines
        status, html = get(address + "/")
        assert status == 200 and "<script src=\"/dashboard.js\">" in html
        assert get(address + "/metrics", method="POST")[0] == 405


def test_no_http_unless_asked_and_a_remote_address_is_refused():
    with zerotasq.Pool(square, n_workers=1) as pool:
        assert pool.http_address is None
    with pytest.raises(Exception, match="not loopback"):
        zerotasq.Pool(square, n_workers=1, http="0.0.0.0:0")
