"""Running the FinOps Foundation's ``focus-validator`` (PyPI, 2.2.1) on an export file.

It lives in its own virtual environment (Python >= 3.12, ``pyarrow<21``; ``make
focus-validator`` builds it under ``.local/focus-validator``). Three of its habits are handled
here: it opens ``focus_validator/rules/currency_codes.csv`` by a relative path, so it runs with
its ``site-packages`` folder as the working directory; it exits 0 even when checks fail, so
its ``Total: … | Pass: … | Fail: N | Skipped: …`` line and the per-rule lines are parsed;
and it reports the branches of an OR rule one by one, so a rule whose requirement is "A or B"
(``InvoiceId-C-003-C``: null when there is no invoice, not null when there is one) always
has one failed branch although the rule passed. Such a branch is listed as *excused*, with
the OR rule that passed; every other failed rule counts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.domain.focus import APPLICABILITY, FOCUS_VERSION

VALIDATOR_VERSION = "2.2.1"
SUMMARY = re.compile(
    r"Total:\s*(\d+)\s*\|\s*Pass:\s*(\d+)\s*\|\s*Fail:\s*(\d+)\s*\|\s*Skipped:\s*(\d+)"
)
RULE = re.compile(r"^(?:\S+\s+)?([A-Za-z]+-[A-Z]+-\d+-[A-Z]+):\s+(PASS|FAIL|SKIPPED)\b", re.M)


class ValidatorUnavailable(RuntimeError):
    """The validator's environment is missing or broken (``make focus-validator``)."""


@dataclass
class ValidatorReport:
    data_file: Path
    total: int
    passed: int
    failed: int
    skipped: int
    statuses: dict[str, str]
    excused: dict[str, str] = field(default_factory=dict)  # failed branch -> OR rule passed
    output: str = ""

    @property
    def summary(self) -> str:
        """The validator's own summary line."""
        return (
            f"Total: {self.total} | Pass: {self.passed} | Fail: {self.failed} | "
            f"Skipped: {self.skipped}"
        )

    @property
    def failures(self) -> list[str]:
        """Failed rules that count (every failed rule but excused OR branches)."""
        return sorted(r for r, s in self.statuses.items() if s == "FAIL" and r not in self.excused)

    @property
    def ok(self) -> bool:
        return not self.failures

    def line(self) -> str:
        excused = ", ".join(f"{r} (branch of {p}, which passed)" for r, p in self.excused.items())
        verdict = "ok" if self.ok else "FAILED: " + ", ".join(self.failures)
        return f"{self.data_file.name}: {self.summary}; {verdict}" + (
            f"; excused: {excused}" if excused else ""
        )


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages/focus_validator"))
    if not found or not (venv / "bin" / "focus-validator").exists():
        raise ValidatorUnavailable(
            f"focus-validator is not installed in {venv} (make focus-validator)"
        )
    return found[-1].parent


def or_branches(site: Path) -> dict[str, list[str]]:
    """Rule id -> the OR rules it is a branch of (from the validator's rule model)."""
    out: dict[str, list[str]] = {}
    for model in sorted(site.glob(f"focus_validator/rules/model-{FOCUS_VERSION}*.json")):
        rules = json.loads(model.read_text())["ModelRules"]
        for rule_id, rule in rules.items():
            req = rule.get("ValidationCriteria", {}).get("Requirement", {})
            if req.get("CheckFunction") != "OR":
                continue
            for item in req.get("Items", []):
                if item.get("CheckFunction") == "CheckModelRule":
                    out.setdefault(item["ModelRuleId"], []).append(rule_id)
    return out


def parse(output: str, data_file: Path, branches: dict[str, list[str]]) -> ValidatorReport:
    m = SUMMARY.search(output)
    if m is None:
        raise ValidatorUnavailable(
            f"focus-validator printed no summary line for {data_file}:\n{output[-2000:]}"
        )
    statuses = {rule: status for rule, status in RULE.findall(output)}
    total, passed, failed, skipped = (int(g) for g in m.groups())
    report = ValidatorReport(data_file, total, passed, failed, skipped, statuses, output=output)
    for rule, status in statuses.items():
        if status != "FAIL":
            continue
        parents = [p for p in branches.get(rule, []) if statuses.get(p) == "PASS"]
        if parents:
            report.excused[rule] = parents[0]
    return report


def run_validator(venv: Path, data_file: Path, timeout_s: float = 900) -> ValidatorReport:
    """Validate one CSV or Parquet file against FOCUS 1.2, offline."""
    site = site_packages(venv)
    cmd = [
        str(venv / "bin" / "focus-validator"),
        "--data-file",
        str(data_file.resolve()),
        "--validate-version",
        FOCUS_VERSION,
        "--block-download",
        "--applicability-criteria",
        ",".join(APPLICABILITY),
        "--output-type",
        "console",
    ]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        cmd, cwd=site, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
    )
    return parse(proc.stdout + proc.stderr, data_file, or_branches(site))
