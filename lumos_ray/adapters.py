"""The adapter registry: directories of named LoRA adapters that serving reads.

Fine-tuning jobs and federated rounds *publish* adapters here (``register``); the
serving gateway *resolves* a model name to an adapter here and asks vLLM to load it
without a restart. A registry is a plain directory so it works on one laptop, on a
shared filesystem, and can be synced to/from an object store::

    <root>/<name>/adapter/                     a shared adapter: copy of the peft dir
    <root>/<name>/metadata.json                AdapterRecord fields (written atomically)
    <root>/_tenants/<tenant>/<name>/...        a tenant's own adapter (same two files)

Namespaces: every tenant has its own namespace of names, and adapters registered
without a tenant (by the operator, ``lumos serve adapters add``, federated rounds) form
the shared one. Two tenants can each register ``foo`` and each gets its own; neither
can see, overwrite or remove the other's, and registering never fails because another
tenant holds the name (so an error can never tell one tenant what another has). A
tenant resolves a name in its own namespace first, then in the shared one
(:meth:`AdapterRegistry.get_for`): its own ``foo`` shadows a shared ``foo`` for it
alone. Every path a tenant drives reads only its own directory and the shared one,
never another tenant's, so neither the answer nor the work done depends on what other
tenants hold. ``_tenants`` cannot clash with a shared adapter's name (names start with
a letter or digit).

Serving ids: Serve's model multiplexing and vLLM's LoRA table need one id per adapter
that is unique across tenants. :attr:`AdapterRecord.serve_id` is the name for a shared
adapter (unchanged from before) and ``<name>~<tenant>`` for a tenant's own; ``~`` is
in neither a name nor a tenant id, so the two parts are unambiguous and no shared name
can equal a tenant's id. The gateway builds it from the caller's authenticated tenant
and a validated name, never from the request; the model replica maps it back with
:meth:`AdapterRegistry.get_by_serve_id`.

Registries from before the namespaces: shared adapters keep the old layout (nothing to
do). An adapter that a tenant published before (at ``<root>/<name>/`` with ``tenant``
in its metadata) is moved into that tenant's directory the first time a registry object
touches the root (one ``rename`` each, see :meth:`AdapterRegistry.migrate`). When the
move cannot happen (read-only mount, or the tenant already has that name in its own
namespace) the entry stays where it is and is never served as a shared adapter.

Names are bounded and validated before any path is built: 1-100 characters of letters,
digits, ``_ . -``, starting with a letter or digit, no ``..``; tenant ids as the
platform's (1-64 of letters, digits, ``. _ : @ -``). Nothing a caller sends can leave
its namespace's directory.

Versions: :meth:`AdapterRegistry.register_version` publishes ``<name>-v<N>`` with the
next free N of that namespace, claimed atomically and never over an existing entry, so
a producer that runs again (a federated run, a retrained job) cannot replace the
adapter a gateway is serving; clients move to the new version by name
(:meth:`AdapterRegistry.latest`).
"""

from __future__ import annotations

import builtins
import json
import logging
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

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
#: The platform's tenant id rule (lumos_ray.platform; the store accepts the same set).
_TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@\-]{0,63}")
_META = "metadata.json"
#: The folder of the tenants' namespaces (a name cannot start with "_").
_TENANTS = "_tenants"
#: Joins name and tenant in a serve id: a character neither may contain.
_SEP = "~"


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

    @property
    def serve_id(self) -> str:
        """The id Serve multiplexing and vLLM know it by (unique across tenants)."""
        return AdapterRegistry.serve_id_for(self.name, self.tenant)

    def visible_to(self, tenant: str) -> bool:
        """Whether ``tenant`` may see and use it (its own, or a shared one)."""
        return self.tenant is None or self.tenant == tenant


def default_adapter_root() -> Path:
    """``$LUMOS_HOME/adapters`` (LUMOS_HOME defaults to ``.lumos``)."""
    return Path(os.environ.get("LUMOS_HOME") or ".lumos").expanduser().resolve() / "adapters"


