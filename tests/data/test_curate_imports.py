"""A curation's process imports only what curating needs: not pandas (pyarrow.dataset's import, ~0.5-1 s of start-up,
needed only by `data lookup`), nor the training or serving stacks."""

from __future__ import annotations

import json
import subprocess
import sys


def test_curation_imports_no_pandas_nor_training_stack() -> None:
    code = ("import json, sys, codefoundry.cli, codefoundry.data.curate, codefoundry.data.finalize; "
            "print(json.dumps(sorted(m for m in ('pandas', 'pyarrow.dataset', 'torch', 'transformers', 'datasets') "
            "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
