"""Process-wide settings, read once from the environment.

Every knob that decides *where* things happen (which cluster, which store, which
trace exporter) lives here so the CLI, the Python API and cluster-side actors agree.
Actors receive the driver's settings through Ray's runtime_env env vars
(see :func:`LumosSettings.to_env`), so one place decides.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lumos_ray._yaml import YamlProblem, parse_yaml
from lumos_ray.errors import ConfigError

__all__ = ["LumosSettings", "format_validation_error", "load_yaml_model"]

M = TypeVar("M", bound=BaseModel)

_ENV = {
    "address": "LUMOS_RAY_ADDRESS",
    "namespace": "LUMOS_NAMESPACE",
    "home": "LUMOS_HOME",
    "store_url": "LUMOS_STORE_URL",
    "trace_exporter": "LUMOS_TRACE_EXPORTER",
    "num_cpus": "LUMOS_NUM_CPUS",
    "tenant_id": "LUMOS_TENANT",
}


class LumosSettings(BaseModel):
    """Where the runtime runs and keeps its state."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str | None = Field(
        default=None,
        description="Ray address: None/'local' = embedded cluster, 'auto', or 'ray://host:port'.",
    )
    namespace: str = Field(default="lumos", description="Ray namespace: one per project.")
    home: str = Field(default=".lumos", description="Project state directory.")
    store_url: str | None = Field(
        default=None, description="Run store URL; default sqlite:///<home>/runs.db."
    )
    trace_exporter: str | None = Field(
        default=None, description="none | console | otlp[:URL] | jsonl:PATH | memory"
    )
    num_cpus: int | None = Field(default=None, ge=1, description="CPUs of the embedded cluster.")
    tenant_id: str = Field(default="default", description="Tenant that owns new objects.")

    @classmethod
    def from_env(cls, **overrides: Any) -> LumosSettings:
        values: dict[str, Any] = {}
        for field, var in _ENV.items():
            if os.environ.get(var):
                values[field] = os.environ[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(f"Invalid lumos settings: {format_validation_error(exc)}") from None

    @property
    def embedded(self) -> bool:
        return self.address in (None, "", "local")

    def resolved_store_url(self) -> str:
        if self.store_url:
            return self.store_url
        return f"sqlite:///{Path(self.home).expanduser().resolve() / 'runs.db'}"

    def to_env(self) -> dict[str, str]:
        """Env vars that make a cluster-side process see the same settings."""
        env = {
            "LUMOS_NAMESPACE": self.namespace,
            "LUMOS_HOME": str(Path(self.home).expanduser().resolve()),
            "LUMOS_STORE_URL": self.resolved_store_url(),
            "LUMOS_TENANT": self.tenant_id,
        }
        if self.trace_exporter:
            env["LUMOS_TRACE_EXPORTER"] = self.trace_exporter
        return env


def format_validation_error(exc: ValidationError) -> str:
    """Pydantic's errors as one readable line per problem: `field.path: message`."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def load_yaml_model(path: str | Path, model: type[M]) -> M:
    """Load a YAML file into a pydantic model; errors name the file and the field.

    The text is parsed within bounds (:mod:`lumos_ray._yaml`): an alias bomb, deep
    nesting, a recursive anchor or bytes that are not UTF-8 are a ConfigError naming
    the line, never a hang or a stray ``RecursionError``/``UnicodeDecodeError``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found")
    try:
        data, _node = parse_yaml(p.read_bytes())
    except YamlProblem as exc:
        raise ConfigError(f"{p}:{exc.line}: {exc.problem}") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the file: {exc.strerror}") from None
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{p}: {format_validation_error(exc)}") from None
