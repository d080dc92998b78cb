"""License detection for each file of a repository, and The Stack v2's `license_type`.

Evidence (`evidence.py`), each kind applying to its directory and below:
- license files in any directory (`names.py`: LICENSE*, COPYING*, gpl-3.0.txt, LICENSES/*),
  identified by matching their text against the reference texts in `texts/` (`match.py`);
  text the references do not explain is read for added restrictions (`verdict.py`), and a
  license file we cannot identify is evidence too (`LicenseRef-unknown`), never noise;
- package metadata in any directory (`metadata.py`: pyproject.toml, setup.py, setup.cfg,
  package.json, Cargo.toml, METADATA / PKG-INFO); an id we do not know is declared, not absent;
- `SPDX-License-Identifier:` lines in a file's header, for that file.
License and metadata files are decoded leniently (BOM, UTF-16, Latin-1: `names.decode_lenient`).
`license_type` follows The Stack v2 (`the-stack-v2: 3_file_dataset/get_license_types.py`):
permissive if at least one license is on the permissive list and none is off it (an SPDX `OR`
is one license the user may choose: it is on the list when any of its alternatives is),
no_license if nothing was detected, else non_permissive.
"""

from __future__ import annotations

from collections.abc import Iterable

from codefoundry.data.license.evidence import LicenseEvidence, combine, detect, spdx_headers
from codefoundry.data.license.match import DEFAULT_THRESHOLD, identify
from codefoundry.data.license.metadata import UNKNOWN, from_core_metadata, from_metadata
from codefoundry.data.license.names import decode_lenient, is_license_file, is_metadata_file
from codefoundry.data.license.spdx import allows
from codefoundry.data.license.verdict import MODIFIED, license_file_ids

PERMISSIVE = (  # default permissive list (Blue Oak Council's permissive ratings, plus public-domain dedications)
    "0BSD", "AFL-3.0", "Apache-2.0", "Artistic-2.0", "BlueOak-1.0.0", "BSD-2-Clause", "BSD-2-Clause-Patent",
    "BSD-3-Clause", "BSD-3-Clause-Clear", "BSD-4-Clause", "BSL-1.0", "CC-BY-4.0", "CC0-1.0", "ECL-2.0", "HPND",
    "ISC", "MIT", "MIT-0", "MIT-CMU", "MS-PL", "MulanPSL-2.0", "NCSA", "PostgreSQL", "PSF-2.0", "Python-2.0", "UPL-1.0",
    "Unlicense", "WTFPL", "Zlib",
)
PERMISSIVE_TYPES = ("permissive", "no_license", "non_permissive")


def from_license_text(text: str, threshold: float = DEFAULT_THRESHOLD) -> list[str]:
    """The ids a license file's text gives (matched ids, plus LicenseRef-modified / LicenseRef-unknown)."""
    return license_file_ids("LICENSE", text, threshold)


def license_type(licenses: Iterable[str], permissive: Iterable[str] = PERMISSIVE) -> str:
    """permissive | no_license | non_permissive, as The Stack v2 decides (markers are never permissive);
    an SPDX choice ("GPL-3.0 OR MIT") is permissive when any alternative is."""
    ids = set(licenses)
    if not ids:
        return "no_license"
    allowed = set(permissive) - {MODIFIED, UNKNOWN}
    return "permissive" if all(allows(i, allowed) for i in ids) else "non_permissive"


__all__ = ["DEFAULT_THRESHOLD", "MODIFIED", "PERMISSIVE", "UNKNOWN", "LicenseEvidence", "allows", "combine",
           "decode_lenient", "detect", "from_core_metadata", "from_license_text", "from_metadata", "identify",
           "is_license_file", "is_metadata_file", "license_file_ids", "license_type", "spdx_headers"]
