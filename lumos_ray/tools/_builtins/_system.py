"""System tools: clock and time zones, host facts, and sandbox-gated code execution.

``python_exec`` and ``shell`` refuse to run unless the run sets
``settings.sandbox.enabled = true``. When enabled they run through ``_sandbox``: a
supervised child process in the workspace with a cleared environment, rlimits, a
wall-clock timeout that kills every process the command started, capped output,
and, where the machine allows it, bubblewrap isolation (no network, read-only
filesystem outside the workspace). ``docs/tools.md`` says exactly what each
mechanism isolates.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lumos_ray.errors import ToolError, ToolNotAllowedError
from lumos_ray.tools._builtins._safety import ctx_or_default
from lumos_ray.tools._context import ToolContext
from lumos_ray.tools._tool import tool

__all__ = [
    "TOOLS",
    "date_diff",
    "datetime_now",
    "python_exec",
    "shell",
    "system_info",
    "timezone_convert",
]


def _zone(name: str) -> dt.tzinfo:
    if name.upper() in ("UTC", "Z", "GMT"):
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(
            f"unknown time zone {name!r}; use an IANA name such as 'Europe/Paris' or 'UTC'"
        ) from None


@tool
def datetime_now(timezone: str = "UTC") -> dict[str, Any]:
    """The current date and time in a time zone (ISO 8601, weekday, Unix timestamp).

    Args:
        timezone: IANA time zone name, e.g. "UTC", "America/New_York", "Asia/Tokyo".
    """
    now = dt.datetime.now(_zone(timezone))
    return {
        "iso": now.isoformat(),
        "date": now.date().isoformat(),
        "time": now.time().replace(microsecond=0).isoformat(),
        "weekday": now.strftime("%A"),
        "timezone": timezone,
        "utc_offset": now.strftime("%z"),
        "timestamp": now.timestamp(),
    }


@tool
def timezone_convert(time: str, to_timezone: str, from_timezone: str = "UTC") -> dict[str, Any]:
    """Convert a date-time from one time zone to another.

    Args:
        time: ISO 8601 date-time, e.g. "2026-03-01T09:30:00" (an explicit offset in the
            string wins over from_timezone).
        to_timezone: Target IANA time zone.
        from_timezone: Time zone of `time` when it carries no offset.
    """
    try:
        t = dt.datetime.fromisoformat(time.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ToolError(f"not an ISO 8601 date-time: {time!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_zone(from_timezone))
    out = t.astimezone(_zone(to_timezone))
    return {"iso": out.isoformat(), "timezone": to_timezone, "utc_offset": out.strftime("%z")}


def _parse_dt(text: str, tz: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ToolError(f"not an ISO 8601 date or date-time: {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=_zone(tz))


@tool
def date_diff(start: str, end: str, timezone: str = "UTC") -> dict[str, Any]:
    """The time between two dates or date-times (end minus start).

    Args:
        start: ISO 8601 date or date-time, e.g. "2026-01-31" or "2026-01-31T08:00".
        end: ISO 8601 date or date-time.
        timezone: Time zone for values without an offset.
    """
    a, b = _parse_dt(start, timezone), _parse_dt(end, timezone)
    secs = (b - a).total_seconds()
    return {
        "days": int(secs / 86400),  # whole days, truncated toward zero
        "total_seconds": secs,
        "total_hours": secs / 3600,
        "weekdays": _weekdays(a.date(), b.date()),
    }


def _weekdays(a: dt.date, b: dt.date) -> int:
    """Monday-Friday days in [a, b) (negative when b < a)."""
    sign = 1
    if b < a:
        a, b, sign = b, a, -1
    days = (b - a).days
    full, rest = divmod(days, 7)
    count = full * 5 + sum(1 for i in range(rest) if (a.weekday() + i) % 7 < 5)
    return sign * count


@tool
def system_info() -> dict[str, Any]:
    """Facts about the machine running the tool: OS, Python version, CPU count, load."""
    info: dict[str, Any] = {
        "os": platform.system(),
        "os_release": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "pid": os.getpid(),
    }
    if hasattr(os, "getloadavg"):
        info["load_avg"] = list(os.getloadavg())
    try:
        with open("/proc/meminfo") as fh:
            mem = dict(line.split(":", 1) for line in fh if ":" in line)
        info["memory_total_kib"] = int(mem["MemTotal"].split()[0])
        info["memory_available_kib"] = int(mem["MemAvailable"].split()[0])
    except (OSError, KeyError, ValueError):
        pass
    return info


def _require_sandbox(ctx: ToolContext | None, what: str) -> ToolContext:
    c = ctx_or_default(ctx)
    if not c.setting("sandbox", "enabled", False):
        raise ToolNotAllowedError(
            f"{what} is disabled: running arbitrary code needs an explicit sandbox setting "
            "(settings.sandbox.enabled = true) in the run or agent configuration"
        )
    return c


def _user_processes() -> int:
    """Processes of this user now (RLIMIT_NPROC counts all of them, not just ours)."""
    uid, n = os.getuid(), 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                n += os.stat(f"/proc/{d}").st_uid == uid
            except OSError:
                pass
    return n


def _run_sandboxed(argv: list[str], c: ToolContext, timeout_s: float, stdin: str | None) -> dict:
    from lumos_ray.tools._builtins._sandbox import run_bounded

    mem = int(c.setting("sandbox", "memory_bytes", 1 << 30))
    cpu = int(c.setting("sandbox", "cpu_seconds", max(1, int(timeout_s) + 1)))
    fsize = int(c.setting("sandbox", "max_file_bytes", 100 << 20))
    procs = int(c.setting("sandbox", "max_processes", 64))
    max_out = int(c.setting("sandbox", "max_output_bytes", 100_000))
    rlimits = [
        ("RLIMIT_AS", mem),
        ("RLIMIT_CPU", cpu),
        ("RLIMIT_FSIZE", fsize),
        ("RLIMIT_CORE", 0),
        # Counted over every process of the user (root is exempt): room for ``procs`` more.
        ("RLIMIT_NPROC", _user_processes() + procs),
    ]
    return run_bounded(
        argv,
        workspace=c.workspace_root(),
        timeout_s=timeout_s,
        rlimits=rlimits,
        max_output=max_out,
        stdin=stdin,
        isolation=str(c.setting("sandbox", "isolation", "auto")),
    )


@tool
def python_exec(
    code: str, timeout_s: float = 10.0, stdin: str | None = None, ctx: ToolContext | None = None
) -> dict[str, Any]:
    """Run a Python snippet in a separate, resource-limited process; returns stdout/stderr.

    Only available when the run enables the sandbox (settings.sandbox.enabled). Print
    what you want to see: the value of the last expression is not returned.

    Args:
        code: Python source to run.
        timeout_s: Kill the process after this many seconds.
        stdin: Text passed on standard input.
    """
    c = _require_sandbox(ctx, "python_exec")
    timeout_s = min(timeout_s, float(c.setting("sandbox", "max_timeout_s", 60.0)))
    return _run_sandboxed([sys.executable, "-I", "-c", code], c, timeout_s, stdin)


@tool
def shell(
    command: str, timeout_s: float = 10.0, stdin: str | None = None, ctx: ToolContext | None = None
) -> dict[str, Any]:
    """Run a shell command (/bin/sh -c) in the workspace, in a resource-limited process.

    Only available when the run enables the sandbox (settings.sandbox.enabled).

    Args:
        command: The shell command line.
        timeout_s: Kill the command (and its children) after this many seconds.
        stdin: Text passed on standard input.
    """
    c = _require_sandbox(ctx, "shell")
    timeout_s = min(timeout_s, float(c.setting("sandbox", "max_timeout_s", 60.0)))
    return _run_sandboxed(["/bin/sh", "-c", command], c, timeout_s, stdin)


TOOLS = [datetime_now, timezone_convert, date_diff, system_info, python_exec, shell]
