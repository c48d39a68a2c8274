"""Run one command for ``shell``/``python_exec``: bounded, and isolated when the
machine allows it.

Bounds (always): a wall-clock timeout after which the command *and every process it
started* are killed (see ``_supervisor``: setsid'ed grandchildren included), rlimits
on CPU seconds, address space, file size and core dumps, a new session, a cleared
environment, the workspace as working directory, and output read as it is produced
with a cap (the rest is drained and dropped, so a chatty command never blocks and
never fills memory). If the supervisor itself does not finish in time, its whole
process group is killed: the caller is never left waiting.

Isolation (``settings.sandbox.isolation``): ``auto`` (default) uses the strongest
mechanism that works here, probed once per process:

- ``bubblewrap``: ``bwrap`` with new user, PID, network, IPC and UTS namespaces: no
  network (only a private loopback), the host filesystem read-only, ``/tmp`` and
  ``$LUMOS_HOME`` replaced by empty tmpfs (the interpreter's own folders stay visible,
  read-only, when they live there), the workspace the only writable place.
- ``unshare``: ``unshare --net --pid --fork``: no network and a private PID space,
  but the filesystem is the host's, writable as the user.
- ``none``: bounds only; the command sees what the user sees.

``isolation: bubblewrap`` (or ``unshare``) demands that mechanism and refuses to run
without it.
"""

from __future__ import annotations

import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lumos_ray.errors import ToolNotAllowedError
from lumos_ray.tools._builtins._supervisor import SUPERVISOR_SOURCE

__all__ = ["MECHANISMS", "available_isolation", "isolation_prefix", "run_bounded"]

MECHANISMS = ("bubblewrap", "unshare", "none")
#: Seconds the supervisor gets, after the command's timeout, to kill and reap.
_CLEANUP_GRACE_S = 5.0


def _bwrap_prefix(workspace: Path) -> list[str] | None:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-all",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp"]  # fmt: skip
    hidden = [Path("/tmp")]
    home = os.environ.get("LUMOS_HOME")
    if home and Path(home).is_dir() and Path(home).resolve() != Path("/"):
        hidden.append(Path(home).resolve())
        args += ["--tmpfs", str(hidden[-1])]
    # The interpreter (a venv, a checkout) may live under a hidden folder: it stays
    # visible, read-only, or `python_exec` could not start.
    for keep in sorted({Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}):
        if any(keep == h or h in keep.parents for h in hidden):
            args += ["--ro-bind", str(keep), str(keep)]
    ws = str(workspace)
    return [*args, "--bind", ws, ws, "--chdir", ws, "--"]


def _unshare_prefix(workspace: Path) -> list[str] | None:
    exe = shutil.which("unshare")
    if exe is None:
        return None
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [exe, *user, "--net", "--pid", "--fork", "--kill-child", "--"]


def isolation_prefix(mechanism: str, workspace: Path) -> list[str] | None:
    """The argv prefix that runs a command under ``mechanism`` (None: not installed)."""
    if mechanism == "bubblewrap":
        return _bwrap_prefix(workspace)
    if mechanism == "unshare":
        return _unshare_prefix(workspace)
    return []


@functools.cache
def available_isolation() -> tuple[str, ...]:
    """The mechanisms that actually work on this machine (user namespaces may be off
    in a container even where ``bwrap`` is installed), strongest first."""
    out = []
    probe_ws = Path("/")
    for m in MECHANISMS[:-1]:
        prefix = isolation_prefix(m, probe_ws)
        if prefix is None:
            continue
        try:
            ok = subprocess.run(
                [*prefix, "/bin/true"], capture_output=True, timeout=10, check=False
            ).returncode == 0  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            out.append(m)
    return (*out, "none")


def _choose(requested: str, workspace: Path) -> tuple[str, list[str]]:
    have = available_isolation()
    if requested == "auto":
        mech = have[0]
    elif requested in have:
        mech = requested
    else:
        raise ToolNotAllowedError(
            f"settings.sandbox.isolation={requested!r} is not available on this machine "
            f"(available: {', '.join(have)}); install it (e.g. apt-get install bubblewrap) "
            "or choose another"
        )
    return mech, isolation_prefix(mech, workspace) or []


def run_bounded(
    argv: list[str],
    *,
    workspace: Path,
    timeout_s: float,
    rlimits: list[tuple[str, int]],
    max_output: int,
    stdin: str | None,
    isolation: str = "auto",
) -> dict[str, Any]:
    """Run ``argv`` in ``workspace`` under the bounds above; returns exit code, output
    (each stream capped at ``max_output`` bytes), ``timed_out``, ``truncated`` and the
    isolation mechanism used."""
    mech, prefix = _choose(isolation, workspace)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workspace),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    r_status, w_status = os.pipe()
    spec = {
        "argv": [*prefix, *argv],
        "env": env,
        "timeout": timeout_s,
        "rlimits": rlimits,
        "status_fd": w_status,
        "parent": os.getpid(),
    }
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", SUPERVISOR_SOURCE, json.dumps(spec)],
            cwd=workspace,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(w_status,),
            start_new_session=True,
        )
    finally:
        os.close(w_status)
    streams = _pump(proc, r_status, stdin, max_output, timeout_s + _CLEANUP_GRACE_S)
    status: dict[str, Any] = {}
    try:
        status = json.loads(streams["status"] or b"{}")
    except ValueError:
        pass
    return {
        "exit_code": status.get("exit_code", proc.returncode),
        "timed_out": bool(status.get("timed_out", streams["killed"])),
        "stdout": streams["stdout"].decode("utf-8", errors="replace"),
        "stderr": streams["stderr"].decode("utf-8", errors="replace"),
        "truncated": bool(streams["truncated"]),
        "isolation": mech,
    }


def _pump(
    proc: subprocess.Popen[bytes], status_fd: int, stdin: str | None, cap: int, limit_s: float
) -> dict[str, Any]:
    """Feed stdin and read stdout, stderr and the status pipe until all close or
    ``limit_s`` passes; then kill the supervisor's process group and stop reading."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    data = {"stdout": bytearray(), "stderr": bytearray(), "status": bytearray()}
    truncated = False
    pending = (stdin or "").encode()
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    sel.register(status_fd, selectors.EVENT_READ, "status")
    if pending:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE, "stdin")
    else:
        proc.stdin.close()
    deadline = time.monotonic() + limit_s
    killed = False
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                killed = True
                break
            for key, _ in sel.select(min(left, 1.0)):
                name = key.data
                if name == "stdin":
                    try:
                        n = os.write(proc.stdin.fileno(), pending[:65536])
                        pending = pending[n:]
                    except (BrokenPipeError, BlockingIOError, OSError):
                        pending = b""
                    if not pending:
                        sel.unregister(key.fileobj)
                        proc.stdin.close()
                    continue
                fd = key.fileobj if isinstance(key.fileobj, int) else key.fileobj.fileno()
                chunk = os.read(fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = data[name]
                room = cap - len(buf) if name != "status" else len(chunk)
                if len(chunk) > room:
                    truncated = True
                buf += chunk[: max(room, 0)]
    finally:
        sel.close()
        if killed or proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                f.close()
            except OSError:
                pass
        os.close(status_fd)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        "stdout": bytes(data["stdout"]),
        "stderr": bytes(data["stderr"]),
        "status": bytes(data["status"]),
        "truncated": truncated,
        "killed": killed,
    }
