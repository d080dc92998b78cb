"""A curation's process imports only what curating needs: not pandas' dataset layer (pyarrow.dataset, ~0.5-1 s of
start-up, needed only by `data lookup`), nor the training or serving stacks — at import and during a real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

NOT_IMPORTED = ("pyarrow.dataset", "torch", "transformers", "datasets")
"""Modules no curation imports. pandas is not among them: pyarrow imports it on its first conversion of a Python
list (`pa.array` asks whether the list is a pandas object), which every curation makes."""

AT_IMPORT = (*NOT_IMPORTED, "pandas")


def imported(code: str, env: dict[str, str] | None = None) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_curation_imports_no_pandas_nor_training_stack() -> None:
    code = ("import json, sys, codefoundry.cli, codefoundry.data.curate, codefoundry.data.finalize; "
            f"print(json.dumps(sorted(m for m in {AT_IMPORT!r} if m in sys.modules)))")
    assert imported(code) == []


def test_a_real_curation_imports_none_of_the_listed_modules(tmp_path: Path) -> None:
    source = tmp_path / "repo"
    source.mkdir()
    (source / "LICENSE").write_text("MIT License\n\nCopyright (c) 2024 Zoë\n")
    (source / "main.py").write_text("def main():\n    return 'héllo'\n" * 20)
    (source / "util.py").write_bytes(b"import os\r\n\r\ndef cwd():\r\n    return os.getcwd()\r\n" * 10)
    (source / "empty.py").write_text("")
    code = ("import json, sys\n"
            "from codefoundry.data.config import CurateConfig\n"
            "from codefoundry.data.curate import curate\n"
            f"curate([{str(source)!r}], {str(tmp_path / 'out')!r}, CurateConfig(workers=1))\n"
            f"print(json.dumps(sorted(m for m in {NOT_IMPORTED!r} if m in sys.modules)))")
    env = {**os.environ, "CODEFOUNDRY_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    assert imported(code, env) == []
    assert (tmp_path / "out" / "manifest.json").is_file()
