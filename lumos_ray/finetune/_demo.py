"""A small, deterministic chat dataset for demos, tests and benchmarks.

Each animal has one fixed colour, so the task is learnable by a tiny model in a few
dozen steps and a trained adapter visibly changes what the model answers.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

__all__ = ["COLORS", "write_color_dataset"]

COLORS = {
    "cat": "blue",
    "dog": "green",
    "fox": "purple",
    "owl": "orange",
    "bear": "yellow",
    "frog": "red",
}


def write_color_dataset(path: str | Path, n: int = 64, seed: int = 0) -> Path:
    """Write ``n`` chat examples ("what color is the fox?" -> "The fox is purple.")."""
    rng = random.Random(seed)
    animals = sorted(COLORS)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", encoding="utf-8") as f:
        for _ in range(n):
            a = rng.choice(animals)
            msgs = [
                {"role": "user", "content": f"what color is the {a}?"},
                {"role": "assistant", "content": f"The {a} is {COLORS[a]}."},
            ]
            f.write(json.dumps({"messages": msgs}) + "\n")
    return p
