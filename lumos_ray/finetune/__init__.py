"""Fine-tuning jobs: LoRA / QLoRA with peft on Ray Train, submitted as Ray jobs.

A :class:`FinetuneJobSpec` (YAML in ``configs/finetune/``) becomes a Ray job whose
entrypoint (``python -m lumos_ray.finetune._job_main``) runs a ``TorchTrainer``; the
adapter it produces lands in the adapter registry (:mod:`lumos_ray.adapters`), where
the serving gateway picks it up without a restart.

:class:`LoraSpec` is the one LoRA/QLoRA adapter spec of the project, and
:func:`train_epochs` runs the job's training step in one process: federated LoRA
(:mod:`lumos_ray.federated`) builds on both, never the reverse.
"""

from lumos_ray.finetune._data import (
    Example,
    TokenizedExample,
    load_examples,
    load_splits,
    tokenize_examples,
)
from lumos_ray.finetune._eval import (
    EvalReport,
    EvalTask,
    evaluate_tool_calls,
    format_reports,
    load_tasks,
)
from lumos_ray.finetune._export import (
    ExportStats,
    export_dataset,
    iter_export_rows,
    run_score,
    set_run_score,
)
from lumos_ray.finetune._flywheel import (
    FlywheelResult,
    FlywheelSpec,
    flywheel_workflow,
    load_flywheel_spec,
    run_flywheel,
)
from lumos_ray.finetune._jobs import (
    FinetuneJobInfo,
    cancel_job,
    follow_job,
    get_job,
    job_logs,
    list_jobs,
    make_client_or_none,
    submit_job,
)
from lumos_ray.finetune._model import (
    attach_lora,
    available_target_modules,
    check_qlora_supported,
    load_base,
    load_tokenizer,
)
from lumos_ray.finetune._runner import FinetuneResult, preflight, run_finetune
from lumos_ray.finetune._spec import (
    CheckpointSpec,
    DatasetSpec,
    FinetuneJobSpec,
    LoraSpec,
    OptimizerSpec,
    OutputSpec,
    QuantizationSpec,
    ScalingSpec,
    TrainingSpec,
    load_job_spec,
)
from lumos_ray.finetune._telemetry import parse_progress_line
from lumos_ray.finetune._train import evaluate_loss, train_epochs

__all__ = [
    "CheckpointSpec",
    "DatasetSpec",
    "EvalReport",
    "EvalTask",
    "Example",
    "ExportStats",
    "FinetuneJobInfo",
    "FinetuneJobSpec",
    "FinetuneResult",
    "FlywheelResult",
    "FlywheelSpec",
    "LoraSpec",
    "OptimizerSpec",
    "OutputSpec",
    "QuantizationSpec",
    "ScalingSpec",
    "TokenizedExample",
    "TrainingSpec",
    "attach_lora",
    "available_target_modules",
    "cancel_job",
    "check_qlora_supported",
    "evaluate_loss",
    "evaluate_tool_calls",
    "export_dataset",
    "flywheel_workflow",
    "follow_job",
    "format_reports",
    "get_job",
    "iter_export_rows",
    "job_logs",
    "list_jobs",
    "load_base",
    "load_examples",
    "load_flywheel_spec",
    "load_job_spec",
    "load_splits",
    "load_tasks",
    "load_tokenizer",
    "make_client_or_none",
    "parse_progress_line",
    "preflight",
    "run_finetune",
    "run_flywheel",
    "run_score",
    "set_run_score",
    "submit_job",
    "tokenize_examples",
    "train_epochs",
]
