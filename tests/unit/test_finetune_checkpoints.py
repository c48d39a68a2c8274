"""Fine-tune checkpoints on disk: written atomically, verified, and the pick on resume.

No Ray: the resume choice is a function of the run directory and of what Ray had
registered, and a kill mid-write is a real SIGKILL of a child process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

from lumos_ray.finetune._checkpoints import (
    MANIFEST,
    complete_checkpoints,
    remove_partial_checkpoints,
    verified_step,
    write_checkpoint,
)
from lumos_ray.finetune._train import STATE_FILE, _resume_point


def _ckpt(run: Path, step: int) -> Path:
    def fill(d: Path) -> None:
        (d / "adapter").mkdir()
        (d / "adapter" / "weights.bin").write_bytes(bytes([step % 256]) * 4096)
        (d / STATE_FILE).write_text(json.dumps({"step": step}))

    return write_checkpoint(run, step, fill)


def test_write_is_complete_and_newest_step_wins(tmp_path: Path) -> None:
    a, b = _ckpt(tmp_path, 10), _ckpt(tmp_path, 20)
    assert verified_step(a) == 10 and verified_step(b) == 20
    manifest = json.loads((b / MANIFEST).read_text())
    assert set(manifest["files"]) == {"adapter/weights.bin", STATE_FILE}
    assert complete_checkpoints(tmp_path) == [(10, a), (20, b)]
    # Unique names: the same step written again (after a resume) never replaces one.
    c = _ckpt(tmp_path, 20)
    assert c != b and complete_checkpoints(tmp_path) == [(10, a), (20, b), (20, c)]


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    _ckpt(tmp_path, 10)

    def boom(d: Path) -> None:
        (d / "half").write_bytes(b"x")
        raise OSError("disk full")

    try:
        write_checkpoint(tmp_path, 20, boom)
    except OSError:
        pass
    assert [p.name for p in tmp_path.iterdir() if "step00000020" in p.name] == []
    assert [step for step, _ in complete_checkpoints(tmp_path)] == [10]


def test_killed_mid_write_is_never_picked_and_is_cleaned_up(tmp_path: Path) -> None:
    good = _ckpt(tmp_path, 10)
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from lumos_ray.finetune._checkpoints import write_checkpoint

        def fill(d):
            (d / "train_state.json").write_text('{{"step": 20}}')
            (d / "adapter.bin").write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)

        write_checkpoint(Path({str(tmp_path)!r}), 20, fill)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = [p for p in tmp_path.iterdir() if p != good]
    assert len(leftovers) == 1 and (leftovers[0] / "adapter.bin").exists()
    assert complete_checkpoints(tmp_path) == [(10, good)]
    assert remove_partial_checkpoints(tmp_path) == leftovers
    assert [p.name for p in tmp_path.iterdir()] == [good.name]


def test_damaged_checkpoint_is_skipped_for_the_older_complete_one(tmp_path: Path) -> None:
    older, newer = _ckpt(tmp_path, 10), _ckpt(tmp_path, 20)
    weights = newer / "adapter" / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    assert verified_step(newer) is None
    assert complete_checkpoints(tmp_path) == [(10, older)]
    assert _resume_point(tmp_path, _registered(newer)) == (str(older), [])
    weights.write_bytes(b"\x14" * 4095 + b"\x00")  # same size, other bytes
    assert complete_checkpoints(tmp_path) == [(10, older)]
    (older / MANIFEST).unlink()
    assert complete_checkpoints(tmp_path) == []
    assert remove_partial_checkpoints(tmp_path) == []  # damaged ones are kept


def _registered(path: Path) -> SimpleNamespace:
    return SimpleNamespace(path=str(path))


def test_resume_takes_the_checkpoints_ray_did_not_register_yet(tmp_path: Path) -> None:
    """The kill came after the worker wrote steps 20 and 30 but before Ray registered
    them: resume from 30, and report both to Ray (oldest first)."""
    s10, s20, s30 = _ckpt(tmp_path, 10), _ckpt(tmp_path, 20), _ckpt(tmp_path, 30)
    assert _resume_point(tmp_path, _registered(s10)) == (str(s30), [str(s20), str(s30)])
    assert _resume_point(tmp_path, _registered(s30)) == (str(s30), [])
    assert _resume_point(tmp_path, None) == (str(s30), [str(s10), str(s20), str(s30)])
    assert _resume_point(tmp_path / "nothing", None) == (None, [])


def test_resume_from_a_ray_checkpoint_of_an_older_lumos(tmp_path: Path) -> None:
    legacy = tmp_path / "checkpoint_2026-01-01_00-00-00.000000"
    legacy.mkdir()
    (legacy / STATE_FILE).write_text(json.dumps({"step": 30}))
    _ckpt(tmp_path, 20)  # older than Ray's latest: neither resumed from nor reported
    assert _resume_point(tmp_path, _registered(legacy)) == (str(legacy), [])
    s40 = _ckpt(tmp_path, 40)
    assert _resume_point(tmp_path, _registered(legacy)) == (str(s40), [str(s40)])
