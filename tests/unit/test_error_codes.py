"""Every error code the code base can answer with is a stable, documented enum member."""

from __future__ import annotations

import ast
import re

from pipeline.domain.errors import BillingErrorCode
from pipeline.settings import REPO_ROOT

CODE = re.compile(r"^billing\.[a-z_]+$")


def literal_codes() -> dict[str, list[str]]:
    """Every string literal in ``pipeline/`` that looks like a billing error code -> where."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO_ROOT / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if CODE.match(node.value):
                    where = f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
                    found.setdefault(node.value, []).append(where)
    return found


def test_every_billing_code_literal_is_in_the_enum() -> None:
    known = {c.value for c in BillingErrorCode}
    stray = {code: where for code, where in literal_codes().items() if code not in known}
    assert stray == {}, "codes answered without being in BillingErrorCode"


def test_every_billing_code_is_documented() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    billing = (REPO_ROOT / "docs" / "billing.md").read_text()
    for code in BillingErrorCode:
        assert f"`{code.value}`" in readme, f"{code.value} missing from README's error codes"
        assert f"`{code.value}`" in billing, f"{code.value} missing from docs/billing.md"
