"""``gpumeter import sacct``: a Slurm accounting export -> usage events, through the spool to
Kafka (parsing and slicing in :mod:`~pipeline.collectors.sacct_parse`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.collectors.events import Span, messages
from pipeline.collectors.publish import Outlet
from pipeline.collectors.reference import CollectorReference, Site
from pipeline.collectors.sacct_parse import ImportReport, TenantOf, spans
from pipeline.domain.reference import ReferenceData
from pipeline.settings import SettingsError

log = logging.getLogger("gpumeter.collect")
MESSAGES_PER_RECORD = 500


def account_tenants(cluster: str, ref: ReferenceData, cref: CollectorReference) -> TenantOf:
    def tenant_of(account: str) -> str | None:
        mapped = cref.tenant_for_account(cluster, account)
        if mapped is not None:
            return mapped
        return account if account in ref.tenants else None

    return tenant_of


def zone(name: str | None, site: Site) -> ZoneInfo:
    chosen = name or site.timezone or "UTC"
    try:
        return ZoneInfo(chosen)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"--timezone {chosen!r}: not an IANA time zone name") from None


@dataclass(slots=True)
class ImportResult:
    report: ImportReport
    spans: list[Span]
    messages: int = 0
    sent: int = 0
    pending_bytes: int = 0
    invalid: list[str] = field(default_factory=list)
    kafka_error: str | None = None


def import_text(
    text: str,
    site: Site,
    ref: ReferenceData,
    cref: CollectorReference,
    outlet: Outlet,
    tz: ZoneInfo,
    wait_s: float = 60.0,
) -> ImportResult:
    """Parse, commit every message to the outlet (spooled), then send for up to ``wait_s``."""
    report = ImportReport()
    got = spans(
        text, ref.catalog, account_tenants(site.cluster, ref, cref), tz, site.gpu_model, report
    )
    msgs, invalid = messages(site, got)
    res = ImportResult(report, got, len(msgs), invalid=invalid)
    for i in range(0, len(msgs), MESSAGES_PER_RECORD):
        outlet.commit(msgs[i : i + MESSAGES_PER_RECORD], None)
    deadline = time.monotonic() + wait_s
    while True:
        dr = outlet.drain(max(1.0, deadline - time.monotonic()))
        res.sent += dr.sent_messages
        res.pending_bytes = dr.pending_bytes
        res.kafka_error = dr.error
        if dr.pending_bytes == 0 or time.monotonic() >= deadline:
            break
        if dr.error:
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    return res
