"""Checkpoints a job writes into its own run directory, atomically, and the pick on resume.

Why not plain ``ray.train.report(checkpoint=<temp dir>)``: Ray Train copies the
directory into storage, then its controller registers it later, when it next polls the
worker. A job killed in between left a finished checkpoint that Ray never recorded, and
the job submitted again resumed from the checkpoint before it (ten steps lost, and the
progress log said otherwise). Ray's copy is not atomic either: a kill mid-copy leaves
a partial directory.

So rank 0 writes each checkpoint into a hidden temp directory inside the run directory,
records every file's size and SHA-256 in a manifest, fsyncs, and renames the directory
to its final name (one atomic rename on one filesystem). Only then is it reported to
Ray, without a copy, so Ray registers that same directory and applies
``checkpoint.keep`` to it. On resume the newest checkpoint whose manifest verifies
wins, whether or not Ray got to register it. A half-written checkpoint is still a temp
directory and a damaged one fails its manifest: neither is ever picked.

Loading is safe against tampered files: the optimizer and scheduler states load with
``torch.load(weights_only=True)`` (:func:`load_torch_state`), which unpickles only
tensors, numbers, strings and containers and refuses any other global (``os.system``,
a class's ``__reduce__``) before it runs; the adapter weights are safetensors and the
training state is JSON. The manifest only detects damage: whoever can write the
directory can rewrite the manifest too, so it is no defence against tampering.

Pure file handling (no Ray; torch only inside :func:`load_torch_state`) so the unit
tests cover it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lumos_ray.errors import JobError

__all__ = [
    "MANIFEST",
    "checkpoint_step",
    "complete_checkpoints",
    "load_torch_state",
    "remove_partial_checkpoints",
    "verified_step",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

MANIFEST = "lumos_manifest.json"
_PREFIX = "lumos-ckpt-step"
_TMP_PREFIX = ".lumos-ckpt-tmp-"
_NAME_RE = re.compile(rf"^{_PREFIX}(\d+)-[0-9a-f]+$")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_checkpoint(run_dir: str | Path, step: int, fill: Callable[[Path], None]) -> Path:
    """``fill(dir)`` writes the checkpoint's files; the result appears at once, complete,
    as ``run_dir/lumos-ckpt-stepNNNNNNNN-<id>`` (a unique name: a step written again
    after a resume never lands on an earlier directory), or not at all."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    tmp = run_dir / f"{_TMP_PREFIX}{tag}"
    tmp.mkdir()
    try:
        fill(tmp)
        files = {}
        for p in _files(tmp):
            _fsync_path(p)
            files[p.relative_to(tmp).as_posix()] = {
                "size": p.stat().st_size,
                "sha256": _sha256(p),
            }
        manifest = tmp / MANIFEST
        manifest.write_text(json.dumps({"step": step, "files": files}, indent=1))
        _fsync_path(manifest)
        for d in sorted({p.parent for p in tmp.rglob("*")} | {tmp}, reverse=True):
            _fsync_path(d)
        final = run_dir / f"{_PREFIX}{step:08d}-{tag}"
        tmp.rename(final)
        _fsync_path(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def verified_step(path: str | Path) -> int | None:
    """The checkpoint's step if every file the manifest lists is there with its size and
    SHA-256 (and the name agrees), else None."""
    path = Path(path)
    m = _NAME_RE.match(path.name)
    if m is None:
        return None
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        step = int(manifest["step"])
        files = manifest["files"]
        if step != int(m.group(1)) or not files:
            return None
        for rel, meta in files.items():
            p = path / rel
            if p.stat().st_size != meta["size"] or _sha256(p) != meta["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step


def complete_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, dir) of every complete checkpoint in ``run_dir``, oldest first (by step,
    then modification time). Each one's manifest is checked; damaged ones are logged
    and left out, never deleted (they are evidence)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    candidates: list[tuple[int, int, Path]] = []
    for d in run_dir.iterdir():
        m = _NAME_RE.match(d.name)
        if m and d.is_dir():
            candidates.append((int(m.group(1)), d.stat().st_mtime_ns, d))
    out = []
    for step, _mtime, d in sorted(candidates):
        if verified_step(d) == step:
            out.append((step, d))
        else:
            logger.warning("checkpoint %s does not match its manifest; skipped", d)
    return out


def checkpoint_step(path: str | Path) -> int | None:
    """The step in a lumos checkpoint's name (not verified), None for other names."""
    m = _NAME_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def remove_partial_checkpoints(run_dir: str | Path) -> list[Path]:
    """Delete temp directories left by a writer that was killed mid-checkpoint.

    Only call this where no writer of this run can still be active (rank 0, before
    its first checkpoint): a job name has one run at a time."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    removed = [d for d in run_dir.iterdir() if d.name.startswith(_TMP_PREFIX) and d.is_dir()]
    for d in removed:
        shutil.rmtree(d, ignore_errors=True)
    return removed


def load_torch_state(path: str | Path) -> Any:
    """A state dict written with ``torch.save`` (optimizer, scheduler), loaded onto the
    CPU without running code from the file.

    ``weights_only=True`` restricts unpickling to tensors and plain data: a file
    crafted to call anything (``os.system``, ``subprocess``...) raises before the call
    happens. That refusal is a JobError naming the file; it is never retried with the
    unsafe loader."""
    import pickle

    import torch

    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise JobError(
            f"The checkpoint file {path} is not a plain tensor state and was not loaded "
            f"(it may have been tampered with): {first}",
            fix="Delete that checkpoint directory (the job then resumes from the one "
            "before it, or starts over) and check who can write the run directory.",
        ) from None
