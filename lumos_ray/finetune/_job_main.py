"""Ray job entrypoint: ``python -m lumos_ray.finetune._job_main SPEC.json``.

Runs on the cluster as the job's driver. Errors are printed as one ``LUMOS_ERROR``
JSON line so the client can show the message and fix instead of a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m lumos_ray.finetune._job_main SPEC.json", file=sys.stderr)
        return 2
    from lumos_ray import runtime
    from lumos_ray.errors import LumosError
    from lumos_ray.finetune._jobs import ERROR_PREFIX
    from lumos_ray.finetune._runner import run_finetune
    from lumos_ray.finetune._spec import FinetuneJobSpec

    try:
        with open(args[0], encoding="utf-8") as f:
            spec = FinetuneJobSpec.model_validate(json.load(f))
        runtime.connect(address=os.environ.get("RAY_ADDRESS") or "auto")
        run_finetune(spec)
    except LumosError as err:
        print(ERROR_PREFIX + json.dumps(err.to_dict(), default=str), flush=True)
        return 1
    except Exception as exc:
        traceback.print_exc()
        err = LumosError(f"{type(exc).__name__}: {exc}")
        print(ERROR_PREFIX + json.dumps(err.to_dict(), default=str), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
