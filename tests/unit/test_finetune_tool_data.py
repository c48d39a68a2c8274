"""The fine-tuning loader on chat-with-tools rows (OpenAI's shape, what `lumos runs
export` writes): rendered with lumos-tiny's chat template, loss on assistant turns only,
and LoRA and QLoRA both train on them (in process, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lumos_ray.errors import DatasetError
from lumos_ray.finetune import LoraSpec, load_examples, load_tokenizer, tokenize_examples
from lumos_ray.finetune._spec import OptimizerSpec

CALC = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate arithmetic.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


def _row(a: int, b: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "Use the calculator."},
            {"role": "user", "content": f"what is {a} + {b}?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {
                            "name": "calculator",
                            "arguments": json.dumps({"expression": f"{a}+{b}"}),
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": str(a + b)},
            {"role": "assistant", "content": f"It is {a + b}."},
        ],
        "tools": [CALC],
    }


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tiny() -> str:
    from lumos_ray.models import tiny_model_path

    return str(tiny_model_path())


def test_tool_calls_and_null_content_survive_loading(tmp_path: Path) -> None:
    (ex,), fmt = load_examples(_write(tmp_path / "d.jsonl", [_row(2, 3)]))
    assert fmt == "chat"
    assert ex.messages is not None and ex.tools == (CALC,)
    call = ex.messages[2]
    assert call["content"] is None  # not the string "None"
    assert call["tool_calls"][0]["function"] == {
        "name": "calculator",
        "arguments": '{"expression": "2+3"}',
    }
    assert ex.messages[3] == {"role": "tool", "content": "5", "tool_call_id": "c1"}


def test_loss_covers_assistant_turns_only(tmp_path: Path, tiny: str) -> None:
    tok = load_tokenizer(tiny)
    exs, _ = load_examples(_write(tmp_path / "d.jsonl", [_row(17, 25)]))
    (t,) = tokenize_examples(exs, tok, 1024)
    text = tok.decode(t.input_ids)
    assert "<tools>" in text and '"name": "calculator"' in text  # tools rendered
    learnt = tok.decode([i for i, lbl in zip(t.input_ids, t.labels, strict=True) if lbl != -100])
    assert learnt == (
        '<tool_call>{"name": "calculator", "arguments": {"expression": "17+25"}}</tool_call>'
        "<|im_end|>\nIt is 42.<|im_end|>\n"
    )
    masked = tok.decode([i for i, lbl in zip(t.input_ids, t.labels, strict=True) if lbl == -100])
    assert "what is 17 + 25?" in masked and "<tool_response>\n42\n</tool_response>" in masked
    assert "Use the calculator." in masked
    # Labels are the tokens themselves where kept: the encoding is the full text's.
    assert t.input_ids == tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": None},
                    {"role": "assistant", "content": "x"},
                ]
            },
            "null content",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": None, "tool_calls": [{"function": {}}]},
                ]
            },
            r"tool_calls\[0\] needs function.name",
        ),
        ({"messages": [{"role": "robot", "content": "q"}]}, "use system, user, assistant or tool"),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ],
                "tools": [{"name": "x"}],
            },
            r"tools\[0\] must look like",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "5"}]},
            "last message must have role 'assistant'",
        ),
    ],
)
def test_malformed_tool_rows_name_the_line_and_problem(
    tmp_path: Path, bad: dict[str, Any], match: str
) -> None:
    p = _write(tmp_path / "bad.jsonl", [_row(1, 1), bad])
    with pytest.raises(DatasetError, match=match) as err:
        load_examples(p)
    assert f"{p}:2:" in err.value.message


def _loss(model: Any, toks: list[Any], pad_id: int) -> float:
    """Mean loss on the learnt tokens, with autograd on and no dropout (r=8, dropout 0):
    a 4-bit model's no-grad forward in eval mode (``evaluate_loss``) before training
    left the adapter without gradients for the whole run here (bitsandbytes 0.50,
    CPU); a grad-enabled forward does not."""
    from lumos_ray.finetune._train import _token_loss, collate

    s, n = _token_loss(model, collate(toks, pad_id))
    return float(s.detach()) / n


def _train(tiny: str, tmp_path: Path, lora: LoraSpec) -> tuple[float, float]:
    """Loss of the assistant turns before and after training."""
    import torch

    from lumos_ray.finetune import attach_lora, load_base, train_epochs

    rows = [_row(a, b) for a in range(1, 5) for b in (3, 4)]
    exs, _ = load_examples(_write(tmp_path / "train.jsonl", rows))
    tok = load_tokenizer(tiny)
    toks = tokenize_examples(exs, tok, 512)
    torch.manual_seed(0)
    model = attach_lora(load_base(tiny, lora), lora, tiny)
    model.train()
    before = _loss(model, toks, tok.pad_token_id)
    stats = train_epochs(
        model,
        toks,
        optimizer=OptimizerSpec(lr=3e-2, warmup_steps=0),
        batch_size=8,
        epochs=8,
        seed=0,
        pad_id=tok.pad_token_id,
    )
    assert stats["steps"] == 8
    return before, _loss(model, toks, tok.pad_token_id)


def test_lora_learns_tool_call_turns(tmp_path: Path, tiny: str) -> None:
    before, after = _train(tiny, tmp_path, LoraSpec(r=8, alpha=16))
    assert after < 0.7 * before, (before, after)


def test_qlora_learns_tool_call_turns(tmp_path: Path, tiny: str) -> None:
    lora = LoraSpec(r=8, alpha=16, quantization={"bits": 4, "quant_type": "nf4"})
    before, after = _train(tiny, tmp_path, lora)
    assert after < 0.7 * before, (before, after)
