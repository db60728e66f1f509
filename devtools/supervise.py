"""Running the worker as a child process, and waiting for it to drain the topic (used by the
demo, the end-to-end and fault tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.adapters.kafka import end_offsets, group_lag
from pipeline.settings import REPO_ROOT, Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``GPUMETER_*`` environment that recreates ``settings`` in a child process."""
    env = {}
    for name, value in settings.model_dump().items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"GPUMETER_{name.upper()}"] = str(value)
    return env


def start_worker(
    settings: Settings, log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as fh:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker"],
            cwd=REPO_ROOT,
            env={**os.environ, **settings_env(settings), **(env or {})},
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_drained(
    settings: Settings,
    proc: subprocess.Popen[bytes] | None,
    timeout: float,
    console: Console | None = None,
    progress: bool = True,
) -> float:
    """Block until the worker's group has committed every offset of the usage topic."""
    started = time.monotonic()
    total = sum(end_offsets(settings.kafka_bootstrap, settings.usage_topic).values())
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
    ) as bar:
        task = bar.add_task("worker: messages committed", total=total)
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"worker exited with code {proc.returncode}; see its log")
            try:
                committed, lag = group_lag(
                    settings.kafka_bootstrap, settings.worker_id, settings.usage_topic
                )
            except Exception:  # noqa: BLE001 - broker momentarily unavailable: keep polling
                committed, lag = 0, total
            bar.update(task, completed=committed)
            if committed >= total and lag == 0:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"worker not drained after {timeout:.0f}s ({lag} left)")
            time.sleep(1)


def drain_once(settings: Settings, log_path: Path, timeout: float = 300) -> str:
    """Run one worker until its group has committed the whole usage topic, then stop it
    (SIGTERM). It must not have exited on its own meanwhile. Returns its log."""
    worker = start_worker(settings, log_path)
    try:
        wait_drained(settings, worker, timeout=timeout, progress=False)
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with code {worker.returncode} once drained")
    finally:
        stop_worker(worker)
    return log_path.read_text()
