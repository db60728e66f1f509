"""Faust's own ceiling on a topic: a Faust app with the consumer settings the worker had while it
ran on Faust (same batch size and wait) and an agent that takes the batches and does nothing
else. What a worker cannot exceed while it consumes through a Faust stream, whatever its
processing costs: the figure that made the worker leave Faust's stream and tables for its own
runtime (README "Stream runtime").

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

# Faust's consumer fetches at most this much per partition and request; its default (1 MiB)
# starved the agent (1,580 messages/s against 4,180 with 16 MiB; 32 MiB: no better).
CONSUMER_MAX_FETCH_BYTES = 16 * 1024 * 1024
FAUST_WITHIN = 1.0  # the batch wait the worker had on Faust
FAUST_BATCH = 20_000  # and its batch size (messages)


def app_options(settings: Settings) -> dict[str, Any]:
    """The Faust settings the worker ran with (RocksDB tables, at-least-once, 16 MiB fetches)."""
    return {
        "broker": f"kafka://{settings.kafka_bootstrap}",
        "store": "rocksdb://",
        "datadir": str(settings.worker_data_dir),
        "topic_partitions": settings.topic_partitions,
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "consumer_max_fetch_size": CONSUMER_MAX_FETCH_BYTES,
        "web_enabled": False,
        "table_standby_replicas": 0,
        "broker_commit_every": 10_000,
        "broker_commit_interval": 1.0,
        "stream_buffer_maxsize": FAUST_BATCH,
        "producer_max_request_size": 2 * settings.max_message_bytes,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": max(1.0, settings.session_timeout_s / 4),
    }


def raw_topic(app: Any, name: str) -> Any:
    """A topic of raw bytes (keys and values), never decoded by Faust's codecs."""
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def main(total: int, out: str) -> None:
    import faust

    settings = Settings()
    # a group of its own (reads the topic from the start) and no state store
    options = {
        **app_options(settings),
        "store": "memory://",
        "datadir": str(settings.worker_data_dir / "ceiling"),  # not a directory in the cwd
    }
    Path(options["datadir"]).mkdir(parents=True, exist_ok=True)
    app = faust.App(f"{settings.worker_id}-ceiling-{uuid.uuid4().hex[:6]}", **options)
    usage = raw_topic(app, settings.usage_topic)
    seen = {"n": 0, "t0": 0.0}

    @app.agent(usage)
    async def take(stream: Any) -> None:
        async for events in stream.take_events(FAUST_BATCH, within=FAUST_WITHIN):
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
