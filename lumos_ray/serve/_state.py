"""The serve state file (``$LUMOS_HOME/serve.json``): which app runs, at which URL.

``serve.start()`` records the running app here for ``lumos serve status``/``down``.
The file is written by lumos onto disk, so it never holds a secret: gateway keys from
the serve YAML, replica ``env`` values (``HF_TOKEN`` ...) and passwords in URLs are
replaced by ``"<redacted>"`` / ``***``. What stays is the *reference* to where a secret
lives: the config file, and ``gateway.api_keys_env``, the name of the variable holding
more keys; a key given as an object keeps its tenant, role, name and hash. The file is
``0600`` in a ``0700`` directory and written atomically. Nothing reads the config back
from it (status needs only the URL), so redacting loses nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lumos_ray._files import private_dir, write_private_text
from lumos_ray.serve._config import ServeConfig

__all__ = ["REDACTED", "read_serve_state", "redacted_config", "write_serve_state"]

#: What stands in the state file for a value that is a secret.
REDACTED = "<redacted>"
_USERINFO_RE = re.compile(r"(://[^/@\s]*?:)[^@/\s]*@")


def _redact_key(entry: Any) -> Any:
    """A gateway key entry: a plain string is the key itself; an object keeps its
    tenant, role, name and hash, never its plaintext ``key``."""
    if isinstance(entry, dict):
        return {k: (REDACTED if k == "key" and v is not None else v) for k, v in entry.items()}
    return REDACTED


def _mask_urls(value: Any) -> Any:
    """Every string in ``value`` with URL passwords (``scheme://user:PASSWORD@``)
    replaced by ``***``: store URLs, object-store paths, whatever a config grows."""
    if isinstance(value, str):
        return _USERINFO_RE.sub(r"\1***@", value)
    if isinstance(value, dict):
        return {k: _mask_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_urls(v) for v in value]
    return value


def redacted_config(cfg: ServeConfig) -> dict[str, Any]:
    """``cfg`` as JSON data with no secret in it (see the module docstring)."""
    data = cfg.model_dump(mode="json")
    gateway = data["gateway"]
    gateway["api_keys"] = [_redact_key(k) for k in gateway.get("api_keys") or []]
    for model in data["models"]:
        model["env"] = {name: REDACTED for name in model.get("env") or {}}
    masked: dict[str, Any] = _mask_urls(data)
    return masked


def write_serve_state(path: str | Path, url: str, cfg: ServeConfig) -> Path:
    """Record the running app: ``{"url", "app_name", "config"}`` with the config
    redacted, as a ``0600`` file (its directory ``0700``), atomically."""
    target = Path(path).expanduser()
    private_dir(target.parent)
    record = {"url": url, "app_name": cfg.app_name, "config": redacted_config(cfg)}
    return write_private_text(target, json.dumps(record))


def read_serve_state(path: str | Path) -> dict[str, Any]:
    """What :func:`write_serve_state` wrote, or ``{}`` when there is none or it is
    unreadable (the state file is a convenience, never required)."""
    try:
        data = json.loads(Path(path).expanduser().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
