"""Types a user's code sees under ``mypy --strict``: results typed from the worker (a
``Worker[In, Out]`` class or a function), ``init`` with any parameters, and mistakes
reported. mypy runs on the scripts in typed/."""

import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TYPED = os.path.join(HERE, "typed")


def _mypy(path):
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-error-summary", path],
                          capture_output=True, text=True, cwd=os.path.dirname(HERE), timeout=300)


def test_a_typed_user_script_checks_and_runs():
    script = os.path.join(TYPED, "user_script.py")
    checked = _mypy(script)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    run = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_mistakes_are_reported():
    script = os.path.join(TYPED, "misuse.py")
    with open(script) as f:
        expected = {n for n, line in enumerate(f, 1) if "  # error:" in line}
    checked = _mypy(script)
    reported = {int(m.group(1)) for m in re.finditer(r"misuse\.py:(\d+): error", checked.stdout)}
    assert reported == expected, checked.stdout
