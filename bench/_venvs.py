"""The anchors' bench-only virtual environments, each pinned by a requirements file.

`anchor_python("datatrove")` returns the interpreter of `bench/.venv-datatrove`, built from
`bench/requirements-datatrove.txt` on first use. Each file is a `pip freeze` of a venv that
ran the bench, so every package is pinned and a fresh clone installs the same set; a stamp
with the file's sha256 rebuilds the venv when the file changes. (The leading underscore keeps
`make bench` from running this module as a bench.)
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def anchor_python(name: str) -> Path:
    """The python of the anchor venv `name` (datatrove, datasketch), installed from its requirements file."""
    requirements = BENCH / f"requirements-{name}.txt"
    venv = BENCH / f".venv-{name}"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        print(f"installing {requirements.name} into {venv} (once)", file=sys.stderr)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)], check=True)
        stamp.write_text(digest)
    return python
