"""NVML -> a :class:`~pipeline.collectors.intervals.Snapshot` of one host (``nvidia-ml-py``).

Takes the NVML module as an argument (``pynvml`` from ``nvidia-ml-py``, or a small fake in the
unit tests). Every GPU is a unit; a GPU in MIG mode is replaced by its MIG instances
(``<GPU UUID>/<GPU instance id>``, the profile read from the instance's name, e.g.
``NVIDIA H100 80GB HBM3 MIG 1g.10gb``). Telemetry: utilization (%), memory used, power (mW ->
W) and the energy counter (mJ since the driver loaded) for whole GPUs; memory for MIG
instances (NVML reports no utilization or energy per instance). A telemetry call the device
does not support leaves that value out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pipeline.collectors.intervals import Holder, Reading, Snapshot
from pipeline.collectors.tokens import to_text, to_token
from pipeline.domain.reference import GpuCatalog

_PROFILE = re.compile(r"(\d+g\.\d+gb(?:\+me)?)", re.IGNORECASE)


def _str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _try(nv: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or None when NVML says the device does not support it."""
    try:
        return fn(*args)
    except nv.NVMLError:
        return None


def read_snapshot(
    nv: Any,
    clock_us: Callable[[], int],
    catalog: GpuCatalog,
    node: str,
    holders: tuple[Holder, ...],
) -> Snapshot:
    readings: list[Reading] = []
    for i in range(nv.nvmlDeviceGetCount()):
        h = nv.nvmlDeviceGetHandleByIndex(i)
        uuid = _str(nv.nvmlDeviceGetUUID(h))
        name = _str(nv.nvmlDeviceGetName(h))
        model = catalog.resolve(name)
        mode = _try(nv, nv.nvmlDeviceGetMigMode, h)
        mig_on = mode is not None and mode[0] == getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1)
        if mig_on:
            for j in range(nv.nvmlDeviceGetMaxMigDeviceCount(h)):
                m = _try(nv, nv.nvmlDeviceGetMigDeviceHandleByIndex, h, j)
                if m is None:
                    continue  # an empty slot
                gi = nv.nvmlDeviceGetGpuInstanceId(m)
                found = _PROFILE.search(_str(nv.nvmlDeviceGetName(m)))
                profile = found.group(1).lower() if found else "unknown"
                gpu = catalog.gpus.get(model) if model else None
                mem = _try(nv, nv.nvmlDeviceGetMemoryInfo, m)
                readings.append(
                    Reading(
                        node=node,
                        gpu_uuid=to_token(f"{uuid}/{gi}", "UUID"),
                        gpu_model=model,
                        model_seen=to_text(name, 256),
                        mig_profile=to_text(profile, 32),
                        mig_known=gpu is not None and profile in gpu.mig_profiles,
                        holders=holders,
                        mem_used_bytes=None if mem is None else int(mem.used),
                    )
                )
            continue
        util = _try(nv, nv.nvmlDeviceGetUtilizationRates, h)
        mem = _try(nv, nv.nvmlDeviceGetMemoryInfo, h)
        power_mw = _try(nv, nv.nvmlDeviceGetPowerUsage, h)
        energy_mj = _try(nv, nv.nvmlDeviceGetTotalEnergyConsumption, h)
        readings.append(
            Reading(
                node=node,
                gpu_uuid=to_token(uuid, "UUID"),
                gpu_model=model,
                model_seen=to_text(name, 256),
                holders=holders,
                sm_activity_pct=None if util is None else float(util.gpu),
                mem_used_bytes=None if mem is None else int(mem.used),
                power_w=None if power_mw is None else power_mw / 1000.0,
                energy_mj=None if energy_mj is None else float(energy_mj),
            )
        )
    snap = Snapshot(clock_us())
    for r in readings:
        snap.add(r)
    return snap
