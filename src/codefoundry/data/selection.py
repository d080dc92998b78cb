"""What goes into the dataset before quality filtering: language, license policy, vendored/generated."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from codefoundry.data import vendor
from codefoundry.data.license import allows
from codefoundry.data.pipeline import Filter

LicensePolicy = Literal["permissive", "permissive+no_license", "all"]
POLICY_TYPES = {"permissive": ("permissive",), "permissive+no_license": ("permissive", "no_license"),
                "all": ("permissive", "no_license", "non_permissive")}


class LanguageFilter(Filter):
    """Drop files of unknown language, and (with `languages`) files outside the selection."""

    name = "language"

    def __init__(self, languages: Iterable[str] | None = None) -> None:
        super().__init__()
        self.languages = sorted({lang.lower() for lang in languages}) if languages else None

    def reasons(self, batch: pa.Table) -> list[str | None]:
        langs = batch.column("lang").to_pylist()
        if self.languages is None:
            return [None if lang else "language:unknown" for lang in langs]
        wanted = set(self.languages)
        return [("language:unknown" if not lang else None if lang.lower() in wanted else "language:not_selected")
                for lang in langs]


class LicenseFilter(Filter):
    """Keep the license types the policy allows; the reason names the first offending license."""

    name = "license"
    columns = ("licenses", "license_type")

    def __init__(self, policy: LicensePolicy = "permissive", permissive: Iterable[str] = ()) -> None:
        super().__init__()
        self.allowed = POLICY_TYPES[policy]
        self.permissive = frozenset(permissive)

    def keep(self, record: dict[str, Any]) -> str | None:
        kind = record["license_type"] or "no_license"
        if kind in self.allowed:
            return None
        if kind == "no_license":
            return "license:no_license"
        offending = [lic for lic in record["licenses"] or [] if not allows(lic, self.permissive)]
        return f"license:{(offending or ['non_permissive'])[0].lower().removeprefix('licenseref-')}"


class VendorFilter(Filter):
    """The Stack v2 drops go-enry `is_vendor` and `is_generated` files; so does this step."""

    name = "vendor"
    columns = ("path", "content")

    def __init__(self, drop_vendored: bool = True, drop_generated: bool = True) -> None:
        super().__init__()
        self.drop_vendored, self.drop_generated = drop_vendored, drop_generated

    def keep(self, record: dict[str, Any]) -> str | None:
        path = record["path"] or ""
        if self.drop_vendored and vendor.is_vendor(path):
            return "vendored"
        if self.drop_generated and vendor.is_generated(path, record["content"]):
            return "generated"
        return None

    def reasons(self, batch: pa.Table) -> list[str | None]:
        if not (self.drop_vendored or self.drop_generated):
            return [None] * batch.num_rows
        heads = pc.utf8_slice_codeunits(pc.fill_null(batch.column("content"), ""), 0, 2000)
        rows = pa.table({"path": batch.column("path"), "content": heads}).to_pylist()
        return [self.keep(r) for r in rows]
