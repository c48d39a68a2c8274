"""Plan tiers: what each plan allows, as config (pydantic, loadable from YAML).

The defaults are the product brief's tiers; ``configs/platform/plans.yaml`` is the same
data as an editable file (a test keeps them equal). ``None`` means unlimited. Storage
sizes may be written as bytes or as ``"1 GB"`` / ``"100 GB"`` / ``"1 TB"`` (decimal
units, as billing uses them).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lumos_ray.config import load_yaml_model

__all__ = ["PLANS_ENV", "Plan", "Plans", "default_plans", "load_plans"]

#: Environment variable naming a plans YAML file (else the built-in defaults).
PLANS_ENV = "LUMOS_PLANS_FILE"

_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?b)\s*$", re.IGNORECASE)
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _size(value: Any) -> Any:
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if not m:
            raise ValueError(f"{value!r} is not a size; write bytes or e.g. '1 GB', '500 MB'")
        return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    return value


class Plan(BaseModel):
    """The limits of one plan tier (``None``: unlimited)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_calls_per_month: int | None = Field(ge=0, description="Charged API calls per month.")
    concurrent_agents: int | None = Field(ge=0, description="Agents running at once.")
    storage_bytes: int | None = Field(ge=0, description="Stored data ('1 GB' or bytes).")
    tokens_per_month: int | None = Field(
        default=None, ge=0, description="Prompt + completion tokens per month."
    )
    embedding_inputs_per_month: int | None = Field(
        default=None, ge=0, description="Embedding inputs per month."
    )

    _size_ok = field_validator("storage_bytes", mode="before")(_size)


class Plans(BaseModel):
    """Every plan by name, and the plan a new tenant gets when none is named."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_plan: str = "free"
    plans: dict[str, Plan]

    @model_validator(mode="after")
    def _check(self) -> Plans:
        bad = [n for n in self.plans if not _NAME_RE.match(n)]
        if bad:
            raise ValueError(
                f"plan names {bad} must be lowercase letters, digits, - or _ (at most 32)"
            )
        if self.default_plan not in self.plans:
            raise ValueError(
                f"default_plan {self.default_plan!r} is not one of the plans "
                f"({', '.join(sorted(self.plans))})"
            )
        return self


def default_plans() -> Plans:
    """The product brief's tiers: free, standard, enterprise."""
    return Plans(
        default_plan="free",
        plans={
            "free": Plan(api_calls_per_month=10_000, concurrent_agents=3, storage_bytes=10**9),
            "standard": Plan(
                api_calls_per_month=100_000, concurrent_agents=50, storage_bytes=100 * 10**9
            ),
            "enterprise": Plan(
                api_calls_per_month=None, concurrent_agents=None, storage_bytes=10**12
            ),
        },
    )


def load_plans(path: str | Path | None = None) -> Plans:
    """Plans from ``path``, else from ``$LUMOS_PLANS_FILE``, else :func:`default_plans`.

    A bad file raises a ConfigError naming the file and the field."""
    chosen = path or os.environ.get(PLANS_ENV)
    if not chosen:
        return default_plans()
    return load_yaml_model(chosen, Plans)
