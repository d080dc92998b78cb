"""`codefoundry data curate` settings: one section per step, assembled here.

Each step's settings live beside the step (filters.py, dedup/, decontam.py, pii/, optout.py;
read limits in sources/); this module only puts them together and adds the stage-wide ones.
Defaults follow bigcode-dataset `preprocessing/arguments.py` and The Stack / StarCoder
papers where they say so beside the value; every one can be set in `--config FILE.yaml`:

    license_policy: permissive+no_license
    filters:
      basic: {enabled: true, line_max: 2000}
      html: {enabled: false}
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import Field, field_validator

from codefoundry.config import StageConfig
from codefoundry.data.decontam import DecontamConfig
from codefoundry.data.dedup.config import DedupConfig
from codefoundry.data.filters import FiltersConfig
from codefoundry.data.language import languages as known_languages
from codefoundry.data.license import PERMISSIVE
from codefoundry.data.optout import OptOutConfig
from codefoundry.data.pii.redact import PiiConfig
from codefoundry.data.pipeline import LocalExecutor, RayExecutor
from codefoundry.data.sources.unit import SourceLimits
from codefoundry.data.subsets import CommitsConfig, IssuesConfig, NotebooksConfig


class CurateConfig(StageConfig):
    """Settings of `codefoundry data curate`."""

    languages: list[str] | None = None
    """Keep only these languages (names as in The Stack: Python, C++, C#; case-insensitive). None: all."""
    license_policy: Literal["permissive", "permissive+no_license", "all"] = "permissive"
    """Which license types to keep: The Stack v1 kept permissive; v2 permissive + no_license."""
    permissive_licenses: list[str] = Field(default_factory=lambda: list(PERMISSIVE))
    """SPDX ids counted as permissive."""
    license_threshold: float = Field(0.75, gt=0, le=1)
    """Share of a reference license's word bigrams a license file must contain to match."""
    drop_vendored: bool = True     # The Stack v2: go-enry is_vendor
    drop_generated: bool = True    # The Stack v2: go-enry is_generated
    filters: FiltersConfig = FiltersConfig()
    limits: SourceLimits = SourceLimits()
    opt_out: OptOutConfig = OptOutConfig()
    """Repositories left out (`--opt-out FILE`): nothing of their content stays in the dataset."""
    dedup: DedupConfig = DedupConfig()
    """Exact and near (MinHash LSH) dedup; the best copy stays."""
    decontamination: DecontamConfig = DecontamConfig()
    """Files holding benchmark material are removed."""
    pii: PiiConfig = PiiConfig()
    """PII redaction (regular expressions and detect-secrets; no NER model)."""
    notebooks: NotebooksConfig = NotebooksConfig()
    """The `notebooks` subset: `.ipynb` files of the sources, parsed and rewritten (StarCoderData's forms)."""
    commits: CommitsConfig = CommitsConfig()
    """The `commits` subset: the history of git sources (`--commits`)."""
    issues: IssuesConfig = IssuesConfig()
    """The `issues` subset: JSONL exports of GitHub issues (`--issues FILE`)."""
    inspection_indexes: bool = True
    """Build index/ for `data search` (SQLite FTS5) and `data contains` (Bloom filter)."""
    workers: int | None = Field(None, ge=1)
    """Worker processes (None: number of cores); with Ray and no address, the CPUs of the local Ray instance."""
    executor: Literal["local", "ray"] = "local"
    """Where units run: local worker processes, or Ray tasks (`pip install 'codefoundry[ray]'`). Same bytes."""
    ray_address: str | None = None
    """Ray cluster to run on: "auto" (this machine's `ray start` cluster), "HOST:6379", "ray://HOST:10001".
    None: a Ray instance started on this machine for the run."""
    batch_rows: int = Field(2048, ge=1)
    shard_max_bytes: int = Field(256_000_000, ge=1)
    """Upper bound on the raw file bytes in one output shard."""
    removed_content: bool = False
    """Keep `content` in removed/ rows (off: removed rows keep everything but the text)."""

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: list[str] | None) -> list[str] | None:
        """A misspelt name would select nothing and remove every file: name it instead."""
        known = {lang.lower(): lang for lang in known_languages()}
        for name in value or []:
            if name.lower() not in known:
                close = difflib.get_close_matches(name.lower(), list(known), n=3)
                hint = f"; did you mean {', '.join(known[c] for c in close)}?" if close else ""
                raise ValueError(f"unknown language {name!r} (The Stack's names: Python, C++, JavaScript…){hint}")
        return value


def make_executor(config: CurateConfig) -> LocalExecutor:
    """The executor `config` asks for; both write the same `.work` layout, so either resumes the other's run."""
    if config.executor == "ray":
        return RayExecutor(config.workers, config.batch_rows, config.removed_content, config.ray_address)
    return LocalExecutor(config.workers, config.batch_rows, config.removed_content)
