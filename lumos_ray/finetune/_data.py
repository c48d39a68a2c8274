"""JSONL datasets: validate every line, turn examples into (prompt, response) text,
tokenize with a loss mask, and split off held-out data.

Chat rows may be OpenAI's chat-with-tools fine-tuning shape (what ``lumos runs export``
writes): assistant turns with ``tool_calls`` (content null), ``tool`` results, and the
``tools`` offered. With a tokenizer that has a chat template they are rendered by that
template, tools included, exactly as ``/v1/chat/completions`` renders them at serving
time, and the loss covers every assistant turn (tool calls and answers) and nothing
else: the model learns what to say and which tool to call, not to predict users or
tool results.

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
    "render_chat_segments",
    "tokenize_examples",
]

Format = Literal["chat", "instruction", "completion"]


@dataclass(frozen=True)
class Example:
    """One training example as text: the model learns ``response`` given ``prompt``."""

    prompt: str
    response: str
    source: str  # "file:line", for error messages
    messages: tuple[dict[str, Any], ...] | None = None  # chat format: rendered per tokenizer
    tools: tuple[dict[str, Any], ...] | None = None  # tools offered (OpenAI function schemas)


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


def _bad(where: str, msg: str) -> DatasetError:
    file, line = where.rsplit(":", 1)
    return DatasetError(f"{where}: {msg}", file=file, line=int(line))


def _check_tool_calls(calls: Any, where: str, i: int) -> list[dict[str, Any]]:
    """OpenAI tool calls, normalised: arguments as a JSON string."""
    if not isinstance(calls, list) or not calls:
        raise _bad(where, f"messages[{i}].tool_calls must be a non-empty list")
    out: list[dict[str, Any]] = []
    for j, tc in enumerate(calls):
        fn = tc.get("function") if isinstance(tc, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _bad(
                where,
                f"messages[{i}].tool_calls[{j}] needs function.name "
                '(shape: {"id", "type": "function", "function": {"name", "arguments"}})',
            )
        args = fn.get("arguments", "{}")
        if isinstance(args, dict):
            args = json.dumps(args)
        elif not isinstance(args, str):
            raise _bad(where, f"messages[{i}].tool_calls[{j}].function.arguments must be a string")
        out.append(
            {
                "id": str(tc.get("id") or f"call_{i}_{j}"),
                "type": "function",
                "function": {"name": fn["name"], "arguments": args},
            }
        )
    return out


def _check_messages(messages: Any, where: str) -> list[dict[str, Any]]:
    """Chat messages validated and cut down to the fields the format has."""
    if not isinstance(messages, list) or not messages:
        raise _bad(where, "'messages' must be a non-empty list")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise _bad(where, f"messages[{i}] needs 'role' and 'content'")
        role = m["role"]
        if role not in ("system", "user", "assistant", "tool"):
            raise _bad(where, f"messages[{i}].role {role!r}: use system, user, assistant or tool")
        msg: dict[str, Any] = {"role": role}
        if role == "assistant" and m.get("tool_calls"):
            msg["tool_calls"] = _check_tool_calls(m["tool_calls"], where, i)
            content = m.get("content")
            msg["content"] = content if isinstance(content, str) and content else None
        else:
            if "content" not in m:
                raise _bad(where, f"messages[{i}] needs 'role' and 'content'")
            content = m["content"]
            if content is None:
                raise _bad(
                    where,
                    f"messages[{i}] ({role}) has null content: only an assistant turn "
                    "with tool_calls may leave content null",
                )
            msg["content"] = content if isinstance(content, str) else json.dumps(content)
        if role == "tool":
            msg["tool_call_id"] = str(m.get("tool_call_id") or "")
        out.append(msg)
    if out[-1]["role"] != "assistant":
        raise _bad(where, "the last message must have role 'assistant' (the training target)")
    return out


def _check_tools(tools: Any, where: str) -> tuple[dict[str, Any], ...] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise _bad(where, "'tools' must be a list of OpenAI function schemas")
    for j, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad(
                where,
                f"tools[{j}] must look like "
                '{"type": "function", "function": {"name", "description", "parameters"}}',
            )
    return tuple(tools) or None


def _plain_turn(m: dict[str, Any]) -> str:
    """A message as plain text, tool calls in the hermes ``<tool_call>`` form."""
    text = m.get("content") or ""
    for tc in m.get("tool_calls") or []:
        fn = tc["function"]
        text += f'<tool_call>{{"name": "{fn["name"]}", "arguments": {fn["arguments"]}}}</tool_call>'
    return text


def _chat_to_text(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """Plain role-tagged transcript; the last assistant turn is the response.

    A fixed template (not the tokenizer's chat template) so that a base model without
    one still works and training and serving-side prompts are easy to reproduce.
    """
    prompt = "".join(f"{m['role']}: {_plain_turn(m)}\n" for m in messages[:-1]) + "assistant: "
    return prompt, _plain_turn(messages[-1])


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
        msgs = _check_messages(obj["messages"], where)
        tools = _check_tools(obj.get("tools"), where)
        prompt, response = _chat_to_text(msgs)
        return Example(
            prompt=prompt, response=response, source=where, messages=tuple(msgs), tools=tools
        )
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
    """Prompt tokens are masked out of the loss; an EOS ends every response.

    Chat examples with a chat-template tokenizer: the whole conversation (tools
    included) through the template, with the loss on every assistant turn."""
    out: list[TokenizedExample] = []
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for ex in examples:
        spans = _render_chat(ex, tokenizer)
        if spans is not None:
            ids, labels = _tokenize_spans(spans, tokenizer)
        else:
            if ex.tools and getattr(tokenizer, "chat_template", None) is None:
                raise DatasetError(
                    f"{ex.source}: the row offers tools but the tokenizer has no chat "
                    "template to render them with",
                    fix="Fine-tune a base model whose tokenizer has a chat template "
                    "(lumos-tiny has one), or drop the 'tools' of the rows.",
                )
            p_ids = bos + (
                tokenizer.encode(ex.prompt, add_special_tokens=False) if ex.prompt else []
            )
            r_ids = tokenizer.encode(ex.response, add_special_tokens=False) + eos
            ids = p_ids + r_ids
            labels = [-100] * len(p_ids) + r_ids
        ids, labels = ids[:seq_len], labels[:seq_len]
        if all(lbl == -100 for lbl in labels[1:]):
            continue  # prompt fills the window: nothing left to learn from
        out.append(TokenizedExample(ids, labels))
    return out


def render_chat_segments(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, tokenizer: Any
) -> list[tuple[str, bool]] | None:
    """The conversation as the chat template renders it, cut into (text, is_assistant)
    pieces whose concatenation is the full rendering.

    Each assistant turn's text is what the template adds after the generation prompt
    (``render(messages[:i], add_generation_prompt=True)``) up to the rendering of
    ``messages[:i+1]``: exactly what the model produces at serving time, end marker
    included. None when the template does not render prefixes as prefixes of the
    whole (then the split would be a guess)."""
    kw: dict[str, Any] = {"tokenize": False}
    if tools:
        kw["tools"] = list(tools)
    full = tokenizer.apply_chat_template(messages, **kw)
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True, **kw)
        upto = tokenizer.apply_chat_template(messages[: i + 1], **kw)
        if not (upto.startswith(before) and full.startswith(upto) and len(before) >= pos):
            return None
        if len(before) > pos:
            pieces.append((full[pos : len(before)], False))
        pieces.append((full[len(before) : len(upto)], True))
        pos = len(upto)
    if pos < len(full):
        pieces.append((full[pos:], False))
    return pieces


def _render_chat(ex: Example, tokenizer: Any) -> list[tuple[str, bool]] | None:
    """Pieces through the tokenizer's own chat template, so a chat adapter is trained
    on exactly the text `/v1/chat/completions` will feed it."""
    if ex.messages is None or not getattr(tokenizer, "chat_template", None):
        return None
    msgs = [dict(m) for m in ex.messages]
    return render_chat_segments(msgs, list(ex.tools) if ex.tools else None, tokenizer)


def _tokenize_spans(pieces: list[tuple[str, bool]], tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids of the whole text, labels kept on tokens that start inside an
    assistant piece. A fast tokenizer encodes the full text once (the same ids
    serving sees) and maps tokens to pieces by their offsets; a slow one encodes
    piece by piece."""
    text = "".join(p for p, _ in pieces)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        bounds: list[tuple[int, int]] = []
        pos = 0
        for p, learn in pieces:
            if learn:
                bounds.append((pos, pos + len(p)))
            pos += len(p)
        labels = [
            tid if any(a <= start < b for a, b in bounds) else -100
            for tid, (start, _end) in zip(ids, enc["offset_mapping"], strict=True)
        ]
        return ids, labels
    ids, labels = [], []
    for p, learn in pieces:
        part = tokenizer.encode(p, add_special_tokens=False)
        ids += part
        labels += part if learn else [-100] * len(part)
    return ids, labels
