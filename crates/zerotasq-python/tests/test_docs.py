"""The docs a user reads first: the quick start of docs/python.md runs as it is, and
docs/distributed.md does not call the Python face's remote workers unbuilt."""

import os
import re
import subprocess
import sys

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "docs")


def _read(name):
    with open(os.path.join(DOCS, name)) as f:
        return f.read()


def test_the_python_quick_start_runs(tmp_path):
    first_block = re.search(r"```python\n(.*?)```", _read("python.md"), re.S).group(1)
    script = tmp_path / "quick_start.py"
    script.write_text(first_block)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[0.5, 1.0]"


def test_distributed_docs_know_the_python_remote_workers():
    text = _read("distributed.md")
    assert "not built" not in text
    assert "python -m zerotasq worker --connect" in text
