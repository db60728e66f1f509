"""Faust's own ceiling on a topic: the worker's Faust app (same consumer settings, same batch
size and wait) with an agent that takes the batches and does nothing else. What the pipeline
cannot exceed while it consumes through a Faust stream, whatever its processing costs.

:func:`measure` runs :func:`main` in a child process with the worker's ``GPUMETER_*``
environment; it writes ``{"messages": n, "seconds": s}`` (from the first batch to the last
message) to a file (Faust captures stdout) and exits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from devtools.supervise import settings_env
from pipeline.settings import REPO_ROOT, Settings
from pipeline.worker.app import app_options, raw_topic


def main(total: int, out: str) -> None:
    import faust

    settings = Settings()
    # a group of its own (reads the topic from the start) and no state store
    options = {
        **app_options(settings),
        "store": "memory://",
        "datadir": str(settings.worker_data_dir / "ceiling"),  # not a directory in the cwd
    }
    app = faust.App(f"{settings.worker_id}-ceiling-{uuid.uuid4().hex[:6]}", **options)
    usage = raw_topic(app, settings.usage_topic)
    seen = {"n": 0, "t0": 0.0}

    @app.agent(usage)
    async def take(stream: Any) -> None:
        async for events in stream.take_events(
            settings.sink_batch_samples, within=settings.sink_batch_seconds
        ):
            if not seen["n"]:
                seen["t0"] = time.monotonic()
            seen["n"] += len(events)
            if seen["n"] >= total:
                took = time.monotonic() - seen["t0"]
                Path(out).write_text(json.dumps({"messages": seen["n"], "seconds": took}))
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


def measure(settings: Settings, messages: int, log: Path, timeout: float = 1800) -> float:
    """Messages per second the do-nothing agent reads from ``settings.usage_topic``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.with_suffix(".json")
    out.unlink(missing_ok=True)
    code = f"from devtools.bench.faust_ceiling import main; main({messages}, {str(out)!r})"
    with log.open("w") as fh:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            env={**os.environ, **settings_env(settings)},
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    if not out.exists():
        raise RuntimeError(
            f"the do-nothing Faust agent did not finish (exit {proc.returncode}); see {log}"
        )
    doc = json.loads(out.read_text())
    return float(doc["messages"]) / max(float(doc["seconds"]), 1e-9)
