"""Fine-tune checkpoints on disk: written atomically, verified, and the pick on resume.

No Ray: the resume choice is a function of the run directory and of what Ray had
registered, and a kill mid-write is a real SIGKILL of a child process.
"""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from lumos_ray.errors import JobError
from lumos_ray.finetune._checkpoints import (
    MANIFEST,
    complete_checkpoints,
    load_torch_state,
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


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appearing means code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def _tampered_checkpoint(run: Path, marker: Path) -> Path:
    """A checkpoint whose optimizer.pt runs code when unpickled, with a manifest that
    matches (whoever can write the directory can rewrite the manifest too)."""
    import torch

    def fill(d: Path) -> None:
        torch.save({"state": {}, "param_groups": [], "x": _Payload(marker)}, d / "optimizer.pt")
        (d / STATE_FILE).write_text(json.dumps({"step": 5}))

    return write_checkpoint(run, 5, fill)


def test_a_tampered_optimizer_state_is_refused_and_its_payload_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ckpt = _tampered_checkpoint(tmp_path / "run", marker)
    assert verified_step(ckpt) == 5  # the manifest cannot tell

    with pytest.raises(JobError) as err:
        load_torch_state(ckpt / "optimizer.pt")
    assert not marker.exists()
    assert "optimizer.pt" in err.value.message and "tampered" in err.value.message

    # The file is a real payload: plain unpickling (what weights_only=False did) runs it.
    with zipfile.ZipFile(ckpt / "optimizer.pt") as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    pickle.loads(data)
    assert marker.exists()


def test_real_optimizer_and_scheduler_states_round_trip_through_the_safe_loader(
    tmp_path: Path,
) -> None:
    import torch

    param = torch.nn.Parameter(torch.ones(4, 4))
    opt = torch.optim.AdamW([param], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    param.grad = torch.full((4, 4), 0.5)
    opt.step()
    sched.step()

    def fill(d: Path) -> None:
        torch.save(opt.state_dict(), d / "optimizer.pt")
        torch.save(sched.state_dict(), d / "scheduler.pt")

    ckpt = write_checkpoint(tmp_path, 1, fill)
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.ones(4, 4))], lr=1e-3)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda step: 0.5)
    opt2.load_state_dict(load_torch_state(ckpt / "optimizer.pt"))
    sched2.load_state_dict(load_torch_state(ckpt / "scheduler.pt"))
    assert torch.equal(
        opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )
    assert sched2.state_dict()["last_epoch"] == sched.state_dict()["last_epoch"] == 1
