"""A bytecode cache for the worker processes of a cluster lumos starts on this machine.

Why: every Ray actor (a dedicated agent, a host, the runner) is a new Python process
that imports Ray, numpy, pydantic and lumos. With ``PYTHONDONTWRITEBYTECODE`` set (as in
many containers and CI images) nothing is ever cached, so each new worker compiles all
of that from source again: on a 2-core machine a bare actor took ~2.1 s to answer
instead of ~0.8 s (benchmarks/agent_density.py, RESULTS.md, issue 17). The embedded
cluster's and ``lumos up``'s workers therefore write and read compiled bytecode in a
folder of lumos's own (``$LUMOS_HOME/pycache`` via ``PYTHONPYCACHEPREFIX``), never
next to the sources, which is what ``PYTHONDONTWRITEBYTECODE`` usually protects.

``LUMOS_WORKER_PYCACHE``: unset: the above, only when bytecode writing is off; a path:
that folder (always); ``off``: workers get the environment exactly as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from lumos_ray._files import private_dir

__all__ = ["PYCACHE_ENV", "worker_bytecode_env"]

PYCACHE_ENV = "LUMOS_WORKER_PYCACHE"
_OFF = {"off", "0", "false", "no", "none"}


def worker_bytecode_env(home: str | Path) -> dict[str, str]:
    """Env vars for the worker processes of a cluster started here (empty: none)."""
    choice = os.environ.get(PYCACHE_ENV, "").strip()
    if choice.lower() in _OFF:
        return {}
    if not choice:
        if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
            return {}  # Python already caches bytecode (next to the sources or a prefix)
        choice = str(Path(home).expanduser() / "pycache")
    prefix = Path(choice).expanduser().resolve()
    try:
        private_dir(prefix, tighten_existing=False)
    except OSError:
        return {}  # not writable here: workers start as before, only slower
    # Python treats an empty PYTHONDONTWRITEBYTECODE as unset.
    return {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(prefix)}
