"""Every team cost error code the code base can answer with is a stable, documented enum
member (as tests/unit/test_error_codes.py checks for billing)."""

from __future__ import annotations

import ast
import re

import pytest

from pipeline.api.chargeback import HTTP_STATUS
from pipeline.domain.errors import ChargebackErrorCode
from pipeline.settings import REPO_ROOT

pytestmark = pytest.mark.unit
CODE = re.compile(r"^chargeback\.[a-z_]+$")


def literal_codes() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((REPO_ROOT / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if CODE.match(node.value):
                    found.setdefault(node.value, []).append(f"{path.name}:{node.lineno}")
    return found


def test_every_chargeback_code_literal_is_in_the_enum() -> None:
    known = {c.value for c in ChargebackErrorCode}
    assert {c: w for c, w in literal_codes().items() if c not in known} == {}


def test_every_chargeback_code_is_documented_and_api_codes_have_a_status() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    doc = (REPO_ROOT / "docs" / "chargeback.md").read_text()
    for code in ChargebackErrorCode:
        assert f"`{code.value}`" in readme, f"{code.value} missing from README's error codes"
        assert f"`{code.value}`" in doc, f"{code.value} missing from docs/chargeback.md"
    for code, status in HTTP_STATUS.items():
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{code.value}`"))
        assert row.rstrip().endswith(f"| {status} |"), row
