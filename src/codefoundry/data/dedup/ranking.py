"""Which copy of a duplicate to keep: The Stack v2's ranking (bigcode-v2 `intra_dedup.py --rank`).

Best first: license_type permissive > no_license > non_permissive (unknown last), then more
stars, then more forks, then the earliest row in plan order (a stable tie-break; our rows
carry no revision or visit dates, which The Stack v2 uses before it).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

LICENSE_ORDER = {"permissive": 0, "no_license": 1, "non_permissive": 2}
RANK_DTYPE = np.dtype([("id", "<i8"), ("license", "<i8"), ("stars", "<i8"), ("forks", "<i8")])


def rank_records(batch: pa.Table, ids: np.ndarray) -> np.ndarray:
    """One RANK_DTYPE record per row: the row id and the keys its rank is decided by."""
    out = np.zeros(batch.num_rows, dtype=RANK_DTYPE)
    out["id"] = ids
    lic = batch.column("license_type").to_pylist()
    out["license"] = [LICENSE_ORDER.get(t, 3) for t in lic]
    for key in ("stars", "forks"):
        out[key] = pc.fill_null(batch.column(key), 0).to_numpy(zero_copy_only=False)
    return out


def best_per_group(groups: np.ndarray, records: np.ndarray) -> np.ndarray:
    """Boolean mask over `records`: True for the best-ranked record of each group label."""
    order = np.lexsort((records["id"], -records["forks"], -records["stars"], records["license"], groups))
    first = np.ones(len(order), dtype=bool)
    sorted_groups = groups[order]
    first[1:] = sorted_groups[1:] != sorted_groups[:-1]
    keep = np.zeros(len(records), dtype=bool)
    keep[order[first]] = True
    return keep
