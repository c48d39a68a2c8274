"""lumos-tiny-tools on real services, from scratch with the small CI recipe: teacher
agents act tasks out on the Ray cluster, the project's fine-tuning job (Ray Train)
teaches a random-init model, and the merged model emits well-formed calls of the right
tool where the untrained one never does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lumos_ray.models._tasks import DEMO_INSTRUCTIONS, DEMO_TOOLS, make_tasks


def _calls(model_dir: Path, n: int) -> list[tuple[Any, Any]]:
    """(expected call, parsed call or None) for n held-out prompts, greedy decoding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lumos_ray.models._tools_base import tool_specs

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    specs = tool_specs(DEMO_TOOLS)
    out = []
    for t in make_tasks(n, "heldout", seed=5):
        msgs = [
            {"role": "system", "content": DEMO_INSTRUCTIONS},
            {"role": "user", "content": t.prompt},
        ]
        enc = tok.apply_chat_template(
            msgs, tools=specs, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            gen = model.generate(enc["input_ids"], max_new_tokens=40, do_sample=False)
        text = tok.decode(gen[0, enc["input_ids"].shape[1] :], skip_special_tokens=False)
        m = re.match(r"<tool_call>(\{.*?\})</tool_call>", text)
        try:
            call = json.loads(m.group(1)) if m else None
        except ValueError:
            call = None
        out.append(({"name": t.tool, "arguments": t.arguments}, call))
    return out


def _right_tool_rate(pairs: list[tuple[Any, Any]]) -> float:
    """Well-formed call (JSON the hermes parser reads) naming the task's tool."""
    return sum(
        1 for want, got in pairs if isinstance(got, dict) and got.get("name") == want["name"]
    ) / len(pairs)


def test_retrain_from_scratch_learns_the_tool_call_format(ray_cluster: Any, tmp_path: Path) -> None:
    from lumos_ray.models._pipeline import train_tools_model

    report = train_tools_model(tmp_path / "model", "ci", work_dir=tmp_path / "work")
    assert report["eval_loss"] < report["base_eval_loss"] / 2
    untrained = _right_tool_rate(_calls(tmp_path / "work" / "base", 20))
    trained = _right_tool_rate(_calls(tmp_path / "model", 20))
    assert untrained == 0.0
    assert trained >= 0.6, f"right tool, well-formed: {trained:.0%} (untrained {untrained:.0%})"
