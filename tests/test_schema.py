"""docs/report_schema.md documents exactly the fields of the typed results in toolchain/results.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from toolchain import results

DOC = Path(__file__).resolve().parents[1] / "docs" / "report_schema.md"
CLASSES = ("VerifyReport", "BenchResult", "TargetBenchResult", "ExportManifest", "EngineManifest", "PipelineSummary")


def _documented_keys(cls_name: str) -> list[str]:
    """First-column keys of the first table after the ``## `ClassName` `` heading."""
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"^## `{cls_name}`.*?$(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"docs/report_schema.md has no section for {cls_name}"
    keys: list[str] = []
    in_table = False
    for line in m.group(1).splitlines():
        if line.startswith("| key |"):
            in_table = True
            continue
        if in_table and line.startswith("|---"):
            continue
        if in_table and line.startswith("|"):
            first = line.split("|")[1]
            keys += re.findall(r"`(\w+)`", first)
        elif in_table:
            break
    return keys


@pytest.mark.parametrize("cls_name", CLASSES)
def test_documented_keys_are_the_result_fields(cls_name):
    documented = _documented_keys(cls_name)
    fields = getattr(results, cls_name).keys()
    assert len(documented) == len(set(documented)), f"{cls_name}: a key is documented twice"
    assert sorted(documented) == sorted(fields), (
        f"{cls_name}: documented only {sorted(set(documented) - set(fields))}, "
        f"undocumented {sorted(set(fields) - set(documented))}")


def test_a_result_cannot_carry_an_undocumented_key():
    with pytest.raises(TypeError):
        results.BenchResult(model="m", not_a_field=1)  # type: ignore[call-arg]
