"""Build ``lumos-tiny``: a small, deterministic Llama that needs no model hub.

Why a real (if tiny) model instead of a fake: the serving stack, the fine-tuning jobs
and the demo must exercise the real loading and inference code paths (vLLM,
transformers, peft). The model is random-init from a fixed seed and its tokenizer is
trained offline on a built-in corpus, so two builds give byte-identical files.

``head_dim`` is 32 because vLLM's CPU attention rejects smaller head sizes at the first
generate. Weights use a larger init std than Llama's default so greedy decoding has
clear winners (no near-ties that fp32 differences between engines could flip).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["TINY_MODEL_NAME", "build_tiny_model", "tiny_model_path"]

TINY_MODEL_NAME = "lumos-tiny"

_SEED = 1234
#: Bump when the build output changes (template, tokenizer, config): cached builds
#: with another version are rebuilt.
_BUILD_VERSION = 2
_VOCAB_SIZE = 2048
_SPECIAL_TOKENS = [
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
]

# ChatML with Hermes-style tools: tool schemas go in the system turn, the model emits
# <tool_call>{json}</tool_call>, results come back as role "tool". vLLM's "hermes"
# tool parser understands this format.
CHAT_TEMPLATE = (
    # Content may be a string or OpenAI content parts (vLLM passes parts when it
    # detects that the template iterates over them): render both the same way.
    "{% macro text(c) %}{% if c is string %}{{ c }}{% elif c %}{% for p in c %}"
    "{% if p.type == 'text' %}{{ p.text }}{% endif %}{% endfor %}{% endif %}{% endmacro %}"
    "{% if tools %}"
    "<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ text(messages[0].content) }}\n\n{% endif %}"
    "You may call functions. Available tools:\n<tools>\n"
    "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    '</tools>\nReturn a call as <tool_call>{"name": ..., "arguments": ...}</tool_call>'
    "<|im_end|>\n"
    "{% elif messages[0].role == 'system' %}"
    "<|im_start|>system\n{{ text(messages[0].content) }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'system' %}"
    "{% elif message.role == 'tool' %}"
    "<|im_start|>user\n<tool_response>\n{{ text(message.content) }}\n</tool_response>"
    "<|im_end|>\n"
    "{% elif message.role == 'assistant' and message.tool_calls %}"
    "<|im_start|>assistant\n{{ text(message.content) }}"
    "{% for tc in message.tool_calls %}"
    "{% set f = tc.function if tc.function is defined else tc %}"
    '<tool_call>{"name": "{{ f.name }}", "arguments": '
    "{% if f.arguments is string %}{{ f.arguments }}{% else %}{{ f.arguments | tojson }}"
    "{% endif %}}</tool_call>"
    "{% endfor %}<|im_end|>\n"
    "{% else %}"
    "<|im_start|>{{ message.role }}\n{{ text(message.content) }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _train_tokenizer():  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from lumos_ray.models._corpus import CORPUS

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(CORPUS), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=_SPECIAL_TOKENS[4:],
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path) -> Path:
    """Write lumos-tiny (model + tokenizer + chat template) into ``out_dir``.

    Deterministic: same seed, same corpus, single-threaded init -> identical files.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    # The model's vocab is exactly the tokenizer's: ids the tokenizer cannot decode
    # would make greedy output undecodable. The built-in corpus yields ~1.2k tokens.
    vocab_size = len(tokenizer)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=32,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        initializer_range=0.25,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
    )
    config.dtype = torch.float32
    threads = torch.get_num_threads()
    rng_state = torch.random.get_rng_state()
    try:
        torch.set_num_threads(1)
        torch.manual_seed(_SEED)
        # transformers wraps PreTrainedModel.to with functools.wraps(Module.to), which
        # mypy reads as the unbound method (first argument: the model).
        model = LlamaForCausalLM(config).to(torch.float32)  # type: ignore[arg-type]
        model.eval()
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            do_sample=False,
        )
        model.save_pretrained(out, safe_serialization=True)
    finally:
        torch.set_num_threads(threads)
        torch.random.set_rng_state(rng_state)
    tokenizer.save_pretrained(out)
    # A marker a cache check can trust: written last, so a half-built dir lacks it.
    (out / "lumos_model.json").write_text(
        json.dumps(
            {
                "name": TINY_MODEL_NAME,
                "build": _BUILD_VERSION,
                "seed": _SEED,
                "vocab_size": vocab_size,
            }
        )
        + "\n"
    )
    return out


def _default_cache_dir() -> Path:
    root = os.environ.get("LUMOS_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "lumos"
    return base / "models"


def tiny_model_path(cache_dir: str | Path | None = None) -> Path:
    """The cached lumos-tiny directory, built on first use.

    Atomic: a build goes into a temp dir next to the target and is renamed into
    place, so concurrent callers (test workers, replicas) never see a partial model.
    """
    base = Path(cache_dir).expanduser() if cache_dir else _default_cache_dir()
    target = (base / TINY_MODEL_NAME).resolve()
    if _is_current(target):
        return target
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{TINY_MODEL_NAME}-", dir=base))
    try:
        build_tiny_model(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared
        if target.exists() and not _is_current(target):
            # An older build: move it aside, then swap the new one in.
            old = Path(tempfile.mkdtemp(prefix=f".{TINY_MODEL_NAME}-old-", dir=base))
            try:
                os.rename(target, old / "m")
            except OSError:
                pass
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # Someone else finished first (target exists and is non-empty).
            if not _is_current(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_current(model_dir: Path) -> bool:
    try:
        marker = json.loads((model_dir / "lumos_model.json").read_text())
    except (OSError, ValueError):
        return False
    return marker.get("build") == _BUILD_VERSION
