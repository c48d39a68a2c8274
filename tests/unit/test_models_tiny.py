"""lumos-tiny builds offline, loads through from_pretrained, and is deterministic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lumos_ray.models import TINY_MODEL_NAME, build_tiny_model, tiny_model_path


def _digests(d: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "m")


def test_build_is_deterministic(built: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again")
    assert _digests(built) == _digests(again)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(_digests(built))


def test_loads_and_generates_with_transformers(built: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cfg = AutoConfig.from_pretrained(built)
    assert cfg.model_type == "llama"
    assert cfg.hidden_size // cfg.num_attention_heads >= 32  # vLLM CPU attention needs it
    assert cfg.max_position_embeddings >= 1024
    tok = AutoTokenizer.from_pretrained(built)
    model = AutoModelForCausalLM.from_pretrained(built)
    assert len(tok) == cfg.vocab_size
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out1 = model.generate(ids, max_new_tokens=8, do_sample=False)
        out2 = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out1.shape[1] == ids.shape[1] + 8
    assert torch.equal(out1, out2)
    assert isinstance(tok.decode(out1[0, ids.shape[1] :]), str)


def test_chat_template_renders_tools_and_tool_results(built: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    text = tok.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=True
    )
    assert "<tools>" in text and '"get_weather"' in text
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in text
    assert "<tool_response>\nsunny\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n")
    # vLLM may pass content as OpenAI parts: same rendering as plain strings.
    parts = [
        {**m, "content": [{"type": "text", "text": m["content"]}]} if m["content"] else m
        for m in messages
    ]
    assert (
        tok.apply_chat_template(parts, tools=tools, tokenize=False, add_generation_prompt=True)
        == text
    )
    # The hermes tool parser needs these as single tokens.
    assert tok.convert_tokens_to_ids("<tool_call>") != tok.unk_token_id


def test_tiny_model_path_caches(tmp_path: Path, built: Path) -> None:
    p = tiny_model_path(tmp_path)
    assert p.name == TINY_MODEL_NAME and (p / "config.json").is_file()
    assert _digests(p) == _digests(built)
    mtime = (p / "model.safetensors").stat().st_mtime_ns
    assert tiny_model_path(tmp_path) == p
    assert (p / "model.safetensors").stat().st_mtime_ns == mtime  # not rebuilt
    assert not [x for x in tmp_path.iterdir() if x.name.startswith(".")]  # no temp left
