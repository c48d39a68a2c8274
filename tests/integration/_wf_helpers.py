"""Functions that workflow steps in the integration tests call (importable by workers)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def timed_sleep(seconds: float, label: str) -> dict[str, Any]:
    start = time.time()
    time.sleep(seconds)
    return {"label": label, "start": start, "end": time.time(), "pid": os.getpid()}


def flaky(marker_dir: str, fail_times: int) -> int:
    """Fails `fail_times` times (counted in a file), then returns the attempt number."""
    counter = Path(marker_dir) / "attempts"
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    if n <= fail_times:
        raise RuntimeError(f"transient failure {n}")
    return n


def add_one(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return 2 * x


def identity(x: Any) -> Any:
    return x


def rendezvous(marker_dir: str, label: str, parties: int, timeout_s: float = 90) -> dict[str, Any]:
    """Arrive, then wait until all `parties` steps have arrived.

    Steps that ran one after another could never all be inside this function at
    once: the first would time out. So success proves the steps overlapped.
    """
    start = time.time()
    d = Path(marker_dir)
    (d / f"arrived-{label}").write_text(str(os.getpid()))
    while len(list(d.glob("arrived-*"))) < parties:
        if time.time() - start > timeout_s:
            raise TimeoutError(f"only {len(list(d.glob('arrived-*')))} of {parties} arrived")
        time.sleep(0.05)
    return {"label": label, "start": start, "end": time.time(), "pid": os.getpid()}


def make_point(x: int, y: int) -> Any:
    from pydantic import BaseModel

    class Point(BaseModel):
        x: int
        y: int

    return Point(x=x, y=y)


def effect(log: str, label: str, value: Any = None) -> Any:
    """A side effect to count: appends `label` to the file `log`, returns `value`
    (or the label)."""
    with open(log, "a") as f:
        f.write(f"{label}\n")
    return label if value is None else value
