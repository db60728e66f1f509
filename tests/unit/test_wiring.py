"""One wiring place (issue 9): only :mod:`pipeline.bootstrap` builds the objects that carry
settings (ClickHouse executors, Stripe gateway, billing run, invoicer, batch processor, sink);
every entry point asks it. Read from the source, so a new call site anywhere fails here."""

from __future__ import annotations

import ast
from pathlib import Path

from pipeline.settings import REPO_ROOT

WIRED = {
    "DriverExecutor",
    "ChdbExecutor",
    "StripeGateway",
    "BillingRun",
    "Invoicer",
    "BatchProcessor",
    "ClickHouseSink",
    "Exporter",
    "ExportLedger",
    "S3Bucket",
    "Spool",  # a collector's spool and outlet: bounded and wired to Kafka from the settings
    "SpooledOutlet",
}
# a class may build itself (e.g. a classmethod) and BillingRun owns its Invoicer
ALLOWED = {"pipeline/bootstrap.py", "pipeline/billing/run.py"}


def constructor_calls(path: Path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in WIRED:
                out.append((name, node.lineno))
    return out


def test_only_bootstrap_builds_the_wired_objects() -> None:
    found = {}
    for path in sorted(
        [*(REPO_ROOT / "pipeline").rglob("*.py"), *(REPO_ROOT / "devtools").rglob("*.py")]
    ):
        rel = path.relative_to(REPO_ROOT).as_posix()
        if rel in ALLOWED:
            continue
        calls = [c for c in constructor_calls(path) if f"class {c[0]}" not in path.read_text()]
        if calls:
            found[rel] = calls
    assert found == {}, "build these through pipeline.bootstrap"
