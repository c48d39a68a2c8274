"""``python -m lumos_ray.models._build_main [--recipe demo|ci] [--out DIR]``: rebuild
lumos-tiny-tools from scratch (what ``make demo-model`` runs).

Starts (or joins, with LUMOS_RAY_ADDRESS) a Ray cluster, runs the teacher agents and
the fine-tuning job, and writes the model to ``--out`` (default: the committed copy in
the package, so a rebuild replaces what the demo serves).
"""

from __future__ import annotations

import argparse
import json
import sys


def _positive(text: str) -> int:
    """argparse type: an integer >= 1 (a clear usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    from lumos_ray import runtime
    from lumos_ray.models._pipeline import TOOLS_RECIPES, train_tools_model
    from lumos_ray.models._tools_model import packaged_tools_model_dir

    ap = argparse.ArgumentParser(prog="python -m lumos_ray.models._build_main")
    ap.add_argument("--recipe", default="demo", choices=sorted(TOOLS_RECIPES))
    ap.add_argument("--out", default=None, help="Output directory (default: the packaged copy).")
    ap.add_argument("--steps", type=_positive, default=None, help="Override the recipe's steps.")
    ap.add_argument("--tasks", type=_positive, default=None, help="Override the recipe's tasks.")
    ap.add_argument("--seed", type=int, default=None, help="Override the recipe's seed.")
    ap.add_argument("--work-dir", default=None, help="Keep intermediate files here.")
    args = ap.parse_args(argv)
    given = (("steps", args.steps), ("tasks", args.tasks), ("seed", args.seed))
    overrides = {k: v for k, v in given if v is not None}
    runtime.connect()
    try:
        report = train_tools_model(
            args.out or packaged_tools_model_dir(),
            args.recipe,
            work_dir=args.work_dir,
            **overrides,
        )
    finally:
        runtime.shutdown()
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
