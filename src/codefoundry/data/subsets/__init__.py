"""The subsets beside `files` (StarCoderData): Jupyter notebooks, git commits, GitHub issues.

    notebooks.py   `.ipynb` files of every source → structured or script form (nbformat)
    commits.py     the history of git sources (`--commits`) → before / message / after rows
    issues.py      a JSONL export of issues (`--issues FILE`) → issue threads, usernames replaced
    parts.py       each subset's work units and steps, from the curate config

Every subset's rows have The Stack's columns (`content` holds the formatted text, with
StarCoder's special tokens) and go through the same executor, finalization, stats, card and
indexes as files: `data/<subset>/` and `removed/<subset>/` in the dataset.
"""

from codefoundry.data.subsets.commits import CommitsConfig
from codefoundry.data.subsets.issues import IssuesConfig
from codefoundry.data.subsets.notebooks import NotebooksConfig
from codefoundry.data.subsets.part import SUBSETS, Part

__all__ = ["SUBSETS", "CommitsConfig", "IssuesConfig", "NotebooksConfig", "Part"]
