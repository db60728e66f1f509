"""``gpumeter collect nvml`` with a small fake of the NVML module, and once on a real GPU
(marked ``gpu``: skipped where no NVIDIA driver answers)."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.collectors import loop
from pipeline.collectors.nvml import NvmlSource, tenant_holders
from pipeline.collectors.publish import PrintOutlet
from pipeline.collectors.reference import Site
from pipeline.config import Config

pytestmark = [pytest.mark.unit, pytest.mark.collectors]
SITE = Site("nvml", "lab-1", "eu-west-1", "own-dc")


class FakeNvml:
    """The part of ``pynvml`` the collector uses: GPU 0 whole, GPU 1 in MIG mode with two
    instances and an empty slot; power unsupported on GPU 1's instances."""

    NVML_DEVICE_MIG_ENABLE = 1

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        self.energy = 1_000_000
        self.inited = False

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names
        self.inited = True

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.inited = False

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Any:  # noqa: N802
        return ("gpu", i)

    def nvmlDeviceGetUUID(self, h: Any) -> bytes:  # noqa: N802
        return f"GPU-0000000{h[1]}-aaaa-bbbb-cccc-dddddddddddd".encode()  # old bindings: bytes

    def nvmlDeviceGetName(self, h: Any) -> str:  # noqa: N802
        if h[0] == "mig":
            return f"NVIDIA H100 80GB HBM3 MIG {['3g.40gb', '1g.10gb'][h[2]]}"
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMigMode(self, h: Any) -> tuple[int, int]:  # noqa: N802
        return (h[1], h[1])

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Any) -> int:  # noqa: N802
        return 3

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Any, j: int) -> Any:  # noqa: N802
        if j == 2:
            raise self.NVMLError("Not Found")
        return ("mig", h[1], j)

    def nvmlDeviceGetGpuInstanceId(self, m: Any) -> int:  # noqa: N802
        return [2, 9][m[2]]

    def nvmlDeviceGetUtilizationRates(self, h: Any) -> Any:  # noqa: N802
        return SimpleNamespace(gpu=77, memory=30)

    def nvmlDeviceGetMemoryInfo(self, h: Any) -> Any:  # noqa: N802
        return SimpleNamespace(used=10 * 2**30, total=80 * 2**30)

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:  # noqa: N802
        return 612_500

    def nvmlDeviceGetTotalEnergyConsumption(self, h: Any) -> int:  # noqa: N802
        self.energy += 500_000
        return self.energy


class Clock:
    def __init__(self, times: list[int]) -> None:
        self.times, self.i = times, 0

    def now(self) -> int:
        return self.times[min(self.i, len(self.times) - 1)]

    def sleep(self, _s: float) -> None:
        self.i += 1


def collect(config: Config, tenant: str | None) -> list[dict[str, Any]]:
    nv = FakeNvml()
    src = NvmlSource(nv, config.reference.catalog, "host-1", tenant_holders(tenant, "exp-1"))
    out = io.StringIO()
    clock = Clock([1_000_000_000, 1_002_000_000, 1_004_500_000])
    stats = loop.run(
        SITE,
        [src],
        PrintOutlet(out),
        loop.LoopOptions(interval_s=2, scrapes=3),
        clock.now,
        clock.sleep,
    )
    src.close()
    assert stats.scrapes == 3 and not nv.inited
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_gpus_and_mig_instances_of_a_dedicated_host(config: Config) -> None:
    events = collect(config, "acme-ai")
    assert {e["type"] for e in events} == {"gpu.usage.v1"}
    units = sorted({(e["data"]["gpu_uuid"], e["data"].get("mig_profile", "")) for e in events})
    assert units == [
        ("GPU-00000000-aaaa-bbbb-cccc-dddddddddddd", ""),
        ("GPU-00000001-aaaa-bbbb-cccc-dddddddddddd/2", "3g.40gb"),
        ("GPU-00000001-aaaa-bbbb-cccc-dddddddddddd/9", "1g.10gb"),
    ]
    whole = [e for e in events if e["data"]["gpu_uuid"].endswith("dddd")]
    assert [(e["data"]["start"], e["data"]["end"]) for e in whole] == [
        ("1970-01-01T00:16:40+00:00", "1970-01-01T00:16:42+00:00"),
        ("1970-01-01T00:16:42+00:00", "1970-01-01T00:16:44.500000+00:00"),
    ]
    d = whole[0]["data"]
    assert (d["tenant_id"], d["project_id"], d["gpu_model"], d["sm_activity_pct"]) == (
        "acme-ai",
        "exp-1",
        "H100",
        77.0,
    )
    assert (d["power_w"], d["energy_j"], d["mem_used_bytes"]) == (612.5, 500.0, 10 * 2**30)
    assert whole[0]["source"] == "//gpumeter/nvml/lab-1/host-1"


def test_a_host_without_tenant_reports_idle_capacity(config: Config) -> None:
    events = collect(config, None)
    assert {(e["type"], e["data"]["reason"]) for e in events} == {("gpu.unattributed.v1", "idle")}
    assert sum(e["data"]["usage_us"] for e in events) == 3 * 4_500_000


@pytest.mark.gpu
def test_real_gpu_through_nvml(config: Config) -> None:
    """On a machine with an NVIDIA GPU: two scrapes of the real NVML make valid events."""
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001 - no driver / no GPU: skip cleanly
        pytest.skip(f"no NVIDIA GPU here: {exc}")
    if count == 0:
        pytest.skip("NVML sees no GPU")
    import time

    from pipeline.domain.events import UsageEvent

    src = NvmlSource(pynvml, config.reference.catalog, "gpu-host", tenant_holders("acme-ai", ""))
    out = io.StringIO()
    stats = loop.run(
        SITE,
        [src],
        PrintOutlet(out),
        loop.LoopOptions(interval_s=1, scrapes=2),
        lambda: time.time_ns() // 1000,
        time.sleep,
    )
    src.close()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    print("\n".join(out.getvalue().splitlines()))
    assert stats.scrapes == 2 and events
    for e in events:
        if e["type"] == "gpu.usage.v1":
            UsageEvent.model_validate(e)
        else:  # a model the catalogue has no alias for: reported, not billed
            assert e["data"]["reason"] in {"unknown_gpu_model", "unknown_mig_profile"}
