"""Two curations on the same --out: the second stops with one error line, the first finishes intact.

Before, the second cleared the first one's temporary files as its own leftovers, and the first died
with an internal error halfway.
"""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

MIT = ("MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy of this software "
       "and associated documentation files (the \"Software\"), to deal in the Software without restriction.\n")


def test_second_run_on_the_same_out_is_refused(tmp_path: Path) -> None:
    sources = []
    for i in range(30):  # one work unit each, run one at a time: the first run lasts a few seconds
        path = tmp_path / f"repo{i:02d}.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("LICENSE", MIT)
            for j in range(10):
                z.writestr(f"pkg/mod{j}.py", f"def f{i}_{j}(x):\n    return x * {i * 100 + j} + {j}\n" * 30)
        sources.append(str(path))
    out = tmp_path / "dataset"
    argv = [sys.executable, "-m", "codefoundry", "data", "curate", *sources, "--out", str(out), "-j", "1"]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / ".work" / "plan.json").exists():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    second = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err[-2000:]
    assert second.returncode == 1, second.stderr[-2000:]
    lines = [line for line in (second.stdout + second.stderr).splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "another run is writing" in lines[0], second.stdout + second.stderr
    assert (out / "manifest.json").exists() and not (out / ".work").exists()
