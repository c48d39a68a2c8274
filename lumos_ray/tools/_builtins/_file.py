"""File tools confined to the workspace root (``ToolContext.workspace``).

Every path is resolved (``..`` collapsed, symlinks followed) before use and refused
when it lands outside the root; directory walks never follow symlinks and skip
entries whose target lies outside. ``settings.file.read_only`` turns writes off.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import regex

from lumos_ray.errors import ToolError, ToolNotAllowedError
from lumos_ray.tools._builtins._bounds import RegexBudget
from lumos_ray.tools._builtins._safety import (
    ctx_or_default,
    resolve_in_workspace,
    workspace_relative,
)
from lumos_ray.tools._context import ToolContext
from lumos_ray.tools._tool import tool

__all__ = ["TOOLS", "list_dir", "read_file", "search_files", "write_file"]

_MAX_READ = 10_000_000
_MAX_WRITE = 10_000_000
#: Seconds all regex matching of one search_files call may take, and the characters
#: of a line that are read and matched (a one-line multi-GB file is read in pieces).
_REGEX_SECONDS = 2.0
_MAX_LINE = 10_000
#: Most entries list_dir and files search_files return, whatever a call asks for (the
#: result goes back to the model: a big tree asked for in full would be megabytes).
_MAX_LISTED = 10_000


@tool
def read_file(
    path: str,
    max_bytes: int = 1_000_000,
    encoding: str = "utf-8",
    ctx: ToolContext | None = None,
) -> dict[str, Any]:
    """Read a text file from the workspace.

    Args:
        path: File path relative to the workspace root.
        max_bytes: Read at most this many bytes (the result says if it was truncated).
        encoding: Text encoding of the file.
    """
    p = resolve_in_workspace(ctx, path)
    if not p.is_file():
        raise ToolError(f"no such file in the workspace: {path!r}")
    limit = max(0, min(max_bytes, _MAX_READ))
    size = p.stat().st_size
    with p.open("rb") as fh:
        data = fh.read(limit)
    return {
        "path": workspace_relative(ctx, p),
        "size": size,
        "content": data.decode(encoding, errors="replace"),
        "truncated": size > len(data),
    }


@tool
def write_file(
    path: str,
    content: str,
    mode: Literal["overwrite", "append", "create"] = "overwrite",
    ctx: ToolContext | None = None,
) -> dict[str, Any]:
    """Write text to a file in the workspace (parent directories are created).

    Args:
        path: File path relative to the workspace root.
        content: The text to write (UTF-8).
        mode: "overwrite" replaces the file, "append" adds to its end, "create" fails if
            the file already exists.
    """
    c = ctx_or_default(ctx)
    if c.setting("file", "read_only", False):
        raise ToolNotAllowedError("the workspace is read-only for this run (file.read_only)")
    data = content.encode("utf-8")
    if len(data) > int(c.setting("file", "max_write_bytes", _MAX_WRITE)):
        raise ToolNotAllowedError(f"content is larger than the write limit ({_MAX_WRITE} bytes)")
    p = resolve_in_workspace(ctx, path)
    if p.is_dir():
        raise ToolError(f"{path!r} is a directory")
    p.parent.mkdir(parents=True, exist_ok=True)
    flag = {"overwrite": "wb", "append": "ab", "create": "xb"}[mode]
    try:
        with p.open(flag) as fh:
            fh.write(data)
    except FileExistsError:
        raise ToolError(f"{path!r} already exists (mode='create')") from None
    return {"path": workspace_relative(ctx, p), "bytes_written": len(data), "mode": mode}


def _walk(root: Path, ws: Path, recursive: bool) -> Iterator[tuple[Path, bool]]:
    """Yield (path, is_dir) under root; never follows or yields escaping symlinks."""
    if not recursive:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
        for e in entries:
            yield from _checked(Path(e.path), ws)
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in [*dirnames, *sorted(filenames)]:
            yield from _checked(Path(dirpath) / name, ws)


def _checked(p: Path, ws: Path) -> Iterator[tuple[Path, bool]]:
    try:
        real = p.resolve()
    except (OSError, RuntimeError):
        return
    if real != ws and not real.is_relative_to(ws):
        return  # a symlink pointing out of the workspace: invisible
    yield p, real.is_dir()


@tool
def list_dir(
    path: str = ".",
    recursive: bool = False,
    max_entries: int = 500,
    ctx: ToolContext | None = None,
) -> dict[str, Any]:
    """List files and directories in a workspace directory.

    Args:
        path: Directory relative to the workspace root ("." is the root).
        recursive: Also list everything below subdirectories.
        max_entries: Stop after this many entries, at most 10,000 (the result says if it
            was truncated).
    """
    ws = ctx_or_default(ctx).workspace_root()
    d = resolve_in_workspace(ctx, path)
    if not d.is_dir():
        raise ToolError(f"no such directory in the workspace: {path!r}")
    max_entries = max(0, min(max_entries, _MAX_LISTED))
    entries: list[dict[str, Any]] = []
    truncated = False
    for p, is_dir in _walk(d, ws, recursive):
        if len(entries) >= max_entries:
            truncated = True
            break
        entry: dict[str, Any] = {
            "path": p.relative_to(ws).as_posix(),
            "type": "dir" if is_dir else "file",
        }
        if not is_dir:
            try:
                entry["size"] = p.stat().st_size
            except OSError:
                continue
        entries.append(entry)
    return {"path": workspace_relative(ctx, d), "entries": entries, "truncated": truncated}


@tool
def search_files(
    pattern: str = "*",
    contains: str | None = None,
    path: str = ".",
    ignore_case: bool = False,
    max_results: int = 100,
    ctx: ToolContext | None = None,
) -> dict[str, Any]:
    """Find workspace files by name (glob) and optionally by content (regular expression).

    Args:
        pattern: Glob on the file name, e.g. "*.py" or "report-*.csv".
        contains: Only files with a line matching this regular expression; matching
            lines are returned with their line numbers.
        path: Directory to search below, relative to the workspace root.
        ignore_case: Case-insensitive name and content matching.
        max_results: Stop after this many matching files (at most 10,000).
    """
    ws = ctx_or_default(ctx).workspace_root()
    d = resolve_in_workspace(ctx, path)
    if not d.is_dir():
        raise ToolError(f"no such directory in the workspace: {path!r}")
    rx = None
    budget = RegexBudget(_REGEX_SECONDS, "the contains pattern")
    if contains is not None:
        rx = budget.compile(contains, regex.IGNORECASE if ignore_case else 0)
    max_results = max(0, min(max_results, _MAX_LISTED))
    results: list[dict[str, Any]] = []
    truncated = False
    for p, is_dir in _walk(d, ws, recursive=True):
        if is_dir:
            continue
        name = p.name.lower() if ignore_case else p.name
        if not fnmatch.fnmatchcase(name, pattern.lower() if ignore_case else pattern):
            continue
        hit: dict[str, Any] = {"path": p.relative_to(ws).as_posix()}
        if rx is not None:
            matches = _grep(p, rx, budget)
            if not matches:
                continue
            hit["matches"] = matches
        if len(results) >= max_results:
            truncated = True
            break
        results.append(hit)
    return {"results": results, "truncated": truncated}


def _grep(p: Path, rx: Any, budget: RegexBudget, limit: int = 20) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        with p.open("r", encoding="utf-8", errors="replace") as fh:
            no = 0
            while no < 200_000 and (line := fh.readline(_MAX_LINE)):
                no += 1
                if budget.search(rx, line):
                    out.append({"line": no, "text": line.rstrip("\n")[:500]})
                    if len(out) >= limit:
                        break
    except OSError:
        return []
    return out


TOOLS = [read_file, write_file, list_dir, search_files]
