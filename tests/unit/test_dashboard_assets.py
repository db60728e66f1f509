"""The dashboard loads nothing from another origin: the vendored chart library is the
published file (its hash), and no template or script names another origin or runs inline."""

from __future__ import annotations

import hashlib
import re

import pytest

from pipeline.api.dashboard import CSP, STATIC, TEMPLATES

pytestmark = pytest.mark.unit
CHART_JS_SHA256 = "87364cc2b2a76a6684929e7d6b80b18a897794db38400caff1fcf1791c6925d2"


def test_the_vendored_chart_js_is_the_published_4_6_1_file() -> None:
    data = (STATIC / "vendor" / "chart.umd.min.js").read_bytes()
    assert hashlib.sha256(data).hexdigest() == CHART_JS_SHA256
    assert data.startswith(b"/*!\n * Chart.js v4.6.1")
    assert CHART_JS_SHA256 in (STATIC / "vendor" / "README.md").read_text()
    assert "MIT" in (STATIC / "vendor" / "chart.js.LICENSE.md").read_text()


def test_pages_load_only_from_this_origin_and_run_no_inline_code() -> None:
    for path in [*TEMPLATES.glob("*.html"), STATIC / "dashboard.js", STATIC / "dashboard.css"]:
        text = path.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path
        assert "@import" not in text and "url(http" not in text, path
        assert " style=" not in text and "<style" not in text, path  # CSP: style-src 'self'
        assert not re.search(r" on[a-z]+=", text), path  # no inline event handlers
        for script in re.findall(r"<script([^>]*)>(.*?)</script>", text, re.S):
            attrs, body = script
            assert 'src="/dashboard/static/' in attrs or (
                'type="application/json"' in attrs and body.strip().startswith("{{")
            ), path
    for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'"):
        assert directive in CSP
    assert "unsafe" not in CSP and "http" not in CSP
