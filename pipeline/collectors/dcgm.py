"""``gpumeter collect dcgm``: scrape NVIDIA DCGM-exporter endpoints (``http://node:9400/metrics``)
on schedule and publish the usage between scrapes (parsing in
:mod:`~pipeline.collectors.dcgm_parse`, intervals in :mod:`~pipeline.collectors.intervals`,
the loop in :mod:`~pipeline.collectors.loop`)."""

from __future__ import annotations

import logging
import urllib.request
from collections import Counter
from collections.abc import Callable

from pipeline.collectors.dcgm_parse import ParseReport, TenantOf, snapshot
from pipeline.collectors.intervals import Snapshot
from pipeline.collectors.reference import CollectorReference
from pipeline.domain.reference import ReferenceData

log = logging.getLogger("gpumeter.collect")
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


def namespace_tenants(cluster: str, ref: ReferenceData, cref: CollectorReference) -> TenantOf:
    """Namespace -> tenant: the collectors' reference data, else a namespace that is a tenant
    id; None (unattributed) otherwise."""

    def tenant_of(namespace: str) -> str | None:
        mapped = cref.tenant_for_namespace(cluster, namespace)
        if mapped is not None:
            return mapped
        return namespace if namespace in ref.tenants else None

    return tenant_of


class DcgmSource:
    """One exporter endpoint."""

    def __init__(
        self,
        url: str,
        ref: ReferenceData,
        tenant_of: TenantOf,
        default_node: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.name = url
        self.url = url
        self.ref = ref
        self.tenant_of = tenant_of
        self.default_node = default_node
        self.timeout_s = timeout_s
        self.lines_skipped = 0
        self.series_skipped: Counter[str] = Counter()

    def fetch(self) -> str:
        with urllib.request.urlopen(self.url, timeout=self.timeout_s) as resp:  # noqa: S310
            body = resp.read(MAX_RESPONSE_BYTES + 1)
        if len(body) > MAX_RESPONSE_BYTES:
            raise ValueError(f"response larger than {MAX_RESPONSE_BYTES} bytes: not an exporter?")
        return body.decode("utf-8", "replace")

    def observe(self, clock_us: Callable[[], int]) -> Snapshot:
        text = self.fetch()
        report = ParseReport()
        snap = snapshot(
            text, clock_us(), self.ref.catalog, self.tenant_of, self.default_node, report
        )
        if report.lines_skipped or report.series_skipped:
            self.lines_skipped += report.lines_skipped
            self.series_skipped.update(report.series_skipped)
            log.warning(
                "dcgm: %s: skipped %d malformed lines and %d series (%s); first problems: %s",
                self.url,
                report.lines_skipped,
                sum(report.series_skipped.values()),
                ", ".join(f"{k}={v}" for k, v in sorted(report.series_skipped.items())),
                " | ".join(report.problems),
            )
        return snap
