"""`codefoundry data curate`: sources → work units → the curation steps → the dataset/ artifact.

Sources become work units (`sources/`), the config becomes the step list (`steps.py`), and
`finalize.make_dataset` runs them and writes the dataset (layout in finalize.py). An
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


def read_options(config: CurateConfig) -> ReadOptions:
    return ReadOptions(config.limits, tuple(config.permissive_licenses), config.license_threshold, config.batch_rows)


def curate(sources: Sequence[str | Path], out: str | Path, config: CurateConfig | None = None,
           overwrite: bool = False) -> Path | str:
    """Curate `sources` into the dataset artifact `out` (a path, or an fsspec URL such as `s3://bucket/ds`);
    resumes an interrupted run of the same settings."""
    config = config or CurateConfig()
    names = [str(s) for s in sources]
    units = resolve(names, read_options(config))
    if is_remote(out):
        url = str(out)
        return make_dataset(Job(staging_dir(url), units, build_steps(config), config, names, url=url),
                            overwrite=overwrite)
    return make_dataset(Job(local_path(out), units, build_steps(config), config, names), overwrite=overwrite)
