"""``gpumeter collect nvml``: the GPUs and MIG instances of this host through NVML
(``nvidia-ml-py``), attributed to ``--tenant`` (a host dedicated to one tenant) or to nobody
(idle capacity, unattributed). Reading in :mod:`~pipeline.collectors.nvml_read`, intervals and
loop shared with the DCGM collector."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.collectors.intervals import Holder, Snapshot
from pipeline.collectors.nvml_read import read_snapshot
from pipeline.domain.reference import GpuCatalog


def load_nvml() -> Any:
    """The ``pynvml`` module of ``nvidia-ml-py``; a clear error without it."""
    try:
        import pynvml
    except ImportError as exc:
        raise RuntimeError(
            "NVML bindings are not installed: pip install nvidia-ml-py (the NVIDIA driver "
            "provides libnvidia-ml.so)"
        ) from exc
    return pynvml


def tenant_holders(tenant: str | None, project: str) -> tuple[Holder, ...]:
    if tenant is None:
        return ()
    return (Holder(key=tenant, tenant_id=tenant, project_id=project),)


class NvmlSource:
    name = "nvml"

    def __init__(self, nv: Any, catalog: GpuCatalog, node: str, holders: tuple[Holder, ...]):
        self.nv = nv
        self.catalog = catalog
        self.node = node
        self.holders = holders
        nv.nvmlInit()

    def observe(self, clock_us: Callable[[], int]) -> Snapshot:
        return read_snapshot(self.nv, clock_us, self.catalog, self.node, self.holders)

    def close(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass
