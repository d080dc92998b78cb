"""`codefoundry data curate`: sources → work units → the curation steps → the dataset/ artifact.

Sources become work units (`sources/`), the config becomes the step list (`steps.py`), and
`finalize.make_dataset` runs them and writes the dataset (layout in finalize.py). The other
subsets (notebooks, commits, issues) are parts of the same job (`subsets/parts.py`). An
interrupted run resumes when the same command runs again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from codefoundry.data.config import CurateConfig
from codefoundry.data.finalize import Job, make_dataset
from codefoundry.data.pipeline.storage import is_remote, local_path, staging_dir
from codefoundry.data.sources import ReadOptions, resolve
from codefoundry.data.steps import build_steps
from codefoundry.data.subsets.notebooks import SUFFIX as NOTEBOOK_SUFFIX
from codefoundry.data.subsets.parts import subset_parts
from codefoundry.manifest import check_out_dir


def read_options(config: CurateConfig) -> ReadOptions:
    """How sources are read for `files` (notebooks, when curated as their own subset, are left to it)."""
    skip = (NOTEBOOK_SUFFIX,) if config.notebooks.enabled and config.notebooks.forms else ()
    return ReadOptions(config.limits, tuple(config.permissive_licenses), config.license_threshold, config.batch_rows,
                       skip_suffixes=skip)


def curate(sources: Sequence[str | Path], out: str | Path, config: CurateConfig | None = None,
           overwrite: bool = False) -> Path | str:
    """Curate `sources` into the dataset artifact `out` (a path, or an fsspec URL such as `s3://bucket/ds`);
    resumes an interrupted run of the same settings."""
    config = config or CurateConfig()
    names = [str(s) for s in sources]
    if not is_remote(out):  # before `--overwrite` clears it: never over, around or inside a source
        check_out_dir(out, "dataset", {f"source {n}": n for n in names if not is_remote(n)},
                      read_inside=[n for n in names if not is_remote(n)])
    units = resolve(names, read_options(config)) if names or not config.issues.files else []
    parts = subset_parts(config, units)
    if is_remote(out):
        url = str(out)
        return make_dataset(Job(staging_dir(url), units, build_steps(config), config, names, url=url, parts=parts),
                            overwrite=overwrite)
    return make_dataset(Job(local_path(out), units, build_steps(config), config, names, parts=parts),
                        overwrite=overwrite)
