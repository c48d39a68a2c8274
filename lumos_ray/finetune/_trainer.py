"""The Ray Train driver of a fine-tuning job: a ``TorchTrainer`` over the per-worker
loop in ``_train``. On the Ray-import allowlist (``tests/unit/test_layout.py``): Ray
Train's API is the point of this module; everything else in finetune reaches Ray
through ``lumos_ray.runtime``."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lumos_ray.finetune._spec import FinetuneJobSpec

__all__ = ["TrainOutcome", "fit"]


@dataclass(frozen=True)
class TrainOutcome:
    metrics: dict[str, Any]
    #: Where Ray Train keeps the final checkpoint (None: training reported none).
    checkpoint_path: str | None
    #: The adapter of the final checkpoint, copied here (None without a checkpoint).
    adapter_dir: Path | None


def fit(
    spec: FinetuneJobSpec, loop: Callable[[dict[str, Any]], None], adapter_out: Path
) -> TrainOutcome:
    """Run ``loop`` on ``spec.scaling`` workers; copy the final adapter to ``adapter_out``."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    s = spec.scaling
    resources = {"CPU": s.cpus_per_worker, **s.resources_per_worker}
    if s.use_gpu:
        resources["GPU"] = s.gpus_per_worker or 1
    trainer = TorchTrainer(
        loop,
        train_loop_config={"spec": spec.model_dump(mode="json")},
        scaling_config=ScalingConfig(
            num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=spec.name,
            storage_path=str(Path(spec.output.storage_dir or spec.run_dir.parent)),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.checkpoint.keep),
        ),
        torch_config=TorchConfig(backend="nccl" if s.use_gpu else "gloo"),
    )
    result = trainer.fit()
    metrics = dict(result.metrics or {})
    if result.checkpoint is None:
        return TrainOutcome(metrics, None, None)
    with result.checkpoint.as_directory() as cdir:
        if adapter_out.exists():
            shutil.rmtree(adapter_out)
        shutil.copytree(Path(cdir) / "adapter", adapter_out)
    return TrainOutcome(metrics, str(result.checkpoint.path), adapter_out)
