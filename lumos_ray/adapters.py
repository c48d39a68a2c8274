"""The adapter registry: one directory of named LoRA adapters that serving reads.

Fine-tuning jobs and federated rounds *publish* adapters here (``register``); the
serving gateway *resolves* a model name to an adapter here and asks vLLM to load it
without a restart. A registry is a plain directory so it works on one laptop, on a
shared filesystem, and can be synced to/from an object store::

    <root>/<name>/adapter/            copy of the peft adapter dir
    <root>/<name>/metadata.json       AdapterRecord fields (written atomically)

Tenants: an adapter registered with ``tenant=`` (what a tenant's fine-tuning job
publishes) belongs to that tenant: :meth:`AdapterRegistry.list_for`,
:meth:`~AdapterRegistry.get_for` and :meth:`~AdapterRegistry.exists_for` show it to that
tenant only, and to any other it is "unknown", exactly like a name that was never
registered (the gateway answers 404). An adapter registered without a tenant (by the
operator, ``lumos serve adapters register``, and every adapter from before) is shared:
every tenant may use it. Names are one namespace: a second tenant cannot register a
name that is taken (the error does not say by whom).

Versions: :meth:`AdapterRegistry.register_version` publishes ``<name>-v<N>`` with the
next free N, claimed atomically and never over an existing entry, so a producer that
runs again (a federated run, a retrained job) cannot replace the adapter a gateway is
serving; clients move to the new version by name (:meth:`AdapterRegistry.latest`).
"""

from __future__ import annotations

import builtins
import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lumos_ray.errors import AdapterError, NotFoundError

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
    version_of: str | None = Field(
        None, description="For ``<name>-v<N>`` entries: the name they are a version of."
    )
    version: int | None = Field(None, description="N of ``<name>-v<N>``.")
    tenant: str | None = Field(
        None, description="The tenant it belongs to; None: shared by every tenant."
    )

    def visible_to(self, tenant: str) -> bool:
        """Whether ``tenant`` may see and use it (its own, or a shared one)."""
        return self.tenant is None or self.tenant == tenant


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
        tenant: str | None = None,
    ) -> AdapterRecord:
        """Copy a peft adapter dir into the registry and record its metadata.

        The copy is staged in a temp dir and renamed into place so a reader (the
        serving layer) never sees a half-copied adapter. ``tenant``: the tenant it
        belongs to (None: shared); overwriting never moves another tenant's adapter.
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
        if dest.exists() and overwrite and tenant is not None and self.exists(name):
            if self.get(name).tenant != tenant:
                overwrite = False  # a tenant replaces only its own adapters
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
            tenant=tenant,
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

    def register_version(
        self,
        name: str,
        adapter_dir: str | Path,
        *,
        base_model: str,
        metadata: dict[str, Any] | None = None,
        tenant: str | None = None,
    ) -> AdapterRecord:
        """Register ``adapter_dir`` as ``<name>-v<N>``, N one past the highest version
        of ``name``. Never overwrites: the entry is claimed with an exclusive ``mkdir``
        (two producers racing get different N), then the staged copy replaces the empty
        claimed directory in one rename."""
        _check_name(name)
        src = Path(adapter_dir).expanduser()
        if not (src / "adapter_config.json").is_file():
            raise AdapterError(
                f"{src} is not a peft adapter directory (no adapter_config.json). "
                "Save one with `model.save_pretrained(dir)` on a peft model."
            )
        self.root.mkdir(parents=True, exist_ok=True)
        version = self._highest_version(name) + 1
        while True:
            versioned = f"{name}-v{version}"
            _check_name(versioned)
            dest = self.root / versioned
            try:
                dest.mkdir()
            except FileExistsError:
                version += 1
                continue
            break
        record = AdapterRecord(
            name=versioned,
            path=str(dest / "adapter"),
            base_model=base_model,
            metadata=dict(metadata or {}),
            created_at=datetime.now(UTC),
            version_of=name,
            version=version,
            tenant=tenant,
        )
        stage = Path(tempfile.mkdtemp(prefix=f".{versioned}-", dir=self.root))
        try:
            shutil.copytree(src, stage / "adapter")
            (stage / _META).write_text(record.model_dump_json(indent=2) + "\n")
            os.rename(stage, dest)  # dest is the empty directory claimed above
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            if dest.is_dir() and not any(dest.iterdir()):
                dest.rmdir()
            raise
        return record

    def _highest_version(self, name: str) -> int:
        pattern = re.compile(rf"^{re.escape(name)}-v(\d+)$")
        if not self.root.is_dir():
            return 0
        found = [int(m.group(1)) for e in self.root.iterdir() if (m := pattern.match(e.name))]
        return max(found, default=0)

    def versions(self, name: str) -> list[AdapterRecord]:
        """The registered versions of ``name`` (``<name>-v<N>``), oldest first."""
        _check_name(name)
        out = [
            r
            for r in self.list()
            if r.version_of == name and r.version is not None and r.name == f"{name}-v{r.version}"
        ]
        return sorted(out, key=lambda r: r.version or 0)

    def latest(self, name: str) -> AdapterRecord:
        """The newest version of ``name``; :class:`AdapterError` if it has none."""
        found = self.versions(name)
        if not found:
            raise AdapterError(f"No versions of adapter {name!r} in {self.root}.")
        return found[-1]

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

    # -- what one tenant sees ---------------------------------------------------------
    def list_for(self, tenant: str) -> builtins.list[AdapterRecord]:
        """The adapters ``tenant`` may use: its own and the shared ones, by name."""
        return [r for r in self.list() if r.visible_to(tenant)]

    def get_for(self, name: str, tenant: str) -> AdapterRecord:
        """The record of ``name`` if ``tenant`` may use it; otherwise NotFoundError with
        the same message whether the name is another tenant's or not registered at all
        (no existence leak)."""
        record = self.get(name) if self.exists(name) else None
        if record is None or not record.visible_to(tenant):
            raise NotFoundError(
                f"Unknown adapter {name!r}.",
                fix="List the adapters you may use (GET /v1/adapters, or "
                "AdapterRegistry.list_for(tenant)).",
            )
        return record

    def exists_for(self, name: str, tenant: str) -> bool:
        """Whether ``name`` is registered and ``tenant`` may use it."""
        try:
            self.get_for(name, tenant)
        except (AdapterError, NotFoundError):
            return False
        return True

    def remove(self, name: str) -> None:
        """Delete an adapter; :class:`AdapterError` if it is not registered."""
        self.get(name)
        shutil.rmtree(self.root / name)
