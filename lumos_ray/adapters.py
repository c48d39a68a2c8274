"""The adapter registry: one directory of named LoRA adapters that serving reads.

Fine-tuning jobs and federated rounds *publish* adapters here (``register``); the
serving gateway *resolves* a model name to an adapter here and asks vLLM to load it
without a restart. A registry is a plain directory so it works on one laptop, on a
shared filesystem, and can be synced to/from an object store::

    <root>/<name>/adapter/            copy of the peft adapter dir
    <root>/<name>/metadata.json       AdapterRecord fields (written atomically)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lumos_ray.errors import AdapterError

__all__ = ["AdapterRecord", "AdapterRegistry", "default_adapter_root"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_META = "metadata.json"


class AdapterRecord(BaseModel):
    """One registered adapter: where it lives and which base model it fits."""

    model_config = ConfigDict(extra="ignore")

    name: str
    path: str = Field(description="Directory holding adapter_config.json + weights.")
    base_model: str = Field(description="Base model name or path the adapter was trained on.")
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


def default_adapter_root() -> Path:
    """``$LUMOS_HOME/adapters`` (LUMOS_HOME defaults to ``.lumos``)."""
    return Path(os.environ.get("LUMOS_HOME") or ".lumos").expanduser().resolve() / "adapters"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise AdapterError(
            f"Invalid adapter name {name!r}: use letters, digits, '_', '-', '.' "
            "(max 100 chars, starting with a letter or digit)."
        )


class AdapterRegistry:
    """Named LoRA adapters in a directory (default ``$LUMOS_HOME/adapters``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser().resolve() if root else default_adapter_root()

    def register(
        self,
        name: str,
        adapter_dir: str | Path,
        *,
        base_model: str,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> AdapterRecord:
        """Copy a peft adapter dir into the registry and record its metadata.

        The copy is staged in a temp dir and renamed into place so a reader (the
        serving layer) never sees a half-copied adapter.
        """
        _check_name(name)
        src = Path(adapter_dir).expanduser()
        if not (src / "adapter_config.json").is_file():
            raise AdapterError(
                f"{src} is not a peft adapter directory (no adapter_config.json). "
                "Save one with `model.save_pretrained(dir)` on a peft model."
            )
        self.root.mkdir(parents=True, exist_ok=True)
        dest = self.root / name
        if dest.exists() and not overwrite:
            raise AdapterError(
                f"Adapter {name!r} already exists in {self.root}; pass overwrite=True "
                "(CLI: --overwrite) or choose another name."
            )
        record = AdapterRecord(
            name=name,
            path=str(dest / "adapter"),
            base_model=base_model,
            metadata=dict(metadata or {}),
            created_at=datetime.now(UTC),
        )
        stage = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.root))
        try:
            shutil.copytree(src, stage / "adapter")
            (stage / _META).write_text(record.model_dump_json(indent=2) + "\n")
            if dest.exists():
                trash = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=self.root))
                os.rename(dest, trash / name)
                os.rename(stage, dest)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.rename(stage, dest)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
        return record

    def get(self, name: str) -> AdapterRecord:
        """The record for ``name``; :class:`AdapterError` if it is not registered."""
        _check_name(name)
        meta = self.root / name / _META
        if not meta.is_file():
            raise AdapterError(f"Unknown adapter {name!r} in {self.root}.")
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError) as exc:
            raise AdapterError(f"Adapter {name!r} has unreadable metadata: {exc}") from None
        # The registry dir may have moved (synced, mounted elsewhere): trust its layout.
        data["path"] = str(self.root / name / "adapter")
        return AdapterRecord.model_validate(data)

    def exists(self, name: str) -> bool:
        try:
            _check_name(name)
        except AdapterError:
            return False
        return (self.root / name / _META).is_file()

    def list(self) -> list[AdapterRecord]:
        """All registered adapters, sorted by name."""
        if not self.root.is_dir():
            return []
        out = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not (entry / _META).is_file():
                continue
            try:
                out.append(self.get(entry.name))
            except AdapterError:
                continue
        return out

    def remove(self, name: str) -> None:
        """Delete an adapter; :class:`AdapterError` if it is not registered."""
        self.get(name)
        shutil.rmtree(self.root / name)
