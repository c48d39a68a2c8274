"""Load a local base model with a LoRA adapter (optionally over 4/8-bit QLoRA weights).

Kept free of Ray so the same code serves the Ray Train workers, the plain baseline
in the benchmark, and federated LoRA clients.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lumos_ray.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from lumos_ray.finetune._spec import FinetuneJobSpec, LoraSpec

__all__ = [
    "attach_lora",
    "available_target_modules",
    "check_lora_targets",
    "check_qlora_supported",
    "load_base",
    "load_base_model",
    "load_tokenizer",
    "model_dir_sha256",
    "peft_config",
    "wrap_with_lora",
]

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def model_dir_sha256(path: str | Path) -> str:
    """Hash of every file of the model directory (names + bytes), so a registered
    adapter records exactly which base weights it was trained on."""
    h = hashlib.sha256()
    root = Path(path)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def _check_model_dir(path: str) -> None:
    if not (Path(path) / "config.json").is_file():
        raise ModelError(
            f"{path}: not a local Hugging Face model directory (no config.json)",
            fix="Point base_model at a directory written by save_pretrained, e.g. the one "
            "`lumos models path lumos-tiny` prints.",
        )


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    _check_model_dir(path)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def check_qlora_supported(device: str, quant_type: str = "nf4", bits: int = 4) -> None:
    """Quantize a small tensor with bitsandbytes on ``device``; raise a clear error if
    that cannot run here (bitsandbytes missing, no backend for the device, no GPU).

    Seconds here instead of an opaque kernel error from inside a training worker."""
    what = f"4-bit {quant_type}" if bits == 4 else "8-bit"
    try:
        import bitsandbytes.functional as bnbf
        import torch
    except Exception as exc:  # ImportError, or a broken native library
        raise ConfigError(
            f"QLoRA needs bitsandbytes, which cannot be imported here: {exc}",
            fix="Install the finetune extra (`pip install lumos-ray[finetune]`) or remove "
            "lora.quantization to train plain LoRA.",
        ) from None
    try:
        x = torch.randn(64, 64, dtype=torch.float32, device=device)
        if bits == 4:
            q, state = bnbf.quantize_4bit(x, quant_type=quant_type)
            bnbf.dequantize_4bit(q, state, quant_type=quant_type)
        else:
            bnbf.int8_vectorwise_quant(x.half())
    except Exception as exc:
        raise ConfigError(
            f"QLoRA ({what}) cannot run on device {device!r} with bitsandbytes: "
            f"{type(exc).__name__}: {exc}",
            fix="Run on a device bitsandbytes supports (CPU, or a CUDA GPU with "
            "scaling.use_gpu: true on a node that has one), or remove lora.quantization.",
        ) from None


def load_base(base_model: str, lora: LoraSpec, device: str = "cpu") -> Any:
    """The frozen base model, quantized when ``lora.quantization`` is set (QLoRA).

    Takes the model directory and the LoRA spec rather than a whole job, so federated
    sites load their model exactly as a fine-tuning worker does."""
    import torch
    from transformers import AutoModelForCausalLM

    _check_model_dir(base_model)
    q = lora.quantization
    if q is None:
        # Any: transformers types `.to` through a decorator mypy cannot see through.
        model: Any = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
        return model.to(device)
    from transformers import BitsAndBytesConfig

    check_qlora_supported(device, q.quant_type, q.bits)
    if q.bits == 4:
        qcfg = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.quant_type,
            bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, _DTYPES[q.compute_dtype]),
        )
    else:
        qcfg = BitsAndBytesConfig(load_in_8bit=True)
    return AutoModelForCausalLM.from_pretrained(
        base_model, quantization_config=qcfg, device_map={"": device}
    )


def load_base_model(spec: FinetuneJobSpec, device: str = "cpu") -> Any:
    """A job's frozen base model (see :func:`load_base`)."""
    return load_base(spec.base_model, spec.lora, device)


def available_target_modules(model: Any) -> list[str]:
    """Short names of the Linear(-like) layers LoRA can attach to."""
    import torch

    names: set[str] = set()
    for full, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) or type(mod).__name__ in ("Linear4bit", "Linear8bitLt"):
            short = full.rsplit(".", 1)[-1]
            if short != "lm_head":
                names.add(short)
    return sorted(names)


def check_lora_targets(model: Any, lora: LoraSpec, base_model: str) -> None:
    """Unknown LoRA target modules are an error that lists the ones the model has."""
    available = available_target_modules(model)
    missing = [t for t in lora.target_modules if t not in available]
    if missing:
        raise ConfigError(
            f"lora.target_modules {missing} not found in {base_model}; "
            f"available modules: {available}",
            fix=f"Pick target modules from: {', '.join(available)}.",
            available=available,
            missing=missing,
        )


def check_target_modules(model: Any, spec: FinetuneJobSpec) -> None:
    """A job's target modules against its model (see :func:`check_lora_targets`)."""
    check_lora_targets(model, spec.lora, spec.base_model)


def peft_config(lora: LoraSpec) -> Any:
    """The one place a :class:`LoraSpec` becomes peft's ``LoraConfig``."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias=lora.bias,
        modules_to_save=list(lora.modules_to_save) if lora.modules_to_save else None,
        task_type="CAUSAL_LM",
    )


def attach_lora(model: Any, lora: LoraSpec, base_model: str) -> Any:
    """A peft model with only the adapter (and ``lora.bias``) trainable; unknown target
    modules are an error that lists the ones the model has."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    check_lora_targets(model, lora, base_model)
    if lora.quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, peft_config(lora))


def wrap_with_lora(model: Any, spec: FinetuneJobSpec) -> Any:
    """A job's base model with its adapter attached (see :func:`attach_lora`)."""
    return attach_lora(model, spec.lora, spec.base_model)
