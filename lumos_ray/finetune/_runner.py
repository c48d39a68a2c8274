"""Driver side of a job: validate, run the ``TorchTrainer``, publish the adapter.

This runs wherever the job's driver runs: inside a Ray job (``_job_main``) for
``lumos finetune submit``, or in-process against the embedded cluster.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from lumos_ray.errors import JobError
from lumos_ray.finetune._data import file_sha256, load_splits
from lumos_ray.finetune._spec import FinetuneJobSpec
from lumos_ray.finetune._telemetry import PROGRESS_PREFIX

__all__ = ["FinetuneResult", "preflight", "run_finetune"]


class FinetuneResult(BaseModel):
    """What a finished job produced."""

    model_config = ConfigDict(extra="allow")

    name: str
    adapter_dir: str
    adapter_name: str | None = None
    registered: bool = False
    merged_dir: str | None = None
    checkpoint_dir: str
    metrics: dict[str, Any]
    metadata: dict[str, Any]


def preflight(spec: FinetuneJobSpec) -> None:
    """Cheap checks that fail in seconds instead of inside the workers: every dataset
    line parses and has its fields, the base model and target modules exist."""
    from lumos_ray.finetune._model import check_target_modules

    d = spec.dataset
    load_splits(
        d.path,
        d.format,
        validation_path=d.validation_path,
        validation_fraction=d.validation_fraction,
        seed=spec.training.seed,
        max_examples=d.max_examples,
    )
    # Target modules: read them off the model skeleton (no weights loaded).
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lumos_ray.finetune._model import _check_model_dir

    _check_model_dir(spec.base_model)
    cfg = AutoConfig.from_pretrained(spec.base_model)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(cfg)
    check_target_modules(skeleton, spec)


def _check_cluster_resources(spec: FinetuneJobSpec) -> None:
    from lumos_ray import runtime

    res = runtime.cluster_resources()
    if spec.scaling.use_gpu and res.get("GPU", 0) < spec.scaling.num_workers * (
        spec.scaling.gpus_per_worker or 1
    ):
        raise JobError(
            f"scaling.use_gpu is set but the cluster has {res.get('GPU', 0):g} GPUs for "
            f"{spec.scaling.num_workers} workers",
            fix="Set scaling.use_gpu: false, or submit to a cluster with GPUs.",
        )
    need = spec.scaling.num_workers * spec.scaling.cpus_per_worker
    if res.get("CPU", 0) < need:
        raise JobError(
            f"the job needs {need:g} CPUs ({spec.scaling.num_workers} workers x "
            f"{spec.scaling.cpus_per_worker:g}) but the cluster has {res.get('CPU', 0):g}",
            fix="Lower scaling.num_workers / cpus_per_worker or add nodes.",
        )


class _ProgressTail:
    """Copies new progress events to ``sink`` (the job's stdout) while training runs."""

    def __init__(self, path: Path, sink: Callable[[str], None]) -> None:
        self.path = path
        self.sink = sink
        self.offset = path.stat().st_size if path.exists() else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _ProgressTail:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._drain()

    def _drain(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            f.seek(self.offset)
            while True:
                line = f.readline()
                if not line.endswith("\n"):
                    break
                self.offset += len(line.encode("utf-8"))
                self.sink(PROGRESS_PREFIX + line.rstrip("\n"))

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._drain()


def _metadata(spec: FinetuneJobSpec, metrics: dict[str, Any]) -> dict[str, Any]:
    from lumos_ray.finetune._model import model_dir_sha256

    d = spec.dataset
    return {
        "job_name": spec.name,
        "base_model": spec.base_model,
        "base_model_sha256": model_dir_sha256(spec.base_model),
        "dataset_path": d.path,
        "dataset_sha256": file_sha256(d.path),
        "validation_sha256": file_sha256(d.validation_path) if d.validation_path else None,
        "hyperparameters": spec.model_dump(include={"lora", "optimizer", "training", "scaling"}),
        "metrics": {k: v for k, v in metrics.items() if k != "replica_fingerprints"},
        "created_at": time.time(),
    }


def _merge(spec: FinetuneJobSpec, adapter_dir: Path, out: Path) -> Path:
    """Base (full precision, also for QLoRA jobs) + adapter folded into plain weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lumos_ray.finetune._model import load_tokenizer

    base = AutoModelForCausalLM.from_pretrained(spec.base_model, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    if out.exists():
        shutil.rmtree(out)
    merged.save_pretrained(str(out))
    load_tokenizer(spec.base_model).save_pretrained(str(out))
    return out


def _register(spec: FinetuneJobSpec, adapter_dir: Path, metadata: dict[str, Any]) -> str:
    """Publish the adapter in the job's tenant's own namespace of the registry
    (``LUMOS_TENANT``: other tenants never see it, and may hold the same name),
    refused (QuotaExceededError) when it would take the tenant past its plan's storage
    limit."""
    from lumos_ray.adapters import AdapterRegistry
    from lumos_ray.config import LumosSettings
    from lumos_ray.platform import default_platform

    tenant = LumosSettings.from_env().tenant_id
    size = sum(f.stat().st_size for f in Path(adapter_dir).rglob("*") if f.is_file())
    default_platform().check_storage(tenant, incoming_bytes=size)
    reg = (
        AdapterRegistry(spec.output.registry_dir) if spec.output.registry_dir else AdapterRegistry()
    )
    rec = reg.register(
        spec.adapter_name,
        str(adapter_dir),
        base_model=spec.base_model,
        metadata=metadata,
        overwrite=spec.output.overwrite,
        tenant=tenant,
    )
    return str(getattr(rec, "path", None) or getattr(rec, "adapter_dir", None) or adapter_dir)


def run_finetune(
    spec: FinetuneJobSpec, *, log: Callable[[str], None] | None = None
) -> FinetuneResult:
    """Train (resuming from this job's last checkpoint if there is one), then save the
    adapter, register it and optionally merge it. Needs a Ray connection."""
    from lumos_ray import runtime, tracing
    from lumos_ray.finetune._trainer import fit

    runtime.ensure_connected()
    spec = spec.resolve_paths()
    preflight(spec)
    _check_cluster_resources(spec)
    sink = log or (lambda line: print(line, flush=True))
    run_dir = spec.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    adapter_out = run_dir / "output" / "adapter"
    with (
        tracing.span(
            "finetune.train",
            job=spec.name,
            base_model=spec.base_model,
            workers=spec.scaling.num_workers,
            max_steps=spec.training.max_steps,
        ) as span,
        _ProgressTail(run_dir / "progress.jsonl", sink),
    ):
        try:
            outcome = fit(spec, _loop_fn(), adapter_out)
        except Exception as exc:
            cause = _unwrap_lumos(exc)
            if cause is not None:
                raise cause from None
            raise JobError(f"training job {spec.name!r} failed: {exc}") from None
        for key in ("step", "eval_loss", "base_eval_loss", "resumed_from_step"):
            value = outcome.metrics.get(key)
            if isinstance(value, int | float):
                span.set_attribute(f"finetune.{key}", value)
    if outcome.checkpoint_path is None or outcome.adapter_dir is None:
        raise JobError(f"training job {spec.name!r} finished without a checkpoint")
    metrics = outcome.metrics
    out_dir = run_dir / "output"
    metadata = _metadata(spec, metrics)
    (adapter_out / "lumos_metadata.json").write_text(json.dumps(metadata, indent=2, default=str))
    res = FinetuneResult(
        name=spec.name,
        adapter_dir=str(adapter_out),
        checkpoint_dir=outcome.checkpoint_path,
        metrics=metrics,
        metadata=metadata,
    )
    if spec.output.register_adapter:
        res.adapter_name = spec.adapter_name
        res.adapter_dir = _register(spec, adapter_out, metadata)
        res.registered = True
    if spec.output.merge:
        res.merged_dir = str(_merge(spec, adapter_out, out_dir / "merged"))
    (run_dir / "result.json").write_text(res.model_dump_json(indent=2))
    return res


def _loop_fn() -> Callable[[dict[str, Any]], None]:
    from lumos_ray.finetune._train import train_loop_per_worker

    return train_loop_per_worker


def _unwrap_lumos(exc: BaseException) -> BaseException | None:
    """Ray Train wraps worker errors (TrainingFailedError -> worker errors); surface a
    LumosError raised in a worker (bad dataset, bad target module) as itself."""
    from lumos_ray.errors import LumosError

    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, LumosError):
            return cur
        for attr in ("cause", "__cause__", "__context__", "error"):
            inner = getattr(cur, attr, None)
            if isinstance(inner, BaseException):
                stack.append(inner)
        for attr in ("worker_failures", "errors"):
            inner = getattr(cur, attr, None)
            if isinstance(inner, dict):
                stack.extend(v for v in inner.values() if isinstance(v, BaseException))
            elif isinstance(inner, list):
                stack.extend(v for v in inner if isinstance(v, BaseException))
    return None
