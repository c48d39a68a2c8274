"""Where ``lumos-tiny-tools`` lives: ``make demo-model`` writes it into the package.

Why in the package rather than trained on first use: teaching the model takes longer
than a newcomer's first ``make demo`` should (teacher runs plus a fine-tuning job on
CPU), and the weights are 3 MB, so the built copy is committed (it meets its accuracy
target through vLLM: docs/demo-model.md). ``make demo-model`` rebuilds it from scratch
with the exact recipe (:mod:`._pipeline`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lumos_ray.errors import ModelError

__all__ = ["TOOLS_MODEL_NAME", "packaged_tools_model_dir", "tools_model_build", "tools_model_path"]

TOOLS_MODEL_NAME = "lumos-tiny-tools"


def packaged_tools_model_dir() -> Path:
    """The committed model's directory (it may not exist in a trimmed install)."""
    return Path(__file__).resolve().parent / "_artifacts" / TOOLS_MODEL_NAME


def tools_model_path() -> Path:
    """The trained lumos-tiny-tools directory, ready for vLLM or transformers."""
    path = packaged_tools_model_dir()
    if not (path / "config.json").is_file() or not (path / "lumos_build.json").is_file():
        raise ModelError(
            f"{TOOLS_MODEL_NAME} is not in this install ({path} is missing or incomplete)",
            fix="Build it with `make demo-model` (teacher runs + a fine-tuning job, "
            "about 13 minutes on 2 CPU cores).",
        )
    return path


def tools_model_build() -> dict[str, Any]:
    """How the packaged model was made (recipe, training time, tokens/s, losses)."""
    data: dict[str, Any] = json.loads((tools_model_path() / "lumos_build.json").read_text())
    return data
