"""JSONL datasets: validate every line, turn examples into (prompt, response) text,
tokenize with a loss mask, and split off held-out data.

Validation happens before any worker starts (on the client and again in the job), so
a broken line is reported as ``file:line`` in seconds instead of as a stack trace from
the middle of a distributed run.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lumos_ray.errors import DatasetError

__all__ = [
    "Example",
    "TokenizedExample",
    "detect_format",
    "file_sha256",
    "load_examples",
    "load_splits",
    "tokenize_examples",
]

Format = Literal["chat", "instruction", "completion"]


@dataclass(frozen=True)
class Example:
    """One training example as text: the model learns ``response`` given ``prompt``."""

    prompt: str
    response: str
    source: str  # "file:line", for error messages
    messages: tuple[dict[str, str], ...] | None = None  # chat format: rendered per tokenizer


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # -100 where the loss is masked (the prompt)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def detect_format(obj: dict[str, Any]) -> Format:
    if "messages" in obj:
        return "chat"
    if "instruction" in obj:
        return "instruction"
    return "completion"


def _need_str(obj: dict[str, Any], key: str, where: str, fmt: str) -> str:
    if key not in obj:
        raise DatasetError(
            f"{where}: missing field {key!r} (format {fmt!r}; fields present: {sorted(obj)})",
            file=where.rsplit(":", 1)[0],
            line=int(where.rsplit(":", 1)[1]),
        )
    val = obj[key]
    if not isinstance(val, str):
        raise DatasetError(
            f"{where}: field {key!r} must be a string, got {type(val).__name__}",
            file=where.rsplit(":", 1)[0],
            line=int(where.rsplit(":", 1)[1]),
        )
    return val


def _chat_to_text(messages: Any, where: str) -> tuple[str, str]:
    """Plain role-tagged transcript; the last assistant turn is the response.

    A fixed template (not the tokenizer's chat template) so that a base model without
    one still works and training and serving-side prompts are easy to reproduce.
    """
    file, line = where.rsplit(":", 1)
    if not isinstance(messages, list) or not messages:
        raise DatasetError(
            f"{where}: 'messages' must be a non-empty list", file=file, line=int(line)
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DatasetError(
                f"{where}: messages[{i}] needs 'role' and 'content'", file=file, line=int(line)
            )
    if messages[-1]["role"] != "assistant":
        raise DatasetError(
            f"{where}: the last message must have role 'assistant' (the training target)",
            file=file,
            line=int(line),
        )
    prompt = "".join(f"{m['role']}: {m['content']}\n" for m in messages[:-1]) + "assistant: "
    return prompt, str(messages[-1]["content"])


def _to_example(obj: Any, fmt: Format, where: str) -> Example:
    file, line = where.rsplit(":", 1)
    if not isinstance(obj, dict):
        raise DatasetError(
            f"{where}: each line must be a JSON object, got {type(obj).__name__}",
            file=file,
            line=int(line),
        )
    if fmt == "chat":
        if "messages" not in obj:
            _need_str(obj, "messages", where, fmt)
        prompt, response = _chat_to_text(obj["messages"], where)
        msgs = tuple(
            {"role": str(m["role"]), "content": str(m["content"])} for m in obj["messages"]
        )
        return Example(prompt=prompt, response=response, source=where, messages=msgs)
    elif fmt == "instruction":
        instr = _need_str(obj, "instruction", where, fmt)
        out = _need_str(obj, "output", where, fmt)
        extra = obj.get("input") or ""
        prompt = f"### Instruction:\n{instr}\n" + (f"### Input:\n{extra}\n" if extra else "")
        prompt += "### Response:\n"
        response = out
    else:
        if "text" in obj:
            prompt, response = "", _need_str(obj, "text", where, fmt)
        elif "prompt" in obj or "completion" in obj:
            prompt = _need_str(obj, "prompt", where, fmt)
            response = _need_str(obj, "completion", where, fmt)
        else:
            _need_str(obj, "text", where, fmt)
            raise AssertionError("unreachable")
    return Example(prompt=prompt, response=response, source=where)


def load_examples(
    path: str | Path, fmt: str = "auto", max_examples: int | None = None
) -> tuple[list[Example], Format]:
    """Every non-blank line parsed and validated; errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: dataset file not found", file=str(p))
    examples: list[Example] = []
    resolved: Format | None = None if fmt == "auto" else fmt  # type: ignore[assignment]
    with open(p, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{p}:{lineno}"
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"{where}: broken JSON: {exc.msg} (column {exc.colno})",
                    file=str(p),
                    line=lineno,
                ) from None
            if resolved is None:
                if not isinstance(obj, dict):
                    _to_example(obj, "completion", where)
                resolved = detect_format(obj)
            examples.append(_to_example(obj, resolved, where))
            if max_examples and len(examples) >= max_examples:
                break
    if not examples:
        raise DatasetError(f"{p}: the dataset has no examples", file=str(p))
    return examples, resolved or "completion"


def load_splits(
    path: str | Path,
    fmt: str = "auto",
    *,
    validation_path: str | Path | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_examples: int | None = None,
) -> tuple[list[Example], list[Example], Format]:
    """(train, held-out, format). Without a validation file a seeded fraction is held out."""
    train, resolved = load_examples(path, fmt, max_examples)
    if validation_path:
        val, _ = load_examples(validation_path, resolved, None)
        return train, val, resolved
    if len(train) < 2:
        raise DatasetError(
            f"{path}: need at least 2 examples to split off a validation set "
            "(or set dataset.validation_path)",
            file=str(path),
        )
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(train) * validation_fraction))
    val_idx = set(order[:n_val])
    return (
        [e for i, e in enumerate(train) if i not in val_idx],
        [e for i, e in enumerate(train) if i in val_idx],
        resolved,
    )


def tokenize_examples(
    examples: list[Example], tokenizer: Any, seq_len: int
) -> list[TokenizedExample]:
    """Prompt tokens are masked out of the loss; an EOS ends every response."""
    out: list[TokenizedExample] = []
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for ex in examples:
        rendered = _render_chat(ex, tokenizer)
        if rendered is not None:
            # The chat template already carries the role/end markers serving will use.
            p_ids = tokenizer.encode(rendered[0], add_special_tokens=False)
            r_ids = tokenizer.encode(rendered[1], add_special_tokens=False)
        else:
            p_ids = bos + (
                tokenizer.encode(ex.prompt, add_special_tokens=False) if ex.prompt else []
            )
            r_ids = tokenizer.encode(ex.response, add_special_tokens=False) + eos
        ids = (p_ids + r_ids)[:seq_len]
        labels = ([-100] * len(p_ids) + r_ids)[:seq_len]
        if all(lbl == -100 for lbl in labels[1:]):
            continue  # prompt fills the window: nothing left to learn from
        out.append(TokenizedExample(ids, labels))
    return out


def _render_chat(ex: Example, tokenizer: Any) -> tuple[str, str] | None:
    """(prompt, response) through the tokenizer's own chat template, so a chat adapter
    is trained on exactly the text `/v1/chat/completions` will feed it."""
    if ex.messages is None or not getattr(tokenizer, "chat_template", None):
        return None
    msgs = [dict(m) for m in ex.messages]
    prompt = tokenizer.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(msgs, tokenize=False)
    if not full.startswith(prompt):
        return None
    return prompt, full[len(prompt) :]
