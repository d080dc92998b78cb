"""Labelled evaluation sets for the data steps, used by the bench scripts and the tests (not shipped).

    near_duplicates   real files and controlled edits, truth by exact Jaccard (bench/dedup.py)
    pii               code files with planted PII and hard negatives (bench/pii.py)

Bench scripts run from bench/ import `labelled.…`; pytest puts bench/ on the path (pyproject).
"""
