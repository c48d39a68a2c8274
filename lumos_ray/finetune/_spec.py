"""The fine-tuning job spec: one pydantic model, loadable from YAML.

The same spec object travels from the CLI through the Ray job entrypoint to every
Ray Train worker (as JSON), so everything a worker needs to reproduce the run lives
here and nowhere else.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lumos_ray.config import load_yaml_model

__all__ = [
    "CheckpointSpec",
    "DatasetSpec",
    "FinetuneJobSpec",
    "LoraSpec",
    "OptimizerSpec",
    "OutputSpec",
    "QuantizationSpec",
    "ScalingSpec",
    "TrainingSpec",
    "load_job_spec",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    """JSONL training data and where the held-out split comes from."""

    path: str = Field(description="JSONL file, one example per line.")
    format: Literal["auto", "chat", "instruction", "completion"] = Field(
        default="auto",
        description="chat: {messages:[{role,content}]}; instruction: {instruction, input?, "
        "output}; completion: {text} or {prompt, completion}. auto: from the first line.",
    )
    validation_path: str | None = Field(
        default=None, description="Held-out JSONL; if unset, `validation_fraction` is split off."
    )
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
    max_examples: int | None = Field(default=None, ge=1)


class QuantizationSpec(_Strict):
    """QLoRA: the frozen base weights load quantized (bitsandbytes); the adapter trains
    in full precision on top. Quantizing only the frozen part is what makes QLoRA cheap:
    memory drops about 4x (4-bit) or 2x (8-bit) while gradients flow through fp32 LoRA."""

    bits: Literal[4, 8] = Field(default=4, description="4 (nf4/fp4) or 8 (LLM.int8).")
    quant_type: Literal["nf4", "fp4"] = Field(default="nf4", description="4-bit only.")
    double_quant: bool = Field(default=True, description="4-bit only: quantize the scales too.")
    compute_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32", description="4-bit only: dtype of the de-quantized matmuls."
    )

    @model_validator(mode="after")
    def _four_bit_only(self) -> QuantizationSpec:
        if self.bits == 8:
            # bitsandbytes ignores these at 8 bits; a silent no-op would mislead. Only
            # values other than the defaults count, so a dumped spec loads back.
            fields = type(self).model_fields
            given = [
                k
                for k in ("quant_type", "double_quant", "compute_dtype")
                if getattr(self, k) != fields[k].default
            ]
            if given:
                raise ValueError(
                    f"{', '.join(given)}: only for 4-bit quantization; remove them or set bits: 4"
                )
        return self


class LoraSpec(_Strict):
    """The one LoRA adapter spec: what a fine-tuning job's ``lora:``, a federation's
    ``lora:`` and the adapter metadata in the registry all mean by "the adapter".

    One type so that an adapter trained by a job and one trained by a federation are
    configured, validated, and recorded the same way. Old spellings still load:
    ``rank`` is ``r``; a job's top-level ``qlora:`` section is ``lora.quantization``.
    """

    r: int = Field(default=8, ge=1, description="Rank of the update matrices (alias: rank).")
    alpha: int = Field(default=16, ge=1, description="Scaling: the update is alpha / r * BA.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        min_length=1,
        description="Short names of the Linear layers that get an adapter.",
    )
    bias: Literal["none", "all", "lora_only"] = Field(
        default="none",
        description="Which biases train with the adapter (and travel with it): none, all, "
        "or only those of the adapted layers.",
    )
    quantization: QuantizationSpec | None = Field(
        default=None, description="QLoRA: quantized base weights. None = plain LoRA."
    )
    modules_to_save: list[str] | None = Field(
        default=None,
        description="Modules trained in full next to the adapter (peft's modules_to_save), "
        "e.g. [embed_tokens, lm_head] to teach a new or random-init model its vocabulary. "
        "They travel in the adapter (large); merge: true folds them into plain weights.",
    )

    @model_validator(mode="before")
    @classmethod
    def _rank_alias(cls, data: Any) -> Any:
        # `rank` was federated LoRA's spelling of `r`; peft and fine-tuning say `r`.
        if isinstance(data, dict) and "rank" in data:
            data = dict(data)
            if "r" in data:
                raise ValueError("both r and rank are set; rank is an old name for r: keep r")
            data["r"] = data.pop("rank")
        return data

    @property
    def quantized(self) -> bool:
        return self.quantization is not None


class OptimizerSpec(_Strict):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(default=2e-4, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    schedule: Literal["constant", "linear", "cosine"] = "linear"
    warmup_steps: int = Field(default=0, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0.0)


class TrainingSpec(_Strict):
    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(
        default=None, ge=1, description="Optimizer steps; overrides `epochs` when set."
    )
    batch_size: int = Field(default=4, ge=1, description="Examples per worker per micro-batch.")
    grad_accum_steps: int = Field(default=1, ge=1)
    seq_len: int = Field(default=256, ge=8)
    seed: int = 0
    eval_every_steps: int = Field(default=0, ge=0, description="0 = only at the end.")
    log_every_steps: int = Field(default=1, ge=1)


class ScalingSpec(_Strict):
    num_workers: int = Field(default=1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0.0)
    gpus_per_worker: float | None = Field(default=None, ge=0.0)
    resources_per_worker: dict[str, float] = Field(default_factory=dict)


class CheckpointSpec(_Strict):
    every_steps: int = Field(default=0, ge=0, description="0 = only at the end.")
    keep: int = Field(default=2, ge=1)


class OutputSpec(_Strict):
    storage_dir: str | None = Field(
        default=None,
        description="Ray Train storage (checkpoints, progress); default <LUMOS_HOME>/finetune. "
        "Multi-node clusters need a path every node shares.",
    )
    register_adapter: bool = Field(default=True, description="Put the adapter in the registry.")
    adapter_name: str | None = Field(default=None, description="Default: the job name.")
    registry_dir: str | None = Field(default=None, description="Default: the registry's own.")
    overwrite: bool = False
    merge: bool = Field(default=False, description="Also save base+adapter merged as a full model.")
    metrics_exporter: str | None = Field(
        default=None,
        description="OpenTelemetry metrics from the job: console | otlp[:URL] | jsonl:DIR. "
        "Default: $LUMOS_METRICS_EXPORTER on the submitting machine, else none.",
    )


class FinetuneJobSpec(_Strict):
    """A LoRA / QLoRA fine-tuning job: model, data, adapter, optimisation, scaling."""

    name: str = Field(description="Job name: also names the checkpoints (resume key).")
    base_model: str = Field(
        description="Local Hugging Face model directory ('lumos-tiny': the embedded model)."
    )
    dataset: DatasetSpec
    lora: LoraSpec = Field(default_factory=LoraSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)

    @model_validator(mode="before")
    @classmethod
    def _qlora_alias(cls, data: Any) -> Any:
        """The old top-level ``qlora:`` section loads as ``lora.quantization`` (4-bit):
        job specs written before the LoRA spec was unified keep working."""
        if not isinstance(data, dict) or "qlora" not in data:
            return data
        data = dict(data)
        old = data.pop("qlora")
        if old is None:
            return data
        if not isinstance(old, dict):
            raise ValueError("qlora must be a mapping; it is the old spelling of lora.quantization")
        old = dict(old)
        enabled = old.pop("enabled", False)
        lora = data.get("lora") or {}
        if not isinstance(lora, dict):
            return data  # the field's own validation reports the bad lora value
        if enabled is not True and enabled is not False:
            raise ValueError("qlora.enabled must be true or false (better: use lora.quantization)")
        if not enabled:
            return data
        if lora.get("quantization") is not None:
            raise ValueError(
                "both qlora and lora.quantization are set; qlora is the old spelling: "
                "keep lora.quantization only"
            )
        data["lora"] = {**lora, "quantization": {"bits": 4, **old}}
        return data

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("use letters, digits, '.', '_' or '-' (max 100 chars)")
        return v

    def resolve_paths(self, base_dir: str | Path | None = None) -> FinetuneJobSpec:
        """Absolute paths (relative ones are taken from ``base_dir``, e.g. the YAML's folder).

        Workers run in other directories (and maybe on other nodes), so relative paths
        must be fixed on the client before the spec leaves it.
        """
        base = Path(base_dir) if base_dir else Path.cwd()

        def fix(p: str | None) -> str | None:
            if p is None:
                return None
            q = Path(os.path.expanduser(p))
            return str(q if q.is_absolute() else (base / q).resolve())

        data = self.model_copy(deep=True)
        if data.base_model == "lumos-tiny" and not (base / "lumos-tiny").exists():
            from lumos_ray.models import tiny_model_path

            data.base_model = str(tiny_model_path())
        data.base_model = fix(data.base_model) or data.base_model
        data.dataset.path = fix(data.dataset.path) or data.dataset.path
        data.dataset.validation_path = fix(data.dataset.validation_path)
        data.output.storage_dir = fix(data.output.storage_dir) or str(default_storage_dir())
        data.output.registry_dir = fix(data.output.registry_dir)
        if data.output.metrics_exporter is None:
            data.output.metrics_exporter = os.environ.get("LUMOS_METRICS_EXPORTER") or None
        exp = data.output.metrics_exporter
        if exp and exp.startswith("jsonl:"):
            data.output.metrics_exporter = "jsonl:" + (fix(exp[len("jsonl:") :]) or "")
        return data

    @property
    def adapter_name(self) -> str:
        return self.output.adapter_name or self.name

    @property
    def run_dir(self) -> Path:
        """Where Ray Train keeps this job's checkpoints, and where progress is written."""
        return Path(self.output.storage_dir or default_storage_dir()) / self.name


def default_storage_dir() -> Path:
    home = os.environ.get("LUMOS_HOME", ".lumos")
    return (Path(home).expanduser() / "finetune").resolve()


def load_job_spec(path: str | Path) -> FinetuneJobSpec:
    """Load a YAML job spec; relative paths in it are relative to the YAML file."""
    spec = load_yaml_model(path, FinetuneJobSpec)
    return spec.resolve_paths(Path(path).resolve().parent)