def _shown(value: Any) -> str:
    """A caller's value in an error message: bounded, control characters escaped."""
    text = repr(value) if isinstance(value, str) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise AdapterError(
            f"Invalid adapter name {_shown(name)}: 1-100 characters of letters, digits, "
            "'_', '-' and '.', starting with a letter or digit, without '..'.",
            fix="Pick a plain name such as 'sql-v1' or 'support_lora.2'.",
        )
    return name


def _check_tenant(tenant: Any) -> str | None:
    if tenant is None:
        return None
    if not isinstance(tenant, str) or not _TENANT_RE.fullmatch(tenant):
        raise AdapterError(
            f"Invalid tenant id {_shown(tenant)} for the adapter registry: 1-64 letters, "
            "digits and . _ : @ - (starting with a letter or digit).",
            fix="Use the tenant's platform id (LUMOS_TENANT / the API key's tenant).",
        )
    return tenant


def _check_source(src: Path) -> None:
    if not (src / "adapter_config.json").is_file():
        raise AdapterError(
            f"{src} is not a peft adapter directory (no adapter_config.json). "
            "Save one with `model.save_pretrained(dir)` on a peft model."
        )


class AdapterRegistry:
    """Named LoRA adapters in a directory (default ``$LUMOS_HOME/adapters``), one
    namespace per tenant plus the shared one (``tenant=None``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser().resolve() if root else default_adapter_root()
        self._migrated = False
        self._spaces: dict[str, Path] = {}  # tenant -> its directory (built once)

    # -- ids and places ---------------------------------------------------------------
    @staticmethod
    def serve_id_for(name: str, tenant: str | None) -> str:
        """The serving id of ``name`` in ``tenant``'s namespace (None: shared)."""
        _check_name(name)
        if _check_tenant(tenant) is None:
            return name
        return f"{name}{_SEP}{tenant}"

    @staticmethod
    def valid_name(name: Any) -> bool:
        """Whether ``name`` is a well-formed adapter name (registered or not)."""
        try:
            _check_name(name)
        except AdapterError:
            return False
        return True

    def _space(self, tenant: str | None) -> Path:
        """The directory of a namespace (validated before any path is built)."""
        if _check_tenant(tenant) is None:
            return self.root
        space = self._spaces.get(str(tenant))
        if space is None:  # a gateway asks for every request: build each Path once
            if len(self._spaces) >= 4096:
                self._spaces.clear()
            space = self._spaces[str(tenant)] = self.root / _TENANTS / str(tenant)
        return space

    def _entry(self, name: str, tenant: str | None) -> Path:
        return self._space(tenant) / _check_name(name)

    # -- migration of registries from before the namespaces -------------------------------
    def migrate(self) -> int:
        """Move tenant adapters of the old single-namespace layout (``<root>/<name>/``
        with a tenant in their metadata) into their tenant's directory. Runs once per
        registry object, before its first read or write; returns how many moved."""
        if self._migrated:
            return 0
        self._migrated = True
        moved = 0
        try:
            entries = builtins.list(self.root.iterdir())
        except OSError:
            return 0
        for entry in entries:
            if entry.name.startswith((".", "_")) or not self.valid_name(entry.name):
                continue
            tenant = self._legacy_tenant(entry)
            if tenant is None:
                continue
            dest = self.root / _TENANTS / tenant / entry.name
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.exists():
                    log.warning(
                        "Adapter %r of tenant %r in the old layout is not moved: the "
                        "tenant has one of that name already; remove %s.",
                        entry.name,
                        tenant,
                        entry,
                    )
                    continue
                os.rename(entry, dest)
                moved += 1
            except OSError as exc:  # another process moved it, or a read-only mount
                log.info("Adapter %s stays in the old layout: %s", entry, exc)
        return moved

    @staticmethod
    def _legacy_tenant(entry: Path) -> str | None:
        try:
            data = json.loads((entry / _META).read_bytes())
        except (OSError, ValueError):
            return None
        tenant = data.get("tenant") if isinstance(data, dict) else None
        if not isinstance(tenant, str) or not _TENANT_RE.fullmatch(tenant):
            return None
        return tenant

    # -- writes -----------------------------------------------------------------------
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
        """Copy a peft adapter dir into ``tenant``'s namespace (None: the shared one)
        and record its metadata.

        The copy is staged in a temp dir and renamed into place so a reader (the
        serving layer) never sees a half-copied adapter. ``overwrite`` replaces an
        entry of the same namespace only: nothing another tenant holds is looked at.
        """
        dest = self._entry(name, tenant)
        src = Path(adapter_dir).expanduser()
        _check_source(src)
        self.migrate()
        space = dest.parent
        space.mkdir(parents=True, exist_ok=True)
        if dest.exists() and not overwrite:
            raise AdapterError(
                f"Adapter {name!r} already exists{self._where(tenant)}; pass "
                "overwrite=True (CLI: --overwrite) or choose another name."
            )
        record = AdapterRecord(
            name=name,
            path=str(dest / "adapter"),
            base_model=base_model,
            metadata=dict(metadata or {}),
            created_at=datetime.now(UTC),
            tenant=tenant,
        )
        stage = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=space))
        try:
            shutil.copytree(src, stage / "adapter")
            (stage / _META).write_text(record.model_dump_json(indent=2) + "\n")
            if dest.exists():
                trash = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=space))
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
        """Register ``adapter_dir`` as ``<name>-v<N>`` in ``tenant``'s namespace, N one
        past the highest version of ``name`` there. Never overwrites: the entry is
        claimed with an exclusive ``mkdir`` (two producers racing get different N), then
        the staged copy replaces the empty claimed directory in one rename."""
        _check_name(name)
        space = self._space(tenant)
        src = Path(adapter_dir).expanduser()
        _check_source(src)
        self.migrate()
        space.mkdir(parents=True, exist_ok=True)
        version = self._highest_version(name, tenant) + 1
        while True:
            versioned = f"{name}-v{version}"
            dest = self._entry(versioned, tenant)
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
        stage = Path(tempfile.mkdtemp(prefix=f".{versioned}-", dir=space))
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

    def remove(self, name: str, tenant: str | None = None) -> None:
        """Delete an adapter of ``tenant``'s namespace (None: a shared one);
        :class:`AdapterError` if that namespace has no such adapter."""
        self.get(name, tenant)
        shutil.rmtree(self._entry(name, tenant))

    # -- reads of one namespace ---------------------------------------------------------
    def _highest_version(self, name: str, tenant: str | None) -> int:
        pattern = re.compile(rf"{re.escape(name)}-v(\d+)")
        space = self._space(tenant)
        if not space.is_dir():
            return 0
        found = [int(m.group(1)) for e in space.iterdir() if (m := pattern.fullmatch(e.name))]
        return max(found, default=0)

    def _read(self, name: str, tenant: str | None) -> AdapterRecord | None:
        """The record at ``name`` in one namespace, None when there is none (or, in the
        shared one, when it is an old-layout tenant entry that could not be moved)."""
        entry = self._entry(name, tenant)
        self.migrate()
        meta = entry / _META
        try:
            data = json.loads(meta.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            if not meta.is_file():
                return None
            raise AdapterError(f"Adapter {name!r} has unreadable metadata: {exc}") from None
        if not isinstance(data, dict):
            raise AdapterError(f"Adapter {name!r} has unreadable metadata (not an object).")
        if tenant is None and data.get("tenant") is not None:
            return None
        # The registry dir may have moved (synced, mounted elsewhere): trust its layout.
        data.update(name=name, path=str(entry / "adapter"), tenant=tenant)
        return AdapterRecord.model_validate(data)

    def get(self, name: str, tenant: str | None = None) -> AdapterRecord:
        """The record of ``name`` in ``tenant``'s namespace (None: the shared one);
        :class:`AdapterError` if it is not registered there."""
        record = self._read(name, tenant)
        if record is None:
            raise AdapterError(f"Unknown adapter {name!r}{self._where(tenant)}.")
        return record

    def exists(self, name: str, tenant: str | None = None) -> bool:
        """Whether ``name`` is registered in ``tenant``'s namespace (None: shared)."""
        try:
            return self._read(name, tenant) is not None
        except AdapterError:
            return False

    def list_in(self, tenant: str | None) -> builtins.list[AdapterRecord]:
        """The adapters of one namespace (None: the shared one), sorted by name."""
        space = self._space(tenant)
        self.migrate()
        if not space.is_dir():
            return []
        out = []
        for entry in sorted(space.iterdir()):
            if entry.name.startswith((".", "_")) or not self.valid_name(entry.name):
                continue
            try:
                record = self._read(entry.name, tenant)
            except AdapterError:
                continue
            if record is not None:
                out.append(record)
        return out

    def list(self) -> builtins.list[AdapterRecord]:
        """Every adapter of every namespace (the operator's view), by name then tenant."""
        out = self.list_in(None)
        tenants = self.root / _TENANTS
        if tenants.is_dir():
            for entry in sorted(tenants.iterdir()):
                if _TENANT_RE.fullmatch(entry.name):
                    out += self.list_in(entry.name)
        return sorted(out, key=lambda r: (r.name, r.tenant or ""))

    def versions(self, name: str, tenant: str | None = None) -> builtins.list[AdapterRecord]:
        """The registered versions of ``name`` (``<name>-v<N>``) in one namespace,
        oldest first."""
        _check_name(name)
        out = [
            r
            for r in self.list_in(tenant)
            if r.version_of == name and r.version is not None and r.name == f"{name}-v{r.version}"
        ]
        return sorted(out, key=lambda r: r.version or 0)

    def latest(self, name: str, tenant: str | None = None) -> AdapterRecord:
        """The newest version of ``name`` in one namespace; :class:`AdapterError` if
        it has none."""
        found = self.versions(name, tenant)
        if not found:
            raise AdapterError(f"No versions of adapter {name!r}{self._where(tenant)}.")
        return found[-1]

    def get_by_serve_id(self, serve_id: str) -> AdapterRecord:
        """The record a serving id (:attr:`AdapterRecord.serve_id`) names;
        :class:`AdapterError` if the id is malformed or names nothing registered."""
        if not isinstance(serve_id, str) or len(serve_id) > 200:
            raise AdapterError(f"Invalid adapter id {_shown(serve_id)}.")
        name, sep, tenant = serve_id.partition(_SEP)
        if sep and not tenant:
            raise AdapterError(f"Invalid adapter id {_shown(serve_id)}.")
        return self.get(name, tenant if sep else None)

    # -- what one tenant sees -------------------------------------------------------------
    def find_for(self, name: str, tenant: str) -> AdapterRecord | None:
        """``tenant``'s own ``name``, else the shared one, else None (also for a name
        that is not well-formed). Reads only those two namespaces."""
        _check_tenant(tenant)
        if not self.valid_name(name):
            return None
        return self._read(name, tenant) or self._read(name, None)

    def list_for(self, tenant: str) -> builtins.list[AdapterRecord]:
        """The adapters ``tenant`` may use: its own, and the shared ones it does not
        shadow with an own adapter of the same name; sorted by name."""
        own = self.list_in(_check_tenant(tenant))
        names = {r.name for r in own}
        shared = [r for r in self.list_in(None) if r.name not in names]
        return sorted(own + shared, key=lambda r: r.name)

    def get_for(self, name: str, tenant: str) -> AdapterRecord:
        """The record ``name`` resolves to for ``tenant`` (its own, else shared);
        otherwise NotFoundError with the same message whether another tenant has that
        name or nobody does (no existence leak: other tenants are never looked at)."""
        record = self.find_for(name, tenant)
        if record is None:
            raise NotFoundError(
                f"Unknown adapter {_shown(name)}.",
                fix="List the adapters you may use (GET /v1/adapters, or "
                "AdapterRegistry.list_for(tenant)).",
            )
        return record

    def exists_for(self, name: str, tenant: str) -> bool:
        """Whether ``name`` resolves to an adapter ``tenant`` may use."""
        try:
            return self.find_for(name, tenant) is not None
        except AdapterError:
            return False

    def _where(self, tenant: str | None) -> str:
        scope = "shared adapters" if tenant is None else f"tenant {tenant!r}'s adapters"
        return f" among the {scope} in {self.root}"
