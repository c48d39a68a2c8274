"""Shared pieces of the property-based fuzz suite (``tests/unit/test_fuzz_*.py``).

Every fuzz property checks the same three things about one call on generated input:

1. it ends within a bound (:func:`within`: a hard stop, so a hang fails the example
   instead of hanging CI; hypothesis's per-example ``deadline`` is set to the same
   bound);
2. it raises nothing but the project's errors (``LumosError`` subclasses), and no error
   that is really a crash in disguise (:func:`crash_in_disguise`);
3. it touches no file outside its workspace (:class:`Territory`: the process's working
   directory, ``HOME`` and ``LUMOS_HOME`` point into watched folders, with canary files
   that generated paths aim at).

Budget: the whole suite runs in CI within 3 minutes on 2 cores (``max_examples`` per
property below); ``derandomize=True`` makes every CI run try the same examples.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, settings

from lumos_ray.errors import LumosError

__all__ = [
    "BUG_TYPES",
    "Territory",
    "crash_in_disguise",
    "fuzz_settings",
    "within",
]

#: Exception types that mean a bug when they escape (or are wrapped into a tool error):
#: code that did not expect its input, rather than input refused with a reason.
BUG_TYPES = (
    "TypeError",
    "AttributeError",
    "KeyError",
    "IndexError",
    "RecursionError",
    "UnboundLocalError",
    "NameError",
    "AssertionError",
    "MemoryError",
    "SystemError",
    "UnicodeEncodeError",
)


def load_scaled(bound_s: float) -> float:
    """``bound_s`` stretched by how oversubscribed the CPUs are right now (1-minute load
    average per core, at least 1): the bounds tell a hang from a slow call, and on a
    shared CI box with a load of 20 on 2 cores a 2 s parse can take 20 s of wall time."""
    try:
        per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        per_core = 1.0
    return bound_s * min(max(1.0, per_core), 10.0)


def fuzz_settings(max_examples: int, bound_s: float) -> settings:
    """Hypothesis settings for one fuzz property: reproducible (``derandomize``, no
    example database), a per-example deadline of ``bound_s``, and the health checks
    that only object to slow generation or to fixtures reused across examples (the
    workspace is meant to be shared by a property's examples).

    CI budget: no shrinking by default (a failure is reported as found, with the blob
    that reproduces it; shrinking a slow failure can take minutes). Locally,
    ``LUMOS_FUZZ_SHRINK=1`` shrinks failures and ``LUMOS_FUZZ_SCALE=10`` tries ten times
    as many examples."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
    if os.environ.get("LUMOS_FUZZ_SHRINK") == "1":
        phases.append(Phase.shrink)
    scale = float(os.environ.get("LUMOS_FUZZ_SCALE") or 1)
    return settings(
        max_examples=max(1, int(max_examples * scale)),
        phases=phases,
        derandomize=True,
        database=None,
        deadline=timedelta(seconds=load_scaled(bound_s)),
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
        print_blob=True,
    )


class _Timeout(Exception):
    pass


def within(bound_s: float, fn: Callable[[], Any]) -> Any:
    """``fn()``'s result (or its exception), or an AssertionError when it is still
    running after ``bound_s``: the call ran past its bound. It runs in a daemon thread,
    so a call that never ends fails this example instead of hanging the suite (it keeps
    its thread; pytest-timeout is the last resort)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the caller below
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True, name="fuzz-call")
    t.start()
    limit = load_scaled(bound_s)
    t.join(limit)
    if t.is_alive():
        raise AssertionError(f"the call did not end within its bound of {limit:.3g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def crash_in_disguise(exc: BaseException) -> str | None:
    """Why ``exc`` is a crash rather than a clear refusal, or None when it is fine.

    Fine: a ``LumosError`` whose message does not merely wrap a Python bug type (tools
    wrap whatever they raise as ``Tool 'x' failed: TypeError: ...``). Anything else
    escaping is a crash."""
    if not isinstance(exc, LumosError):
        return f"unexpected exception type {type(exc).__name__}: {exc}"
    msg = exc.message
    for bug in BUG_TYPES:
        if f": {bug}:" in msg or msg.startswith(f"{bug}:") or f"failed: {bug}" in msg:
            return f"{type(exc).__name__} wraps a {bug}: {msg[:300]}"
    return None


def _tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of what it is (content, link target)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if d != ".hypothesis"]  # hypothesis's own cache
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


class Territory:
    """A workspace, and watched folders around it that nothing may change.

    ``outside`` is the working directory and holds canaries (``canary.txt``, a SQLite
    file, a sub-folder); ``home`` is ``HOME``; ``lumos_home`` is ``LUMOS_HOME``. The
    workspace holds a few ordinary files and ``escape``, a symlink to ``outside``, so a
    tool that follows links out of the workspace is caught."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workspace = root / "workspace"
        self.outside = root / "outside"
        self.home = root / "home"
        self.lumos_home = root / "lumos-home"
        for d in (self.workspace, self.outside / "sub", self.home, self.lumos_home):
            d.mkdir(parents=True, exist_ok=True)
        (self.outside / "canary.txt").write_text("canary: must never change\n")
        (self.outside / "sub" / "secret.txt").write_text("not for tools\n")
        (self.outside / "data.db").write_bytes(b"")
        (self.workspace / "notes.txt").write_text("alpha\nbeta\ngamma\n")
        (self.workspace / "table.csv").write_text("a,b\n1,2\n3,4\n")
        (self.workspace / "doc.json").write_text('{"items": [{"name": "pen", "price": 3}]}')
        (self.workspace / "escape").symlink_to(self.outside, target_is_directory=True)
        self._before = self.snapshot()

    def watched(self) -> list[Path]:
        return [self.outside, self.home, self.lumos_home]

    def snapshot(self) -> dict[str, dict[str, str]]:
        return {str(d): _tree(d) for d in self.watched()}

    def changes(self) -> list[str]:
        """Paths created, changed or removed in the watched folders since the start."""
        now = self.snapshot()
        out = []
        for d, before in self._before.items():
            after = now[d]
            for rel in sorted(set(before) | set(after)):
                if before.get(rel) != after.get(rel):
                    out.append(f"{d}/{rel}")
        return out

    def paths(self) -> list[str]:
        """Path arguments worth trying: inside, escaping, absolute, odd."""
        return [
            "notes.txt",
            "table.csv",
            "doc.json",
            "new.txt",
            "sub/dir/new.txt",
            ".",
            "",
            "..",
            "../outside/canary.txt",
            "../outside/new.txt",
            "../../etc/passwd",
            "escape/canary.txt",
            "escape/new.txt",
            "escape/sub",
            "escape",
            str(self.outside / "canary.txt"),
            str(self.outside / "data.db"),
            str(self.outside),
            str(self.workspace / "notes.txt"),
            "/etc/passwd",
            "/",
            "~/x.txt",
            "~",
            "notes.txt\x00.png",
            "a" * 300,
            "./././notes.txt",
            "sub/../../outside/canary.txt",
        ]


def env_for(territory: Territory) -> Iterator[None]:
    """Point the working directory, HOME and LUMOS_HOME into the watched folders."""
    old_cwd = os.getcwd()
    old = {k: os.environ.get(k) for k in ("HOME", "LUMOS_HOME")}
    os.chdir(territory.outside)
    os.environ["HOME"] = str(territory.home)
    os.environ["LUMOS_HOME"] = str(territory.lumos_home)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
