"""The demo's partner-export step: deliver the month's exports (the local stack's S3 server
plays the partners' buckets, so the demo creates them), verify them and say where they are."""

from __future__ import annotations

from rich.console import Console

from pipeline.adapters.s3 import S3Bucket
from pipeline.adapters.store import Store
from pipeline.bootstrap import bucket, exporter
from pipeline.config import Config
from pipeline.domain.errors import ExportError, ExportErrorCode
from pipeline.domain.period import Period
from pipeline.exports.verify import verify
from pipeline.settings import Settings


def show_exports(
    settings: Settings, config: Config, st: Store, period: Period, console: Console
) -> bool:
    """True when every partner's export is written (delivered once the period is closed)
    and ``exports verify`` finds no mismatch."""
    ex = exporter(settings, config, st)

    def partner_bucket(url: str) -> S3Bucket:
        target = bucket(settings, url)
        target.create()  # on the local stack we play the partner, who owns the bucket
        return target

    try:
        results = ex.deliver(period, bucket=partner_bucket)
        how = "delivered (pushed where the partner has a bucket, else pulled through the API)"
    except ExportError as exc:
        if exc.code != ExportErrorCode.PERIOD_NOT_CLOSED:
            raise
        results = ex.build(period)
        how = "built as drafts (the period is not closed: gpumeter exports deliver later)"
    console.print(f"partner exports (FOCUS 1.2) of {period}, {how}:")
    for res in results:
        console.print(f"  {res.line()}", markup=False, soft_wrap=True)
    v = verify(ex, period)
    console.print(v.summary_line(), markup=False, soft_wrap=True)
    console.print(
        f"gpumeter exports verify|validate --period {period}; "
        "GET /partners/<id>/exports with a partner:<id> token",
        markup=False,
    )
    return v.clean and all(r.state != "failed" for r in results)
