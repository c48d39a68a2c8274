"""The untrained base of ``lumos-tiny-tools``: a tokenizer built for tool calls and a
random-init Llama, both deterministic.

Why its own tokenizer: the model must copy numbers from the question into the call's
arguments, and copying is attention matching a token of the call to the same token in
the question. With one token per digit there are only ten digit tokens, every one of
them repeated across the prompt (the other operand, the dates in the tool schemas), so
the match is ambiguous. The pre-tokenizer cuts every run of digits into pairs from the
left (``4821`` -> ``48 21``, ``482`` -> ``48 2``) and the vocabulary holds all hundred
pairs: a hundred number tokens, each frequent in training, so a number never seen in
training is still made of tokens seen thousands of times, and fewer copied tokens are
ambiguous. Measured (same recipe, 1,500 steps): held-out exact calls 8/30 with pairs,
0/30 with one token per digit (docs/demo-model.md). Everything else is byte-level BPE
that may merge
across spaces: the tool schemas in the system turn repeat verbatim in every request,
so they collapse into a few long tokens and a training step sees short sequences.
The chat template is lumos-tiny's (ChatML + Hermes tool calls), so vLLM's ``hermes``
tool parser reads the calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SIZES", "ModelSize", "build_tools_base", "tool_specs", "train_tools_tokenizer"]

_SEED = 4321
_VOCAB_SIZE = 1024


@dataclass(frozen=True)
class ModelSize:
    """Llama shape. ``head_dim`` stays 32: vLLM's CPU attention needs >= 32."""

    hidden: int
    layers: int
    heads: int
    intermediate: int


SIZES: dict[str, ModelSize] = {
    # The demo model (make demo-model). H12: this shape reached 28/30 held-out exact
    # calls in transformers after 2,400 steps of 8 (lr 1e-3, linear decay) outside the
    # pipeline; 192/6/512 (H4) was slower per step and never measured past 1/40.
    "demo": ModelSize(hidden=128, layers=3, heads=4, intermediate=256),
    # The from-scratch retrain in CI: the same recipe, a fraction of the compute.
    "ci": ModelSize(hidden=128, layers=2, heads=4, intermediate=384),
}


def tool_specs(names: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """OpenAI tool specs of built-in tools, exactly as an agent offers them."""
    from lumos_ray.tools import get_tool

    return [get_tool(n).openai_schema() for n in names]


def _tokenizer_corpus() -> list[str]:
    """Text like what the model reads and writes: the tool specs as the template
    renders them, generated prompts, calls and answers, and lumos-tiny's prose."""
    from lumos_ray.models._corpus import CORPUS
    from lumos_ray.models._tasks import DEMO_INSTRUCTIONS, DEMO_TOOLS, make_tasks

    specs = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in tool_specs(DEMO_TOOLS))
    frame = (
        "system\n"
        + DEMO_INSTRUCTIONS
        + "\n\nYou may call functions. Available tools:\n<tools>\n"
        + specs
        + '</tools>\nReturn a call as <tool_call>{"name": ..., "arguments": ...}</tool_call>'
    )
    out = [frame, "user\n", "assistant\n"] * 50
    for t in make_tasks(2000, "train", seed=99):
        call = json.dumps({"name": t.tool, "arguments": t.arguments})
        out.append(f"{t.prompt}\n{call}\nThe answer is 12. There are 34 days.")
    out.extend(CORPUS)
    # Every two-digit pair, often enough that BPE makes each one a token: a number the
    # model never saw in training is still made of known tokens.
    out.extend([" ".join(f"{i:02d}" for i in range(100))] * 40)
    return out


def train_tools_tokenizer() -> Any:  # -> PreTrainedTokenizerFast
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from lumos_ray.models._tiny import _SPECIAL_TOKENS, CHAT_TEMPLATE

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            # A line break ends a piece: "assistant\n" (the template's turn header)
            # never merges with the text of the turn, so a generation prompt ending in
            # the header tokenizes as the training text did.
            pre_tokenizers.Split("\n", behavior="merged_with_previous"),
            # Digits in pairs from the left ("4821" -> "48" "21", "482" -> "48" "2").
            pre_tokenizers.Split(Regex("[0-9][0-9]?"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        max_token_length=48,
    )
    tok.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=_SPECIAL_TOKENS[4:],
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tools_base(out_dir: str | Path, size: str = "demo") -> Path:
    """Write the untrained base (random init, fixed seed) with its tokenizer."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    shape = SIZES[size]
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tools_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        head_dim=shape.hidden // shape.heads,
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        initializer_range=0.02,
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
        model = LlamaForCausalLM(config).to(torch.float32)  # type: ignore[arg-type]
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
    return out
