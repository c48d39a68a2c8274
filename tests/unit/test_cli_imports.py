"""The `lumos` CLI starts without the heavy libraries: every command pays its import
time, and a `lumos rag query` against a running cluster should take about a second,
not the several seconds torch or vLLM take to import. Each check runs in a fresh
interpreter and reads ``sys.modules`` there."""

from __future__ import annotations

import json
import subprocess
import sys

#: Never imported by the CLI's own start-up (models load in the cluster's actors).
HEAVY = ("torch", "transformers", "sentence_transformers", "vllm", "ray.serve")


def _modules_after(code: str) -> list[str]:
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps([m for m in {[*HEAVY, 'ray', 'numpy']!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_cli_and_its_commands_import_no_heavy_library_and_not_ray() -> None:
    loaded = _modules_after(
        "import lumos_ray.__main__\nimport lumos_ray.cli as c\nc._load_commands()"
    )
    assert loaded == [], f"`lumos` start-up imports {loaded}"


def test_cli_help_runs_without_importing_heavy_libraries() -> None:
    loaded = _modules_after(
        "from lumos_ray.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert loaded == [], f"`lumos --help` imports {loaded}"


def test_rag_router_module_loaded_by_a_query_client_imports_no_model_library() -> None:
    # Finding the router by name makes Ray unpickle its class, i.e. import this module
    # in the client: it must stay free of numpy, the embedding stack and Ray Serve.
    loaded = _modules_after("import lumos_ray.rag._router")
    assert [m for m in loaded if m != "ray"] == [], loaded
