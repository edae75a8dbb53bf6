"""The ``zerotasq`` command of the wheel: runs the command-line binary that the wheel carries
in ``zerotasq/_bin`` (built by ``scripts/wheel``), so one ``pip install`` gives both faces.
An install built from source has no binary; ``cargo install --path crates/zerotasq-cli`` makes one.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    exe = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bin", "zerotasq")
    if not os.access(exe, os.X_OK):
        sys.exit(
            "zerotasq: this install of the Python package has no command-line binary (the wheel "
            "has one); install it with `cargo install --path crates/zerotasq-cli`"
        )
    os.execv(exe, [sys.argv[0], *sys.argv[1:]])
